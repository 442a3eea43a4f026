// Every action that changes a pipeline goes through one confirmation dialog that says, in words, what will
// happen before the user confirms: a rollback in particular rewrites state and sinks.
import { api, P } from "./api.js";
import { $, h, toast } from "./dom.js";
import { enc, fmtNum } from "./format.js";
import { rerender } from "./lifecycle.js";
import { loadMe } from "./session.js";

// `describe()` returns the text of what will happen (or {element, ready}); it runs again as the fields change,
// and Confirm stays disabled until it says ready. `confirm()` acts and returns the message to toast. Returns the
// refresh function, for fields whose changes fire no "input" event.
function openDialog({ title, fields = [], describe, confirmLabel = "Confirm", danger = false, confirm }) {
  const dialog = $("#confirm-dialog");
  const what = $("#dialog-what");
  const error = $("#dialog-error");
  const ok = $("#dialog-confirm");
  $("#dialog-title").textContent = title;
  $("#dialog-body").replaceChildren(...fields);
  error.hidden = true;
  ok.textContent = confirmLabel;
  ok.className = danger ? "danger" : "primary";
  let ready = false;
  // Only the latest description is shown: an older preview answering late (a target changed meanwhile) is dropped.
  let seq = 0;
  const refresh = async () => {
    const mine = ++seq;
    ready = false;
    ok.disabled = true;
    try {
      const node = await describe();
      if (mine !== seq) return;
      what.replaceChildren(node.element || node);
      ready = node.ready !== false;
      error.hidden = true;
    } catch (err) {
      if (mine !== seq) return;
      what.replaceChildren();
      error.textContent = err.message;
      error.hidden = false;
    }
    ok.disabled = !ready;
  };
  // One debounce for every field: a change to one field and then another asks for one preview, not two.
  const later = debounced(refresh);
  for (const f of fields) f.addEventListener("input", later);
  // Assigned rather than added: the dialog element is shared, and the previous dialog's handlers must go.
  $("#dialog-cancel").onclick = () => dialog.close();
  $("#dialog-form").onsubmit = async (e) => {
    e.preventDefault();
    if (!ready) return;
    ok.disabled = true;
    try {
      const message = await confirm();
      dialog.close();
      toast(message);
      rerender();
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
      ok.disabled = false;
    }
  };
  dialog.showModal();
  refresh();
  return refresh;
}

// The previews call the API: not on every keystroke.
function debounced(fn, ms = 250) {
  let t = null;
  return () => { clearTimeout(t); t = setTimeout(fn, ms); };
}
const field = (label, input) => h("label", {}, h("span", {}, label), input);
const pendingNote = (res) => (res.pending ? ` The pipeline has not answered yet (request ${res.pending}); it will apply it at its next epoch boundary.` : "");

export function dialogSavepoint(name) {
  const sp = h("input", { type: "text", id: "f-name", placeholder: "before_deploy", required: true });
  const epoch = h("input", { type: "number", id: "f-epoch", min: 1, placeholder: "latest" });
  const reason = h("input", { type: "text", id: "f-reason", placeholder: "why (recorded in the manifest)" });
  openDialog({
    title: "Create a savepoint",
    fields: [field("Name", sp), field("Epoch (empty: the latest checkpoint; a running pipeline checkpoints first)", epoch), field("Reason", reason)],
    describe: async () => ({
      ready: /^[A-Za-z0-9_.-]+$/.test(sp.value),
      element: h("p", {}, sp.value ? `Names ${epoch.value ? `epoch ${epoch.value}` : "the latest checkpoint"} of ${name} "${sp.value}". `
        + "Its state, offsets and sinks stay readable and restorable until the savepoint is deleted; the audit records your token's name."
        : "Give the savepoint a name (letters, digits, _ . -)."),
    }),
    confirmLabel: "Create savepoint",
    confirm: async () => {
      const res = await api(`${P(name)}/savepoints`, { method: "POST",
        body: { name: sp.value, epoch: epoch.value ? Number(epoch.value) : null, reason: reason.value || null } });
      return `Savepoint ${res.savepoint || sp.value} at epoch ${res.epoch ?? "?"}.${pendingNote(res)}`;
    },
  });
}

export function dialogDeleteSavepoint(name, savepoint) {
  const reason = h("input", { type: "text", id: "f-reason", placeholder: "why (recorded in the manifest)" });
  openDialog({
    title: `Delete savepoint ${savepoint}`, fields: [field("Reason", reason)], danger: true, confirmLabel: "Delete savepoint",
    describe: async () => h("p", {}, `Removes the name "${savepoint}". The epoch it named is then kept only as long as the retention policy keeps it; `
      + "the deletion is recorded in the manifest."),
    confirm: async () => {
      await api(`${P(name)}/savepoints/${enc(savepoint)}?reason=${enc(reason.value)}`, { method: "DELETE" });
      return `Savepoint ${savepoint} deleted.`;
    },
  });
}

