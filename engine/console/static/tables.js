// Tables of rows from the API, shared by the state, diff, late, dead-letter and SQL views.
import { api } from "./api.js";
import { h } from "./dom.js";
import { cellText, fmtNum } from "./format.js";

export const PAGE = 100;

// A filter box, the table and prev/next paging over an endpoint answering {columns, total, offset, limit, rows}.
// `url(q, offset)` builds the request; `data` lands on the table's data attributes so tests can wait for it.
export function pagedTable(box, id, url, data = {}, filter = true) {
  let offset = 0;
  const q = h("input", { type: "search", id: `${id}-filter`, placeholder: "filter: rows where any column contains…" });
  const table = h("div", {});
  const range = h("span", { id: `${id}-range`, class: "muted" });
  const prev = h("button", { type: "button", id: `${id}-prev`, onclick: () => { offset = Math.max(0, offset - PAGE); load(); } }, "‹ Prev");
  const next = h("button", { type: "button", id: `${id}-next`, onclick: () => { offset += PAGE; load(); } }, "Next ›");
  let debounce = null;
  q.addEventListener("input", () => { clearTimeout(debounce); debounce = setTimeout(() => { offset = 0; load(); }, 250); });
  // replaceChildren would write a null child as the text "null": leave the filter out instead.
  box.replaceChildren(...(filter ? [h("div", { class: "row" }, q)] : []), h("div", { class: "pager" }, prev, range, next), table);
  let seq = 0;
  const load = async () => {
    const mine = ++seq;
    range.textContent = "loading…";
    try {
      const res = await api(url(q.value, offset));
      if (mine !== seq) return;   // a newer request (slider moved on) wins
      const shown = res.rows.length;
      range.textContent = res.total === 0 ? "no rows" : `rows ${fmtNum(res.offset + 1)}-${fmtNum(res.offset + shown)} of ${fmtNum(res.total)}`;
      prev.disabled = res.offset === 0;
      next.disabled = res.offset + shown >= res.total;
      table.replaceChildren(dataTable(res.columns, res.rows, { id: `${id}-table`, dataset: { ...data, total: res.total, offset: res.offset } }));
    } catch (err) {
      if (mine !== seq) return;
      range.textContent = "";
      table.replaceChildren(h("p", { class: "error", id: `${id}-error` }, err.message));
    }
  };
  load();
}

// columns: [{name, type}] or names. Each cell keeps its JSON value in data-value: the text is for people, the
// value lets the tests compare exactly with the engine.
export function dataTable(columns, rows, { id, dataset = {}, rowClass } = {}) {
  const names = columns.map((c) => (typeof c === "string" ? c : c.name));
  return h("div", { class: "scroll" }, h("table", { class: "data", id, dataset },
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { title: typeof c === "string" ? "" : c.type || "" },
      typeof c === "string" ? c : c.name)))),
    h("tbody", {}, rows.map((r) => {
      const values = Array.isArray(r) ? r : names.map((n) => r[n]);
      return h("tr", { class: rowClass ? rowClass(r) : "" }, values.map((v, i) => h("td", {
        class: v === null || v === undefined ? "null" : typeof v === "number" ? "num" : "",
        title: cellText(v), dataset: { col: names[i], value: JSON.stringify(v ?? null) },
      }, cellText(v))));
    }))));
}
