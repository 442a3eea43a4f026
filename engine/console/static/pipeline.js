// One pipeline: its header and actions, live charts from its recent epochs, its savepoints and operators.
import { api, P } from "./api.js";
import { lineChart } from "./charts.js";
import { dialogBranch, dialogCheckpoint, dialogDeleteSavepoint, dialogRollback, dialogSavepoint } from "./dialogs.js";
import { h } from "./dom.js";
import { enc, fmtInt, fmtLag, fmtTime, folderName, plainText, short, timeUnit } from "./format.js";
import { crumbs, poll } from "./lifecycle.js";
import { statusBadge } from "./pipelines.js";
import { actionButton } from "./session.js";

// Each chart picks its lines out of one row of /series (one row per epoch). A duration chart names the unit its
// values come in (`seconds` per unit): the page shows them in the unit that suits the largest (ms, s, min, h, d).
const CHARTS = [
  ["Rows per second", (r) => ({ in: r.rows_in_per_s, out: r.rows_out_per_s })],
  ["Epoch and checkpoint time", (r) => ({ epoch: r.epoch_ms, checkpoint: r.checkpoint_ms }), 0.001],
  ["Watermark lag", (r) => ({ lag: r.watermark_lag_s }), 1],
  ["State rows per operator", (r) => r.state_rows || {}],
  ["State bytes per operator", (r) => r.state_bytes || {}],
  ["Late rows", (r) => ({ late: r.late_rows })],
  ["Dead letters", (r) => ({ "dead letters": r.dead_letters })],
];

// Lines from the series, with a duration chart's values in the unit chosen for them.
function chartLines(series, pick, seconds) {
  const lines = {};
  for (const row of series) {
    for (const [k, v] of Object.entries(pick(row))) {
      if (v === null || v === undefined) continue;
      (lines[k] = lines[k] || []).push([row.epoch, v]);
    }
  }
  if (!seconds) return { lines, unit: "" };
  const top = Math.max(0, ...Object.values(lines).flat().map((p) => Math.abs(p[1]) * seconds));
  const [unit, per] = timeUnit(top);
  for (const points of Object.values(lines)) for (const p of points) p[1] = (p[1] * seconds) / per;
  return { lines, unit };
}

export async function pagePipeline(app, name) {
  crumbs(name, "");
  const info = await api(P(name));
  const header = h("div", { class: "spread" });
  const savepoints = h("div");
  const charts = h("div", { class: "grid", id: "charts" });
  app.replaceChildren(header, h("h2", {}, "Live"), charts, h("h2", {}, "Savepoints"), savepoints,
    h("h2", {}, "Operators"), operatorsTable(name, info.operators || []));
  // A branch says where it came from; the epoch and savepoint are in its version tree's first node.
  const origin = info.branch_of ? branchOrigin(name, info.branch_of) : null;
  const renderHeader = (p) => header.replaceChildren(
    h("div", {}, h("h1", {}, name, " ", statusBadge(p)),
      origin,
      h("div", { class: "muted mono" }, p.path),
      h("div", { class: "muted" }, `last epoch ${fmtInt(p.last_epoch)} · committed ${fmtTime(p.committed_at)} · watermark `
        + `${fmtTime(p.watermark)} (lag ${fmtLag(p.watermark_lag_s)})`)),
    actionBar(name));
  renderHeader(info);
  renderSavepoints(savepoints, name, info.savepoints || []);
  const boxes = CHARTS.map(([title]) => h("div", { class: "card chart", dataset: { chart: title } }, h("h3", {}, title)));
  charts.replaceChildren(...boxes);
  const empty = info.branch_of ? "no checkpoint of its own yet" : "no data yet";
  // The first tick reuses the info fetched to draw the page instead of asking for it twice.
  let first = true;
  poll(async () => {
    const [series, p] = await Promise.all([api(`${P(name)}/series?limit=200`), first ? info : api(P(name))]);
    if (!first) {
      renderHeader(p);
      renderSavepoints(savepoints, name, p.savepoints || []);
    }
    first = false;
    CHARTS.forEach(([title, pick, seconds], i) => {
      const { lines, unit } = chartLines(series, pick, seconds);
      boxes[i].dataset.unit = unit;
      boxes[i].replaceChildren(h("h3", {}, unit ? `${title} (${unit})` : title), lineChart(lines, { unit, empty }));
    });
  });
}

