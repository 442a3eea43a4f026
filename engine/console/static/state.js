// Operator state at any retained epoch: the plan graph to pick the operator, a slider over the epochs, and tabs
// for the state itself, the diff between two epochs, late rows and dead letters.
import { api, P } from "./api.js";
import { h } from "./dom.js";
import { enc, fmtNum } from "./format.js";
import { drawPlan } from "./graphs.js";
import { crumbs } from "./lifecycle.js";
import { PAGE, pagedTable } from "./tables.js";

// Links from the tree and the savepoints table open the page at an epoch with `?at=` after the route.
function hashParam(key) {
  const q = (location.hash.split("?")[1] || "");
  return new URLSearchParams(q).get(key);
}

export async function pageState(app, name, op) {
  crumbs(name, "state");
  // A pipeline whose plan graph is missing (directories from before the engine recorded it) still has state.
  const [plan, checkpoints] = await Promise.all([
    api(`${P(name)}/plan`).catch((err) => ({ error: err.message, nodes: [] })),
    api(`${P(name)}/checkpoints`),
  ]);
  const stateful = plan.nodes.filter((n) => n.stateful);
  if (!op) {
    const info = plan.nodes.length ? null : await api(P(name));
    const first = (info && info.operators && info.operators[0]) || {};
    op = stateful.length ? stateful[0].state_id : first.state_id || first.operator || null;
  }
  const epochs = checkpoints.filter((c) => c.kind === "epoch" && c.readable !== false).map((c) => c.epoch);
  const graph = plan.nodes.length ? drawPlan(name, plan, op)
    : h("p", { class: "muted", id: "plan-missing" }, `No plan graph: ${plan.error || "empty plan"}`);
  app.replaceChildren(h("h1", {}, "Operator state"), graph);
  if (!op) return app.append(h("p", { class: "muted" }, "This pipeline keeps no state."));
  if (!epochs.length) return app.append(h("p", { class: "muted" }, "No retained epoch yet."));
  const wanted = Number(hashParam("at"));
  let index = epochs.includes(wanted) ? epochs.indexOf(wanted) : epochs.length - 1;
  const body = h("div", { id: "state-body" });
  const tabs = ["state", "diff", "late", "dead letters"];
  let tab = "state";
  const tabBar = h("div", { class: "tabs" });
  const renderTabs = () => tabBar.replaceChildren(...tabs.map((t) => h("button", { type: "button", role: "tab", class: t === tab ? "on" : "",
    id: `tab-${t.replace(" ", "-")}`, onclick: () => { tab = t; renderTabs(); show(); } }, t)));
  const slider = h("input", { type: "range", id: "epoch-slider", min: 0, max: epochs.length - 1, step: 1, value: index,
    "aria-label": "epoch" });
  const out = h("output", { id: "epoch-label" });
  const setLabel = () => { out.textContent = `epoch ${epochs[index]}`; slider.dataset.epoch = epochs[index]; };
  setLabel();
  // The label follows the slider at once; the table waits until the slider rests.
  let debounce = null;
  slider.addEventListener("input", () => {
    index = Number(slider.value);
    setLabel();
    clearTimeout(debounce);
    debounce = setTimeout(show, 120);
  });
  // The chosen epoch once, in words; the slider's ends are bare numbers (the first and last retained epoch).
  app.append(h("h2", {}, `Operator ${op}`),
    h("div", { class: "slider" }, out, h("span", { class: "muted", title: "the first retained epoch" }, epochs[0]), slider,
      h("span", { class: "muted", title: "the last retained epoch" }, epochs[epochs.length - 1])),
    tabBar, body);
  renderTabs();
  const show = () => {
    const at = epochs[index];
    if (tab === "state") pagedTable(body, "state", (q, offset) =>
      `${P(name)}/operators/${enc(op)}/state?at=${at}&q=${enc(q)}&offset=${offset}&limit=${PAGE}`, { epoch: at });
    else if (tab === "late") pagedTable(body, "late", (q, offset) =>
      `${P(name)}/operators/${enc(op)}/late?at=${at}&q=${enc(q)}&offset=${offset}&limit=${PAGE}`, { epoch: at });
    else if (tab === "diff") diffView(body, name, op, epochs, at);
    else deadLetters(body, name, at);
  };
  show();
}

// Defaults to the slider's epoch against the one before it: "what did the last epoch change".
function diffView(box, name, op, epochs, at) {
  const pick = (id, value) => h("select", { id }, epochs.map((e) => h("option", { value: e, selected: e === value }, `epoch ${e}`)));
  const a = pick("diff-a", epochs[Math.max(0, epochs.indexOf(at) - 1)]);
  const b = pick("diff-b", at);
  const result = h("div", { id: "diff-body" });
  const run = () => pagedTable(result, "diff", (q, offset) =>
    `${P(name)}/operators/${enc(op)}/diff?a=${a.value}&b=${b.value}&offset=${offset}&limit=${PAGE}`, { a: a.value, b: b.value }, false);
  a.addEventListener("change", run);
  b.addEventListener("change", run);
  box.replaceChildren(h("div", { class: "row" }, h("label", { class: "inline" }, h("span", {}, "from"), a),
    h("label", { class: "inline" }, h("span", {}, "to"), b)), result);
  run();
}

async function deadLetters(box, name, at) {
  let sources;
  try {
    sources = await api(`${P(name)}/dead-letters`);
  } catch (err) {
    return box.replaceChildren(h("p", { class: "error", id: "dl-error" }, err.message));
  }
  if (!sources.length) return box.replaceChildren(h("p", { class: "muted", id: "dl-none" }, "No source has dead letters."));
  const select = h("select", { id: "dl-source" }, sources.map((s) => h("option", { value: s.source }, `${s.source} (${fmtNum(s.rows)})`)));
  const result = h("div");
  const run = () => pagedTable(result, "dl", (q, offset) =>
    `${P(name)}/dead-letters/${enc(select.value)}?at=${at}&offset=${offset}&limit=${PAGE}`, { epoch: at }, false);
  select.addEventListener("change", run);
  box.replaceChildren(h("label", { class: "inline" }, h("span", {}, "source"), select), result);
  run();
}
