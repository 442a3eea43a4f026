// What a page starts (pollers, timers) must stop when the route changes, or a page left long ago would keep
// calling the API and drawing into elements that are no longer shown.
import { $, h } from "./dom.js";
import { enc } from "./format.js";

const POLL_MS = 2000;

let cleanups = [];
export function onLeave(fn) { cleanups.push(fn); }
export function stopPage() {
  for (const fn of cleanups) fn();
  cleanups = [];
}

// Waits for each call before scheduling the next: a slow answer must not pile up requests behind it.
export function poll(fn) {
  let alive = true;
  let timer = null;
  const tick = async () => {
    if (!alive) return;
    try { await fn(); } catch (err) { if (err.status !== 401) console.warn(err.message); }
    if (alive) timer = setTimeout(tick, POLL_MS);
  };
  onLeave(() => { alive = false; clearTimeout(timer); });
  tick();
}

// Dialogs and the login form redraw the current page after they act; the router registers itself here so that
// they need not import it (the router imports them, through the pages).
let router = () => {};
export function setRouter(fn) { router = fn; }
export function rerender() { return router(); }

export function crumbs(name, here) {
  const links = name
    ? [["", "Pipeline"], ["tree", "Version tree"], ["state", "Operator state"], ["sql", "SQL"]].map(([sub, label]) =>
        h("a", { href: `#/p/${enc(name)}${sub ? "/" + sub : ""}`, class: here === sub ? "current" : "" }, label))
    : [];
  $("#crumbs").replaceChildren(...[h("a", { href: "#/", class: name ? "" : "current" }, "Pipelines"),
    name ? h("span", { class: "muted" }, "/ ", h("strong", {}, name)) : null, ...links].filter(Boolean));
}
