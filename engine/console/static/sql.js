// Read-only SQL over the pipeline's tables at any epoch, with examples built from this pipeline's own tables.
import { api, P } from "./api.js";
import { h, toast } from "./dom.js";
import { fmtNum, fmtTime } from "./format.js";
import { crumbs } from "./lifecycle.js";
import { dataTable } from "./tables.js";

const CSV_LIMIT = 100000;  // the API's most rows per query

export async function pageSql(app, name) {
  crumbs(name, "sql");
  const info = await api(P(name));
  const sinks = (info.sinks || []).map((s) => (typeof s === "string" ? s : s.name));
  const ops = (info.operators || []).map((o) => o.state_id || o.operator).filter(Boolean);
  const sp = (info.savepoints || [])[0];
  const table = sinks[0] || (ops[0] ? `state."${ops[0]}"` : "my_table");
  const last = info.last_epoch ?? 1;
  const examples = [
    `SELECT * FROM ${table} AS OF EPOCH ${last} LIMIT 100`,
    `SELECT count(*) FROM ${table} AS OF EPOCH ${Math.max(1, last - 1)}`,
    sp ? `SELECT * FROM ${table} AS OF SAVEPOINT '${sp.name}'` : `SELECT * FROM ${table} AS OF TIMESTAMP '${fmtTime(info.committed_at).replace(" UTC", "").slice(0, 19)}'`,
    `SELECT * FROM ${table} AS OF EPOCH ${last} EXCEPT SELECT * FROM ${table} AS OF EPOCH ${Math.max(1, last - 1)}`,
    "SHOW TABLES",
  ];
  const query = h("textarea", { id: "sql-query", spellcheck: false }, examples[0]);
  const result = h("div", { id: "sql-result" });
  const status = h("span", { class: "muted", id: "sql-status" });
  const run = async () => {
    status.textContent = "running…";
    try {
      const res = await api(`${P(name)}/sql`, { method: "POST", body: { query: query.value, limit: 1000, format: "json" } });
      status.textContent = `${fmtNum(res.rows.length)} rows${res.truncated ? " (the first 1,000: the CSV has up to 100,000)" : ""}`;
      result.replaceChildren(dataTable(res.columns, res.rows, { id: "sql-table" }));
    } catch (err) {
      status.textContent = "";
      result.replaceChildren(h("p", { class: "error", id: "sql-error" }, err.message));
    }
  };
  // The CSV needs the Authorization header, so it cannot be a plain link: fetch it and hand the browser a blob.
  const csv = async () => {
    try {
      const res = await api(`${P(name)}/sql`, { method: "POST", body: { query: query.value, format: "csv", limit: CSV_LIMIT }, raw: true });
      const blob = await res.blob();
      const a = h("a", { href: URL.createObjectURL(blob), download: `${name}.csv` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 1000);
    } catch (err) {
      toast(err.message, true);
    }
  };
  query.addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) run(); });
  app.replaceChildren(h("h1", {}, "SQL"),
    h("p", { class: "muted" }, "Read-only DuckDB over the pipeline's tables at any epoch. Ctrl+Enter runs."),
    query, h("div", { class: "row" }, h("button", { class: "primary", id: "sql-run", type: "button", onclick: run }, "Run"),
      h("button", { id: "sql-csv", type: "button", onclick: csv }, "Download CSV"), status),
    h("h3", { style: "margin-top:12px" }, "Examples"),
    h("ul", { class: "examples" }, examples.map((ex) => h("li", {}, h("code", { onclick: () => { query.value = ex; run(); } }, ex)))),
    result);
}