export function dialogCheckpoint(name) {
  openDialog({
    title: "Request a checkpoint",
    describe: async () => {
      // Consecutive checkpoint rows one epoch apart: this pipeline checkpoints every epoch already.
      const series = await api(`${P(name)}/series?limit=5`).catch(() => []);
      const epochs = series.map((r) => r.epoch);
      const everyEpoch = epochs.length >= 2 && epochs.every((e, i) => i === 0 || e === epochs[i - 1] + 1);
      return h("div", {}, h("p", {}, `Asks ${name} to commit its operator state and a manifest row at its next epoch boundary `
        + "(if it is stopped, at the first epoch of its next run). Sinks and offsets are not changed."),
      everyEpoch ? h("p", { class: "muted", id: "checkpoint-every-epoch" },
        "Every epoch is already a checkpoint here: a running pipeline's next epoch will be one anyway.") : null);
    },
    confirmLabel: "Request checkpoint",
    confirm: async () => {
      const res = await api(`${P(name)}/checkpoints`, { method: "POST" });
      return res.running ? "Checkpoint requested: the running pipeline takes it at its next epoch boundary."
        : "Checkpoint requested: the pipeline is stopped; its next run takes it.";
    },
  });
}

// The preview comes from the API (what is restored, emptied, compensated, repeated), so the dialog shows what
// the engine will do rather than what the page guesses. Output that cannot be taken back needs "force".
// The target is chosen from what exists: a retained epoch (a number between the first and last retained), a
// live savepoint (a list), or a time. Switching the kind of target clears the value.
export async function dialogRollback(name) {
  let checkpoints;
  let savepoints;
  try {
    [checkpoints, savepoints] = await Promise.all([api(`${P(name)}/checkpoints`), api(`${P(name)}/savepoints`)]);
  } catch (err) {
    if (err.status !== 401) toast(err.message, true);
    return;
  }
  const retained = [...new Set(checkpoints.filter((c) => c.kind === "epoch" && c.readable !== false).map((c) => c.epoch))].sort((a, b) => a - b);
  const [lo, hi] = [retained[0], retained[retained.length - 1]];
  const kind = h("select", { id: "f-target-kind" }, [["epoch", "an epoch"], ["savepoint", "a savepoint"], ["timestamp", "a time (ISO, UTC)"]]
    .map(([v, l]) => h("option", { value: v }, l)));
  const epochList = h("datalist", { id: "f-epochs" }, retained.map((e) => h("option", { value: e })));
  const controls = {
    epoch: h("input", { type: "number", min: lo ?? 0, max: hi ?? undefined, step: 1, list: "f-epochs",
      placeholder: retained.length ? `${lo}–${hi}` : "no retained epoch", inputmode: "numeric" }),
    savepoint: h("select", {}, savepoints.length
      ? [h("option", { value: "" }, "choose a savepoint…"), ...savepoints.map((sp) => h("option", { value: sp.name }, `${sp.name} (epoch ${sp.epoch})`))]
      : [h("option", { value: "" }, "no savepoint")]),
    timestamp: h("input", { type: "text", placeholder: "2026-01-31T10:00:00", autocomplete: "off" }),
  };
  const hints = {
    epoch: !retained.length ? "No retained epoch."
      : retained.length === hi - lo + 1 ? `Retained epochs: ${lo} to ${hi}.`
        : `Retained epochs: ${retained.length} between ${lo} and ${hi} (the list offers them).`,
    savepoint: savepoints.length ? "The live savepoints." : "This pipeline has no savepoint.",
    timestamp: "The last checkpoint committed at or before this time (UTC).",
  };
  const valueBox = h("span");
  const hint = h("p", { class: "hint", id: "f-target-hint" });
  const show = () => {
    for (const [k, c] of Object.entries(controls)) c.id = k === kind.value ? "f-target" : `f-target-${k}`;
    valueBox.replaceChildren(controls[kind.value]);
    hint.textContent = hints[kind.value];
  };
  show();
  const reason = h("input", { type: "text", id: "f-reason", placeholder: "why (recorded in the manifest)", required: true });
  const force = h("input", { type: "checkbox", id: "f-force" });
  const forceLabel = h("label", { class: "inline", hidden: true, id: "f-force-label" }, force, h("span", {}, "force: accept the repeated output"));
  // The value to send, or null while there is none (an epoch is sent only as a whole number).
  const value = () => {
    const v = controls[kind.value].value.trim();
    if (!v) return null;
    if (kind.value === "epoch") return /^\d+$/.test(v) ? Number(v) : NaN;
    return v;
  };
  let preview = null;
  const refresh = openDialog({
    title: `Roll back ${name}`, danger: true, confirmLabel: "Roll back",
    fields: [field("Target", kind), h("label", {}, h("span", {}, "Value"), valueBox, hint, epochList), field("Reason", reason), forceLabel],
    describe: async () => {
      const v = value();
      if (v === null) {
        forceLabel.hidden = true;
        return { ready: false, element: h("p", { class: "muted" }, "Choose the target: the preview shows what will happen.") };
      }
      if (Number.isNaN(v)) return { ready: false, element: h("p", { class: "warn" }, "An epoch is a whole number.") };
      const shown = await api(`${P(name)}/rollback/preview?${kind.value}=${enc(String(v))}`);
      preview = shown;
      const repeated = Object.entries(shown.repeated_output || {});
      const needsForce = repeated.length > 0 || Boolean(shown.refused);
      forceLabel.hidden = !needsForce;
      const list = (items) => (items.length ? h("ul", {}, items.map((t) => h("li", { class: "mono" }, t))) : h("span", { class: "muted" }, " none"));
      const element = h("div", { id: "rollback-preview" },
        h("p", {}, h("strong", {}, `From epoch ${shown.from_epoch} back to epoch ${shown.to_epoch}. `),
          "State, source offsets and sinks return to that cut together; the next epochs are processed again (epoch numbers keep increasing)."),
        h("div", {}, "Tables restored:", list(shown.restored || [])),
        h("div", {}, "Tables emptied (created after the target):", list(shown.emptied || [])),
        (shown.compensated || []).length ? h("div", {}, "Sinks compensated (undo records written):", list(shown.compensated)) : null,
        repeated.length ? h("div", { class: "warn" }, "Sinks that cannot be rolled back will receive their output again:",
          list(repeated.map(([sink, rows]) => `${sink}: ${fmtNum(rows)} rows`))) : null,
        shown.refused ? h("p", { class: "warn", id: "rollback-refused" }, shown.refused, needsForce ? " Tick force to go ahead." : "") : null);
      return { element, ready: Boolean(reason.value.trim()) && (!needsForce || force.checked) };
    },
    confirm: async () => {
      const v = value();
      if (v === null || Number.isNaN(v)) throw new Error("Choose the target first.");
      const res = await api(`${P(name)}/rollback`, { method: "POST", body: { [kind.value]: v, reason: reason.value, force: force.checked } });
      return `Rolled back to epoch ${res.to_epoch ?? (preview && preview.to_epoch)}.${pendingNote(res)}`;
    },
  });
  force.addEventListener("change", refresh);
  kind.addEventListener("change", () => {
    for (const c of Object.values(controls)) c.value = "";
    force.checked = false;
    forceLabel.hidden = true;
    preview = null;
    show();
    refresh();
  });
}

