// One pipeline: its header and actions, live charts from its recent epochs, its savepoints and operators.
import { api, P } from "./api.js";
import { lineChart } from "./charts.js";
import { dialogBranch, dialogCheckpoint, dialogDeleteSavepoint, dialogRollback, dialogSavepoint } from "./dialogs.js";
import { h } from "./dom.js";
import { cellText, enc, fmtLag, fmtNum, fmtTime } from "./format.js";
import { crumbs, poll } from "./lifecycle.js";
import { statusBadge } from "./pipelines.js";
import { actionButton } from "./session.js";

// Each chart picks its lines out of one row of /series (one row per epoch).
const CHARTS = [
  ["Rows per second", (r) => ({ in: r.rows_in_per_s, out: r.rows_out_per_s })],
  ["Epoch and checkpoint time (ms)", (r) => ({ epoch: r.epoch_ms, checkpoint: r.checkpoint_ms })],
  ["Watermark lag (s)", (r) => ({ lag: r.watermark_lag_s })],
  ["State rows per operator", (r) => r.state_rows || {}],
  ["State bytes per operator", (r) => r.state_bytes || {}],
  ["Late rows", (r) => ({ late: r.late_rows })],
  ["Dead letters", (r) => ({ "dead letters": r.dead_letters })],
];

export async function pagePipeline(app, name) {
  crumbs(name, "");
  const info = await api(P(name));
  const header = h("div", { class: "spread" });
  const savepoints = h("div");
  const charts = h("div", { class: "grid", id: "charts" });
  app.replaceChildren(header, h("h2", {}, "Live"), charts, h("h2", {}, "Savepoints"), savepoints,
    h("h2", {}, "Operators"), operatorsTable(name, info.operators || []));
  const renderHeader = (p) => header.replaceChildren(
    h("div", {}, h("h1", {}, name, " ", statusBadge(p)),
      h("div", { class: "muted mono" }, p.path),
      h("div", { class: "muted" }, `last epoch ${fmtNum(p.last_epoch)} · committed ${fmtTime(p.committed_at)} · watermark `
        + `${fmtTime(p.watermark)} (lag ${fmtLag(p.watermark_lag_s)})`)),
    actionBar(name));
  renderHeader(info);
  renderSavepoints(savepoints, name, info.savepoints || []);
  const boxes = CHARTS.map(([title]) => h("div", { class: "card chart", dataset: { chart: title } }, h("h3", {}, title)));
  charts.replaceChildren(...boxes);
  // The first tick reuses the info fetched to draw the page instead of asking for it twice.
  let first = true;
  poll(async () => {
    const [series, p] = await Promise.all([api(`${P(name)}/series?limit=200`), first ? info : api(P(name))]);
    if (!first) {
      renderHeader(p);
      renderSavepoints(savepoints, name, p.savepoints || []);
    }
    first = false;
    CHARTS.forEach(([title, pick], i) => {
      const lines = {};
      for (const row of series) {
        for (const [k, v] of Object.entries(pick(row))) {
          if (v === null || v === undefined) continue;
          (lines[k] = lines[k] || []).push([row.epoch, v]);
        }
      }
      boxes[i].replaceChildren(h("h3", {}, title), lineChart(lines));
    });
  });
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
      h("td", {}, s.name), h("td", { class: "num" }, h("a", { href: `#/p/${enc(name)}/state?at=${s.epoch}` }, s.epoch)),
      h("td", {}, fmtTime(s.created_at || s.committed_at)), h("td", {}, s.user || "–"), reasons && h("td", {}, s.reason || ""),
      h("td", {}, actionButton(name, "deleteSavepoint", "Delete…", () => dialogDeleteSavepoint(name, s.name)),
        " ", actionButton(name, "branch", "Branch…", () => dialogBranch(name, s.name)))))))));
}

// The columns are whatever the API reports per operator; the first links to that operator's state.
function operatorsTable(name, ops) {
  if (!ops.length) return h("p", { class: "muted" }, "No stateful operator.");
  const cols = Object.keys(ops[0]);
  return h("div", { class: "scroll" }, h("table", { class: "data", id: "operators-table" },
    h("thead", {}, h("tr", {}, cols.map((c) => h("th", {}, c)))),
    h("tbody", {}, ops.map((o) => h("tr", {}, cols.map((c, i) => {
      const text = cellText(o[c]);
      const id = o.state_id || o.operator || o.id;
      return h("td", { title: text }, i === 0 && id ? h("a", { href: `#/p/${enc(name)}/state/${enc(id)}` }, text) : text);
    }))))));
}
