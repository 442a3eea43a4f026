// One way to show numbers, times and cells on every page, so that the same value reads the same everywhere.

export const enc = encodeURIComponent;

// Summaries (headers, the pipelines table, legends, counts): thousands separators, one decimal; a small value
// keeps two significant digits rather than reading as 0.
export const fmtNum = (n, digits = 1) =>
  n === null || n === undefined || Number.isNaN(n) ? "–" :
  Number.isInteger(n) ? n.toLocaleString("en-US") :
  Math.abs(n) < 0.1 && n !== 0 ? n.toLocaleString("en-US", { maximumSignificantDigits: 2 }) :
  n.toLocaleString("en-US", { maximumFractionDigits: digits });

// An epoch, an offset, a key: the number as it is, never "1,234".
export const fmtInt = (n) => (n === null || n === undefined ? "–" : String(n));

// Milliseconds are enough to tell epochs apart; the API's microseconds only make the tables wider.
export const fmtTime = (iso) =>
  (iso ? String(iso).replace("T", " ").replace(/(\.\d{3})\d*/, "$1").replace(/\+00:00$|Z$/, " UTC") : "–");

// A duration's unit, chosen from the largest value to show: [name, seconds per unit].
export function timeUnit(maxSeconds) {
  const s = Math.abs(maxSeconds || 0);
  if (s < 1) return ["ms", 0.001];
  if (s < 120) return ["s", 1];
  if (s < 7200) return ["min", 60];
  if (s < 172800) return ["h", 3600];
  return ["d", 86400];
}

export function fmtLag(s) {
  if (s === null || s === undefined) return "–";
  const [unit, per] = timeUnit(s);
  return `${fmtNum(s / per)} ${unit}`;
}

// A number in a table cell: integers as they are (keys, epochs, counts one compares by eye), floats with at most
// 6 significant digits (2981.2000000000003 reads 2981.2). The exact value stays in the cell's data-value.
export function fmtCellNum(v) {
  if (Number.isInteger(v) || !Number.isFinite(v)) return String(v);
  return String(Number(v.toPrecision(6)));
}

export function cellText(v) {
  if (v === null || v === undefined) return "null";
  if (typeof v === "number") return fmtCellNum(v);
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

// For people rather than for SQL: a list as "a, b", null as "–", an object as "k: v, ...".
export function plainText(v) {
  if (v === null || v === undefined) return "–";
  if (Array.isArray(v)) return v.length ? v.map(plainText).join(", ") : "–";
  if (typeof v === "number") return fmtCellNum(v);
  if (typeof v === "object") return Object.entries(v).map(([k, x]) => `${k}: ${plainText(x)}`).join(", ") || "–";
  return String(v);
}

export const short = (s, n) => (String(s).length > n ? String(s).slice(0, n - 1) + "…" : String(s));

// The last part of a path: a branch is known by its folder.
export const folderName = (p) => String(p || "").split(/[\\/]+/).filter(Boolean).pop() || String(p || "");
