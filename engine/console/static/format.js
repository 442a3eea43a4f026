// One way to show numbers, times and cells on every page, so that the same value reads the same everywhere.

export const enc = encodeURIComponent;

export const fmtNum = (n, digits = 1) =>
  n === null || n === undefined || Number.isNaN(n) ? "–" :
  Number.isInteger(n) ? n.toLocaleString("en-US") : n.toLocaleString("en-US", { maximumFractionDigits: digits });

// Milliseconds are enough to tell epochs apart; the API's microseconds only make the tables wider.
export const fmtTime = (iso) =>
  (iso ? String(iso).replace("T", " ").replace(/(\.\d{3})\d*/, "$1").replace(/\+00:00$|Z$/, " UTC") : "–");

export function fmtLag(s) {
  if (s === null || s === undefined) return "–";
  if (s < 120) return `${fmtNum(s)} s`;
  if (s < 7200) return `${fmtNum(s / 60)} min`;
  return `${fmtNum(s / 3600)} h`;
}

export function cellText(v) {
  if (v === null || v === undefined) return "null";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

export const short = (s, n) => (String(s).length > n ? String(s).slice(0, n - 1) + "…" : String(s));