// "branched from <parent> at epoch N (savepoint S)": `branch_of` is the parent's path (or an object with it);
// the version tree's branched_from node has the epoch, the savepoint and the parent's name on this console.
function branchOrigin(name, branchOf) {
  const known = typeof branchOf === "object" && branchOf !== null ? branchOf : { parent: branchOf };
  const line = h("div", { id: "branch-of" });
  const fill = (o) => {
    const parent = o.parent || o.path || "";
    line.replaceChildren("branched from ",
      o.pipeline ? h("a", { href: `#/p/${enc(o.pipeline)}`, title: parent }, o.pipeline) : h("span", { class: "mono", title: parent }, folderName(parent)),
      o.epoch !== null && o.epoch !== undefined ? ` at epoch ${o.epoch}` : "",
      o.savepoint ? ` (savepoint ${o.savepoint})` : "");
  };
  fill(known);
  api(`${P(name)}/tree`).then((tree) => {
    const node = (tree.nodes || []).find((n) => n.kind === "branched_from");
    if (node) fill({ ...known, ...Object.fromEntries(Object.entries(node).filter(([, v]) => v !== null && v !== undefined)) });
  }).catch(() => { /* the line without its epoch is still right */ });
  return line;
}

function actionBar(name) {
  return h("div", { class: "actions" },
    actionButton(name, "savepoint", "Savepoint…", () => dialogSavepoint(name), { id: "action-savepoint" }),
    actionButton(name, "checkpoint", "Request checkpoint…", () => dialogCheckpoint(name), { id: "action-checkpoint" }),
    actionButton(name, "rollback", "Roll back…", () => dialogRollback(name), { id: "action-rollback", class: "danger" }),
    actionButton(name, "branch", "Branch…", () => dialogBranch(name), { id: "action-branch" }));
}

function renderSavepoints(box, name, list) {
  if (!list.length) return box.replaceChildren(h("p", { class: "muted" }, "No savepoint yet."));
  const reasons = list.some((s) => s.reason);   // no empty column when nobody gave one
  box.replaceChildren(h("div", { class: "scroll" }, h("table", { class: "data", id: "savepoints-table" },
    h("thead", {}, h("tr", {}, ["Name", "Epoch", "Created", "By", reasons ? "Reason" : null, ""].map((t) => t !== null && h("th", {}, t)))),
    h("tbody", {}, list.map((s) => h("tr", { dataset: { savepoint: s.name } },
      h("td", {}, s.name), h("td", { class: "num", dataset: { value: JSON.stringify(s.epoch) } }, h("a", { href: `#/p/${enc(name)}/state?at=${s.epoch}` }, fmtInt(s.epoch))),
      h("td", {}, fmtTime(s.created_at || s.committed_at)), h("td", {}, s.user || "–"), reasons && h("td", {}, s.reason || ""),
      h("td", {}, actionButton(name, "deleteSavepoint", "Delete…", () => dialogDeleteSavepoint(name, s.name)),
        " ", actionButton(name, "branch", "Branch…", () => dialogBranch(name, s.name)))))))));
}

// The columns are whatever the API reports per operator; the first links to that operator's state. Lists read
// "a, b", null "–", and a long SQL text is cut (the whole of it in the tooltip), so the table fits the page.
const LONG = 90;
function operatorsTable(name, ops) {
  if (!ops.length) return h("p", { class: "muted" }, "No stateful operator.");
  const cols = Object.keys(ops[0]);
  return h("div", { class: "scroll" }, h("table", { class: "data wrap", id: "operators-table" },
    h("thead", {}, h("tr", {}, cols.map((c) => h("th", {}, c)))),
    h("tbody", {}, ops.map((o) => h("tr", {}, cols.map((c, i) => {
      const text = plainText(o[c]);
      const id = o.state_id || o.operator || o.id;
      const cut = short(text.replace(/\s+/g, " "), LONG);
      return h("td", { title: cut === text ? "" : text, class: o[c] === null || o[c] === undefined ? "null" : c === "sql" ? "sql long" : text.length > 40 ? "long" : "",
        dataset: { col: c, value: JSON.stringify(o[c] ?? null) } },
      i === 0 && id ? h("a", { href: `#/p/${enc(name)}/state/${enc(id)}` }, cut) : cut);
    }))))));
}