export function dialogBranch(name, savepoint = "") {
  const folder = h("input", { type: "text", id: "f-name", placeholder: "whatif", required: true });
  const from = h("input", { type: "text", id: "f-target", value: savepoint, placeholder: "savepoint name or epoch number" });
  openDialog({
    title: `Branch ${name}`,
    fields: [field("New folder (created beside this pipeline's directory)", folder), field("From savepoint or epoch", from)],
    describe: async () => ({
      ready: /^[A-Za-z0-9_.-]+$/.test(folder.value) && !folder.value.startsWith(".") && Boolean(from.value.trim()),
      element: h("p", {}, "Copies the cut of ", h("strong", {}, /^\d+$/.test(from.value.trim()) ? `epoch ${from.value}` : `savepoint "${from.value || "?"}"`),
        ` (state, offsets, sinks) into a new directory "${folder.value || "?"}" beside ${name}'s; ${name} is only read. `
        + "The console serves the branch too; run it with `timelapse run ... --state` on that folder."),
    }),
    confirmLabel: "Create branch",
    confirm: async () => {
      const v = from.value.trim();
      const res = await api(`${P(name)}/branches`, { method: "POST",
        body: /^\d+$/.test(v) ? { name: folder.value, epoch: Number(v) } : { name: folder.value, savepoint: v } });
      await loadMe();   // the new branch is a pipeline this token now has a role on
      return `Branch ${res.pipeline || folder.value} created.`;
    },
  });
}
