// Compare two served pipelines (an A/B test of two branches of one savepoint): pick A and B, see the counts for
// every sink and operator they share, then one of them: when the two diverged (counts per checkpoint epoch) and
// the rows only in A, only in B and changed. Everything is in the URL fragment, so a comparison can be shared.
import { api } from "./api.js";
import { h } from "./dom.js";
import { enc, fmtInt, fmtNum } from "./format.js";
import { crumbs } from "./lifecycle.js";
import { dataTable } from "./tables.js";

const LIMIT = 200;   // rows of each table shown; the counts are whole

export async function pageCompare(app, params) {
  crumbs(null);
  const list = await api("/api/pipelines");
  const names = list.map((p) => p.name);
  const a = params.get("a") || names[0] || "";
  // By default B is a branch of A when there is one: the usual A/B test.
  const branch = list.find((p) => p.name !== a && p.branch_of);
  const b = params.get("b") || (branch ? branch.name : names.find((n) => n !== a)) || "";
  const at = params.get("at") || "";
  const key = params.get("key") || "";
  const pick = (id, chosen) => h("select", { id }, names.map((n) => h("option", { value: n, selected: n === chosen }, n)));
  const selA = pick("compare-a", a);
  const selB = pick("compare-b", b);
  const atBox = h("input", { id: "compare-at", value: at, placeholder: "epoch, savepoint or time (default: now)" });
  const go = () => { location.hash = "#/compare?" + query({ a: selA.value, b: selB.value, at: atBox.value.trim(), key }); };
  const result = h("div", { id: "compare-result" });
  app.replaceChildren(h("h1", {}, "Compare pipelines"),
    h("p", { class: "muted" }, "Two pipelines side by side, typically a pipeline and its branch: rows only in A, only in B, and changed, per checkpoint epoch since they diverged."),
    h("div", { class: "row" }, h("label", {}, "A ", selA), h("label", {}, "B ", selB), h("label", {}, "at ", atBox),
      h("button", { type: "button", class: "primary", id: "compare-go", onclick: go }, "Compare")),
    result);
  // Both chosen (B preselected from A when the URL names only A): compare at once, not only on a click.
  if (!params.get("a") || !b) return;
  const sink = params.get("sink");
  const operator = params.get("operator");
  const base = { a, b, at, key };
  result.replaceChildren(h("p", { class: "muted" }, "comparing…"));
  try {
    const res = await api("/api/compare?" + query({ ...base, sink, operator, limit: LIMIT }));
    // replaceChildren would write a null child as the text "null": leave those out
    result.replaceChildren(...(sink || operator ? detail(res, base) : summary(res, base)).flat().filter(Boolean));
  } catch (err) {
    result.replaceChildren(h("p", { class: "error", id: "compare-error" }, err.message));
  }
}

const query = (o) => Object.entries(o).filter(([, v]) => v !== null && v !== undefined && v !== "")
  .map(([k, v]) => `${k}=${enc(v)}`).join("&");

function origin(res) {
  const o = res.origin;
  const where = `A at epoch ${fmtInt(res.epoch_a)}, B at epoch ${fmtInt(res.epoch_b)}`;
  if (!o) return where;
  const who = { a: "B branched from A", b: "A branched from B", common: `both branched from ${o.ancestor || "one ancestor"}` }[o.parent];
  return `${where}; ${who} at epoch ${o.epoch}${o.savepoint ? ` (savepoint '${o.savepoint}')` : ""}`;
}

// Every sink and operator of either side, with counts; a row links to its comparison.
function summary(res, base) {
  const rows = res.summary.map((r) => ({
    ...r,
    name: r.present === "both" ? h("a", { href: "#/compare?" + query({ ...base, [r.kind]: r.name }) }, r.name) : r.name,
  }));
  return [h("p", { class: "muted", id: "compare-origin" }, origin(res)),
    summaryTable(rows)];
}

function summaryTable(rows) {
  const cols = ["kind", "name", "present", "key", "only_a", "only_b", "changed"];
  return h("div", { class: "scroll" }, h("table", { class: "data", id: "compare-summary" },
    h("thead", {}, h("tr", {}, cols.map((c) => h("th", {}, c)))),
    h("tbody", {}, rows.map((r) => h("tr", { dataset: { kind: r.kind, name: typeof r.name === "string" ? r.name : r.name.textContent } },
      cols.map((c) => h("td", { class: typeof r[c] === "number" ? "num" : "", dataset: { col: c } }, r[c] ?? "–")))))));
}

function detail(res, base) {
  const c = res.counts;
  const keyed = res.key.length ? `keyed by ${res.key.join(", ")}` : "compared as multisets of rows (count: extra copies)";
  const part = (title, id, t) => [h("h3", {}, `${title} (${fmtNum(t.total)})`),
    t.total ? dataTable(t.columns, t.rows, { id, dataset: { total: t.total } }) : h("p", { class: "muted" }, "none"),
    t.total > t.rows.length ? h("p", { class: "muted" }, `the first ${t.rows.length}; timelapse compare --json has them all`) : null];
  return [
    h("p", {}, h("a", { href: "#/compare?" + query(base) }, "‹ every sink and operator")),
    h("h2", {}, `${res.kind} ${res.name}`),
    h("p", { class: "muted", id: "compare-origin" }, `${origin(res)}; ${keyed}`),
    res.note ? h("p", { class: "muted" }, res.note) : null,
    h("p", { id: "compare-counts", dataset: c }, `${fmtNum(c.only_a)} only in A, ${fmtNum(c.only_b)} only in B, ${fmtNum(c.changed)} changed`),
    h("h3", {}, "Per checkpoint epoch"),
    dataTable(["epoch_a", "epoch_b", "only_a", "only_b", "changed"], res.per_epoch, { id: "compare-epochs",
      rowClass: (r) => (r.only_a || r.only_b || r.changed ? "differs" : "") }),
    ...part("Only in A", "compare-only-a", res.only_a),
    ...part("Only in B", "compare-only-b", res.only_b),
    ...part("Changed", "compare-changed", res.changed),
  ];
}
