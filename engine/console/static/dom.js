// Building elements by hand keeps the console free of a framework and a build step: the machines it runs on may
// be offline, so nothing is fetched from elsewhere.

export const $ = (sel, root = document) => root.querySelector(sel);

const SVG_NS = "http://www.w3.org/2000/svg";
const SVG_TAGS = ["svg", "g", "path", "line", "polyline", "rect", "circle", "text", "title", "polygon"];

// h("div", {class: "x", onclick: f}, child, "text", ...): null/false attributes and children are skipped, so
// callers can write `cond ? h(...) : null` inline.
export function h(tag, attrs, ...children) {
  const svg = SVG_TAGS.includes(tag);
  const el = svg ? document.createElementNS(SVG_NS, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    // SVG properties are read-only animated values, and an input's `list` property has no setter: both need
    // setAttribute.
    else if (k in el && !svg && k !== "list") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

// Errors stay up longer than confirmations: they usually need reading.
export function toast(message, bad = false) {
  const el = $("#toast");
  el.textContent = message;
  el.className = bad ? "bad" : "";
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (el.hidden = true), bad ? 8000 : 4000);
}
