// The home page: every state directory this console serves, refreshed while it is open.
import { api } from "./api.js";
import { h } from "./dom.js";
import { enc, fmtInt, fmtLag, fmtNum, fmtTime, folderName } from "./format.js";
import { crumbs, poll } from "./lifecycle.js";

export async function pagePipelines(app) {
  crumbs(null);
  const body = h("tbody");
  const table = h("table", { class: "data", id: "pipelines-table" },
    h("thead", {}, h("tr", {}, ["Pipeline", "Status", "Last epoch", "Committed", "Watermark", "Lag", "Rows/s in", "Rows/s out"]
      .map((t) => h("th", {}, t)))), body);
  app.replaceChildren(h("h1", {}, "Pipelines"), h("p", { class: "muted" }, "Every state directory this console serves. ",
    h("a", { href: "#/compare", id: "compare-link" }, "Compare two of them")),
    h("div", { class: "scroll" }, table));
  poll(async () => {
    const list = await api("/api/pipelines");
    body.replaceChildren(...list.map((p) => h("tr", { dataset: { pipeline: p.name } },
      h("td", {}, h("a", { href: `#/p/${enc(p.name)}` }, p.name),
        p.branch_of ? h("span", { class: "muted", title: branchPath(p.branch_of) }, ` (branch of ${folderName(branchPath(p.branch_of))})`) : null),
      h("td", {}, statusBadge(p)),
      h("td", { class: "num" }, fmtInt(p.last_epoch)),
      h("td", {}, fmtTime(p.committed_at)),
      h("td", {}, fmtTime(p.watermark)),
      h("td", { class: "num" }, fmtLag(p.watermark_lag_s)),
      h("td", { class: "num" }, fmtNum(p.rows_in_per_s)),
      h("td", { class: "num" }, fmtNum(p.rows_out_per_s)))));
    if (!list.length) body.append(h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No pipeline this token may see.")));
  });
}

// `branch_of` is the parent's path (an object with `parent` would do too).
const branchPath = (b) => (b && typeof b === "object" ? b.parent || b.path || "" : String(b));

// "running" means a process holds the directory's lock; the tooltip says which one.
export function statusBadge(p) {
  return h("span", { class: `badge ${p.running ? "running" : "stopped"}`, id: "status-badge",
    title: p.holder ? `held by ${p.holder.host || "?"} pid ${p.holder.pid || "?"}` : "" }, p.running ? "running" : "stopped");
}
