// timelapse console: a single-page app over the REST API under /api/. Plain JavaScript, no build step, nothing
// fetched from elsewhere (the machines it runs on may be offline). The token lives in sessionStorage and goes
// out as "Authorization: Bearer" on every call; there is no cookie another site could ride on.
"use strict";

const TOKEN_KEY = "timelapse-token";
const POLL_MS = 2000;
const PAGE = 100;
const CSV_LIMIT = 100000;  // the API's most rows per query
const ROLES = ["viewer", "operator", "admin"];
const NEEDS = { savepoint: "operator", checkpoint: "operator", rollback: "admin", branch: "admin", deleteSavepoint: "admin" };

// ---- small helpers ---------------------------------------------------------------------------------------------

const $ = (sel, root = document) => root.querySelector(sel);
const SVG_NS = "http://www.w3.org/2000/svg";

// h("div", {class: "x", onclick: f}, child, "text", ...): an element; null/false children are skipped.
function h(tag, attrs, ...children) {
  const svg = ["svg", "g", "path", "line", "polyline", "rect", "circle", "text", "title", "polygon"].includes(tag);
  const el = svg ? document.createElementNS(SVG_NS, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k in el && !svg && k !== "list") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

const enc = encodeURIComponent;
const fmtNum = (n, digits = 1) =>
  n === null || n === undefined || Number.isNaN(n) ? "–" :
  Number.isInteger(n) ? n.toLocaleString("en-US") : n.toLocaleString("en-US", { maximumFractionDigits: digits });
const fmtTime = (iso) => (iso ? String(iso).replace("T", " ").replace(/(\.\d{3})\d*/, "$1").replace(/\+00:00$|Z$/, " UTC") : "–");
function fmtLag(s) {
  if (s === null || s === undefined) return "–";
  if (s < 120) return `${fmtNum(s)} s`;
  if (s < 7200) return `${fmtNum(s / 60)} min`;
  return `${fmtNum(s / 3600)} h`;
}
function cellText(v) {
  if (v === null || v === undefined) return "null";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

function toast(message, bad = false) {
  const el = $("#toast");
  el.textContent = message;
  el.className = bad ? "bad" : "";
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (el.hidden = true), bad ? 8000 : 4000);
}

// ---- the token and the API -------------------------------------------------------------------------------------

const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (t) => sessionStorage.setItem(TOKEN_KEY, t.trim()),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

// Every call: the bearer token; a 401 sends the user to the login form; other errors carry the API's one line.
async function api(path, { method = "GET", body, raw = false } = {}) {
  const headers = { Authorization: `Bearer ${token.get() || ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new ApiError(0, `the console did not answer (${err.message})`);
  }
  if (res.status === 401) {
    token.clear();
    showLogin("Your token was not accepted (unknown or revoked). Paste a valid one.");
    throw new ApiError(401, "not signed in");
  }
  if (!res.ok) {
    let detail = `${res.status} ${res.statusText}`;
    try {
      const j = await res.json();
      if (j && j.detail) detail = typeof j.detail === "string" ? j.detail : JSON.stringify(j.detail);
    } catch (_) { /* not JSON: keep the status line */ }
    throw new ApiError(res.status, detail);
  }
  if (raw) return res;
  if (res.status === 202) {
    const j = await res.json();
    return { ...j, pending: j.pending ?? true };
  }
  return res.json();
}

const P = (name) => `/api/pipelines/${enc(name)}`;

// Who the token is, per pipeline (GET /api/me); buttons are disabled from this.
let me = null;
async function loadMe() {
  me = await api("/api/me");
  const grants = Object.values(me.pipelines || {});
  const who = grants[0];
  $("#whoami").textContent = who ? `${who.user} · ${[...new Set(grants.map((g) => g.role))].join("/")}` : "";
  $("#logout").hidden = false;
}
function roleOn(name) {
  return (me && me.pipelines && me.pipelines[name] && me.pipelines[name].role) || "viewer";
}
function allowed(name, action) {
  return ROLES.indexOf(roleOn(name)) >= ROLES.indexOf(NEEDS[action]);
}
// A button for an action: disabled, with the reason as its tooltip, when the role is too low.
function actionButton(name, action, label, onclick, attrs = {}) {
  const ok = allowed(name, action);
  return h("button", {
    type: "button", ...attrs, onclick, disabled: !ok, dataset: { needs: NEEDS[action] },
    title: ok ? attrs.title || "" : `needs the ${NEEDS[action]} role; this token is ${roleOn(name)} on ${name}`,
  }, label);
}

function showLogin(message) {
  stopPage();
  $("#whoami").textContent = "";
  $("#logout").hidden = true;
  $("#crumbs").replaceChildren();
  const input = h("input", { type: "password", id: "login-token", placeholder: "tl_…", autocomplete: "off", required: true });
  const form = h("form", {
    id: "login-form", class: "card login",
    onsubmit: (e) => {
      e.preventDefault();
      token.set(input.value);
      me = null;
      route();
    },
  },
  h("h1", {}, "Sign in"),
  h("p", { class: "muted" }, "Paste the token `timelapse ui` printed, or one from `timelapse token create`."),
  message ? h("p", { class: "error", id: "login-error" }, message) : null,
  h("label", {}, h("span", {}, "Token"), input),
  h("button", { class: "primary", type: "submit" }, "Sign in"));
  $("#app").replaceChildren(form);
  input.focus();
}

// ---- routing ---------------------------------------------------------------------------------------------------

// What the current page started (pollers, timers): stopped when the route changes.
let cleanups = [];
function onLeave(fn) { cleanups.push(fn); }
function stopPage() {
  for (const fn of cleanups) fn();
  cleanups = [];
}
// Polls `fn` every POLL_MS while the page is open, without overlapping calls.
function poll(fn) {
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

function crumbs(name, here) {
  const links = name
    ? [["", "Pipeline"], ["tree", "Version tree"], ["state", "Operator state"], ["sql", "SQL"]].map(([sub, label]) =>
        h("a", { href: `#/p/${enc(name)}${sub ? "/" + sub : ""}`, class: here === sub ? "current" : "" }, label))
    : [];
  $("#crumbs").replaceChildren(...[h("a", { href: "#/", class: name ? "" : "current" }, "Pipelines"),
    name ? h("span", { class: "muted" }, "/ ", h("strong", {}, name)) : null, ...links].filter(Boolean));
}

async function route() {
  stopPage();
  const hash = location.hash || "#/";
  const m = hash.match(/[#&]token=([^&]+)/);
  if (m) {
    // `timelapse ui` printed the URL with the session token in its fragment (never sent to the server).
    token.set(decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + "#/");
    return route();
  }
  if (!token.get()) return showLogin();
  const app = $("#app");
  try {
    if (!me) await loadMe();
    const parts = hash.replace(/^#\/?/, "").split("?")[0].split("/").filter(Boolean).map(decodeURIComponent);
    if (parts.length === 0) return await pagePipelines(app);
    if (parts[0] === "p" && parts[1]) {
      const name = parts[1];
      if (parts.length === 2) return await pagePipeline(app, name);
      if (parts[2] === "tree") return await pageTree(app, name);
      if (parts[2] === "state") return await pageState(app, name, parts[3] || null);
      if (parts[2] === "sql") return await pageSql(app, name);
    }
    app.replaceChildren(h("p", { class: "error" }, `No page at ${hash}.`), h("a", { href: "#/" }, "Pipelines"));
  } catch (err) {
    if (err.status === 401) return;
    app.replaceChildren(h("div", { class: "card", id: "page-error" },
      h("p", { class: "error" }, err.status === 403 ? `Not allowed: ${err.message}` : err.message),
      h("a", { href: "#/" }, "Back to the pipelines")));
  }
}

// ---- Pipelines -------------------------------------------------------------------------------------------------

async function pagePipelines(app) {
  crumbs(null);
  const body = h("tbody");
  const table = h("table", { class: "data", id: "pipelines-table" },
    h("thead", {}, h("tr", {}, ["Pipeline", "Status", "Last epoch", "Committed", "Watermark", "Lag", "Rows/s in", "Rows/s out"]
      .map((t) => h("th", {}, t)))), body);
  app.replaceChildren(h("h1", {}, "Pipelines"), h("p", { class: "muted" }, "Every state directory this console serves."),
    h("div", { class: "scroll" }, table));
  poll(async () => {
    const list = await api("/api/pipelines");
    body.replaceChildren(...list.map((p) => h("tr", { dataset: { pipeline: p.name } },
      h("td", {}, h("a", { href: `#/p/${enc(p.name)}` }, p.name),
        p.branch_of ? h("span", { class: "muted" }, ` (branch of ${p.branch_of})`) : null),
      h("td", {}, statusBadge(p)),
      h("td", { class: "num" }, fmtNum(p.last_epoch)),
      h("td", {}, fmtTime(p.committed_at)),
      h("td", {}, fmtTime(p.watermark)),
      h("td", { class: "num" }, fmtLag(p.watermark_lag_s)),
      h("td", { class: "num" }, fmtNum(p.rows_in_per_s)),
      h("td", { class: "num" }, fmtNum(p.rows_out_per_s)))));
    if (!list.length) body.append(h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No pipeline this token may see.")));
  });
}

function statusBadge(p) {
  return h("span", { class: `badge ${p.running ? "running" : "stopped"}`, id: "status-badge",
    title: p.holder ? `held by ${p.holder.host || "?"} pid ${p.holder.pid || "?"}` : "" }, p.running ? "running" : "stopped");
}

// ---- Pipeline: header, actions, charts -------------------------------------------------------------------------

async function pagePipeline(app, name) {
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
  const defs = [
    ["Rows per second", (r) => ({ in: r.rows_in_per_s, out: r.rows_out_per_s })],
    ["Epoch and checkpoint time (ms)", (r) => ({ epoch: r.epoch_ms, checkpoint: r.checkpoint_ms })],
    ["Watermark lag (s)", (r) => ({ lag: r.watermark_lag_s })],
    ["State rows per operator", (r) => r.state_rows || {}],
    ["State bytes per operator", (r) => r.state_bytes || {}],
    ["Late rows", (r) => ({ late: r.late_rows })],
    ["Dead letters", (r) => ({ "dead letters": r.dead_letters })],
  ];
  const boxes = defs.map(([title]) => h("div", { class: "card chart", dataset: { chart: title } }, h("h3", {}, title)));
  charts.replaceChildren(...boxes);
  let first = true;
  poll(async () => {
    const [series, p] = await Promise.all([api(`${P(name)}/series?limit=200`), first ? info : api(P(name))]);
    if (!first) {
      renderHeader(p);
      renderSavepoints(savepoints, name, p.savepoints || []);
    }
    first = false;
    defs.forEach(([title, pick], i) => {
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
  const reasons = list.some((s) => s.reason);
  box.replaceChildren(h("div", { class: "scroll" }, h("table", { class: "data", id: "savepoints-table" },
    h("thead", {}, h("tr", {}, ["Name", "Epoch", "Created", "By", reasons ? "Reason" : null, ""].map((t) => t !== null && h("th", {}, t)))),
    h("tbody", {}, list.map((s) => h("tr", { dataset: { savepoint: s.name } },
      h("td", {}, s.name), h("td", { class: "num" }, h("a", { href: `#/p/${enc(name)}/state?at=${s.epoch}` }, s.epoch)),
      h("td", {}, fmtTime(s.created_at || s.committed_at)), h("td", {}, s.user || "–"), reasons && h("td", {}, s.reason || ""),
      h("td", {}, actionButton(name, "deleteSavepoint", "Delete…", () => dialogDeleteSavepoint(name, s.name)),
        " ", actionButton(name, "branch", "Branch…", () => dialogBranch(name, s.name)))))))));
}

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

// ---- a small SVG line chart --------------------------------------------------------------------------------------

const PALETTE = ["#2f6fdb", "#e8590c", "#18794e", "#7c3aed", "#c0362c", "#0891b2", "#a16207", "#db2777"];

// lines: {label: [[x, y], ...]}; x is the epoch. Axes with min/max ticks, a legend, the last value in the title.
function lineChart(lines, { width = 420, height = 150 } = {}) {
  const pad = { l: 48, r: 10, t: 8, b: 20 };
  const all = Object.values(lines).flat();
  const svg = h("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  if (!all.length) {
    svg.append(h("text", { x: width / 2, y: height / 2, "text-anchor": "middle" }, "no data yet"));
    return h("div", {}, svg);
  }
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const [y0, y1] = [Math.min(0, ...ys), Math.max(...ys)];
  const sx = (x) => pad.l + (x1 === x0 ? 0.5 : (x - x0) / (x1 - x0)) * (width - pad.l - pad.r);
  const sy = (y) => height - pad.b - (y1 === y0 ? 0.5 : (y - y0) / (y1 - y0)) * (height - pad.t - pad.b);
  const short = (v) => (Math.abs(v) >= 1e6 ? `${fmtNum(v / 1e6)}M` : Math.abs(v) >= 1e4 ? `${fmtNum(v / 1e3)}k` : fmtNum(v));
  svg.append(
    h("line", { class: "axis", x1: pad.l, x2: width - pad.r, y1: sy(y0), y2: sy(y0) }),
    h("line", { class: "axis", x1: pad.l, x2: pad.l, y1: pad.t, y2: height - pad.b }),
    h("line", { class: "axis", x1: pad.l, x2: width - pad.r, y1: sy(y1), y2: sy(y1), "stroke-dasharray": "2 3" }),
    h("text", { x: pad.l - 4, y: sy(y1) + 3, "text-anchor": "end" }, short(y1)),
    h("text", { x: pad.l - 4, y: sy(y0) + 3, "text-anchor": "end" }, short(y0)),
    h("text", { x: pad.l, y: height - 5 }, `epoch ${x0}`),
    h("text", { x: width - pad.r, y: height - 5, "text-anchor": "end" }, `epoch ${x1}`));
  const legend = h("div", { class: "legend" });
  Object.entries(lines).forEach(([label, points], i) => {
    const color = PALETTE[i % PALETTE.length];
    const d = points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ");
    const last = points[points.length - 1];
    svg.append(points.length === 1
      ? h("circle", { cx: sx(last[0]), cy: sy(last[1]), r: 3, fill: color })
      : h("polyline", { points: d, fill: "none", stroke: color, "stroke-width": 1.6, "stroke-linejoin": "round" },
        h("title", {}, `${label}: ${fmtNum(last[1])} at epoch ${last[0]}`)));
    legend.append(h("span", {}, h("i", { style: `background:${color}` }), `${label} ${fmtNum(last[1])}`));
  });
  return h("div", {}, svg, legend);
}

// ---- Version tree ----------------------------------------------------------------------------------------------

async function pageTree(app, name) {
  crumbs(name, "tree");
  const tree = await api(`${P(name)}/tree`);
  const details = h("div", { class: "card", id: "tree-details" }, h("p", { class: "muted" }, "Click a node for its details."));
  app.replaceChildren(h("h1", {}, "Version tree"),
    h("p", { class: "muted" }, "Runs of epochs, savepoints, rollbacks, drains and branches, oldest first; one lane per line of history."),
    drawTree(name, tree, details), h("h2", {}, "Details"), details);
}

function drawTree(name, tree, details) {
  const nodes = tree.nodes || [];
  const lanes = [...new Set(nodes.map((n) => n.lane ?? 0))].sort((a, b) => a - b);
  const laneY = (lane) => 40 + lanes.indexOf(lane ?? 0) * 70;
  const step = 140;
  const pos = new Map(nodes.map((n, i) => [n.id, { x: 90 + i * step, y: laneY(n.lane) }]));
  const width = Math.max(600, 90 + nodes.length * step + 40);
  const height = laneY(lanes[lanes.length - 1]) + 50;
  const svg = h("svg", { class: "graph", id: "tree-svg", width, height, viewBox: `0 0 ${width} ${height}` });
  lanes.forEach((lane) => svg.append(h("text", { class: "lane-label", x: 8, y: laneY(lane) + 4 }, `lane ${lane}`)));
  for (const e of tree.edges || []) {
    const a = pos.get(e.from);
    const b = pos.get(e.to);
    if (!a || !b) continue;
    const d = a.y === b.y ? `M${a.x},${a.y} L${b.x},${b.y}` : `M${a.x},${a.y} C${a.x + step / 2},${a.y} ${b.x - step / 2},${b.y} ${b.x},${b.y}`;
    svg.append(h("path", { class: "edge", d }));
  }
  for (const n of nodes) {
    const { x, y } = pos.get(n.id);
    const shape = n.kind === "run" ? h("rect", { x: x - 45, y: y - 14, width: 90, height: 28, rx: 6 })
      : n.kind === "savepoint" ? h("path", { d: `M${x},${y - 13} L${x + 13},${y} L${x},${y + 13} L${x - 13},${y} Z` })
      : h("circle", { cx: x, cy: y, r: 11 });
    const label = n.kind === "run" ? (n.first === n.last ? `epoch ${n.first}` : `epochs ${n.first}–${n.last}`) : n.label || n.kind;
    const g = h("g", { class: `node ${n.kind}`, dataset: { id: n.id, kind: n.kind, epoch: n.epoch ?? n.last ?? "" },
      tabindex: 0, onclick: () => select(g, n) },
    h("title", {}, `${n.kind}: ${n.label || label}`), shape,
    h("text", { x, y: n.kind === "run" ? y + 4 : y + 28, "text-anchor": "middle" }, short(label, 22)));
    svg.append(g);
  }
  const select = (g, n) => {
    svg.querySelectorAll(".node.selected").forEach((el) => el.classList.remove("selected"));
    g.classList.add("selected");
    const epoch = n.kind === "run" ? n.last : n.epoch;
    const fields = ["kind", "label", "epoch", "first", "last", "at", "user", "reason"].filter((k) => n[k] !== null && n[k] !== undefined && n[k] !== "");
    details.replaceChildren(h("dl", { class: "details" }, fields.map((k) => [h("dt", {}, k), h("dd", {}, k === "at" ? fmtTime(n[k]) : cellText(n[k]))])),
      h("div", { class: "actions" },
        (n.kind === "run" || n.kind === "savepoint") && epoch !== null && epoch !== undefined
          ? h("a", { href: `#/p/${enc(name)}/state?at=${epoch}`, id: "tree-state-link" }, `Operator state at epoch ${epoch}`) : null,
        n.kind === "run" && n.first !== n.last ? h("a", { href: `#/p/${enc(name)}/state?at=${n.first}` }, `at epoch ${n.first}`) : null,
        n.pipeline ? h("a", { href: `#/p/${enc(n.pipeline)}`, id: "tree-branch-link" }, `Open pipeline ${n.pipeline}`) : null));
  };
  return h("div", { class: "scroll" }, svg);
}
const short = (s, n) => (String(s).length > n ? String(s).slice(0, n - 1) + "…" : String(s));

// ---- Operator state --------------------------------------------------------------------------------------------

// The `?at=` of the hash, if any (a link from the tree or a savepoint).
function hashParam(key) {
  const q = (location.hash.split("?")[1] || "");
  return new URLSearchParams(q).get(key);
}

async function pageState(app, name, op) {
  crumbs(name, "state");
  const [plan, checkpoints] = await Promise.all([
    api(`${P(name)}/plan`).catch((err) => ({ error: err.message, nodes: [] })),
    api(`${P(name)}/checkpoints`),
  ]);
  const stateful = plan.nodes.filter((n) => n.stateful);
  if (!op) {
    const info = plan.nodes.length ? null : await api(P(name));
    const first = (info && info.operators && info.operators[0]) || {};
    op = stateful.length ? stateful[0].state_id : first.state_id || first.operator || null;
  }
  const epochs = checkpoints.filter((c) => c.kind === "epoch" && c.readable !== false).map((c) => c.epoch);
  const graph = plan.nodes.length ? drawPlan(name, plan, op)
    : h("p", { class: "muted", id: "plan-missing" }, `No plan graph: ${plan.error || "empty plan"}`);
  app.replaceChildren(h("h1", {}, "Operator state"), graph);
  if (!op) return app.append(h("p", { class: "muted" }, "This pipeline keeps no state."));
  if (!epochs.length) return app.append(h("p", { class: "muted" }, "No retained epoch yet."));
  const wanted = Number(hashParam("at"));
  let index = epochs.includes(wanted) ? epochs.indexOf(wanted) : epochs.length - 1;
  const body = h("div", { id: "state-body" });
  const tabs = ["state", "diff", "late", "dead letters"];
  let tab = "state";
  const tabBar = h("div", { class: "tabs" });
  const renderTabs = () => tabBar.replaceChildren(...tabs.map((t) => h("a", { href: "javascript:void 0", class: t === tab ? "on" : "",
    id: `tab-${t.replace(" ", "-")}`, onclick: () => { tab = t; renderTabs(); show(); } }, t)));
  const slider = h("input", { type: "range", id: "epoch-slider", min: 0, max: epochs.length - 1, step: 1, value: index,
    "aria-label": "epoch" });
  const out = h("output", { id: "epoch-label" });
  const setLabel = () => { out.textContent = `epoch ${epochs[index]}`; slider.dataset.epoch = epochs[index]; };
  setLabel();
  let debounce = null;
  slider.addEventListener("input", () => {
    index = Number(slider.value);
    setLabel();
    clearTimeout(debounce);
    debounce = setTimeout(show, 120);
  });
  app.append(h("h2", {}, `Operator ${op}`),
    h("div", { class: "slider" }, h("span", { class: "muted" }, `epoch ${epochs[0]}`), slider,
      h("span", { class: "muted" }, `epoch ${epochs[epochs.length - 1]}`), out),
    tabBar, body);
  renderTabs();
  const show = () => {
    const at = epochs[index];
    if (tab === "state") pagedTable(body, "state", (q, offset) =>
      `${P(name)}/operators/${enc(op)}/state?at=${at}&q=${enc(q)}&offset=${offset}&limit=${PAGE}`, { epoch: at });
    else if (tab === "late") pagedTable(body, "late", (q, offset) =>
      `${P(name)}/operators/${enc(op)}/late?at=${at}&q=${enc(q)}&offset=${offset}&limit=${PAGE}`, { epoch: at });
    else if (tab === "diff") diffView(body, name, op, epochs, at);
    else deadLetters(body, name, at);
  };
  show();
}

// A filter box, the table and prev/next paging over an endpoint answering {columns, total, offset, limit, rows}.
function pagedTable(box, id, url, data = {}, filter = true) {
  let offset = 0;
  const q = h("input", { type: "search", id: `${id}-filter`, placeholder: "filter: rows where any column contains…" });
  const table = h("div", {});
  const range = h("span", { id: `${id}-range`, class: "muted" });
  const prev = h("button", { type: "button", id: `${id}-prev`, onclick: () => { offset = Math.max(0, offset - PAGE); load(); } }, "‹ Prev");
  const next = h("button", { type: "button", id: `${id}-next`, onclick: () => { offset += PAGE; load(); } }, "Next ›");
  let debounce = null;
  q.addEventListener("input", () => { clearTimeout(debounce); debounce = setTimeout(() => { offset = 0; load(); }, 250); });
  box.replaceChildren(filter ? h("div", { class: "row" }, q) : null, h("div", { class: "pager" }, prev, range, next), table);
  let seq = 0;
  const load = async () => {
    const mine = ++seq;
    range.textContent = "loading…";
    try {
      const res = await api(url(q.value, offset));
      if (mine !== seq) return;   // a newer request (slider moved on) wins
      const shown = res.rows.length;
      range.textContent = res.total === 0 ? "no rows" : `rows ${res.offset + 1}-${res.offset + shown} of ${res.total}`;
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

// columns: [{name, type}] or names; each cell keeps its JSON value in data-value (tests compare with it).
function dataTable(columns, rows, { id, dataset = {}, rowClass } = {}) {
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

function diffView(box, name, op, epochs, at) {
  const pick = (id, value) => h("select", { id }, epochs.map((e) => h("option", { value: e, selected: e === value }, `epoch ${e}`)));
  const a = pick("diff-a", epochs[Math.max(0, epochs.indexOf(at) - 1)]);
  const b = pick("diff-b", at);
  const result = h("div", { id: "diff-body" });
  const run = () => pagedTable(result, "diff", (q, offset) =>
    `${P(name)}/operators/${enc(op)}/diff?a=${a.value}&b=${b.value}&offset=${offset}&limit=${PAGE}`, { a: a.value, b: b.value }, false);
  a.addEventListener("change", run);
  b.addEventListener("change", run);
  box.replaceChildren(h("div", { class: "row" }, h("label", { class: "inline" }, h("span", {}, "from"), a),
    h("label", { class: "inline" }, h("span", {}, "to"), b)), result);
  run();
}

async function deadLetters(box, name, at) {
  let sources;
  try {
    sources = await api(`${P(name)}/dead-letters`);
  } catch (err) {
    return box.replaceChildren(h("p", { class: "error", id: "dl-error" }, err.message));
  }
  if (!sources.length) return box.replaceChildren(h("p", { class: "muted", id: "dl-none" }, "No source has dead letters."));
  const select = h("select", { id: "dl-source" }, sources.map((s) => h("option", { value: s.source }, `${s.source} (${fmtNum(s.rows)})`)));
  const result = h("div");
  const run = () => pagedTable(result, "dl", (q, offset) =>
    `${P(name)}/dead-letters/${enc(select.value)}?at=${at}&offset=${offset}&limit=${PAGE}`, { epoch: at }, false);
  select.addEventListener("change", run);
  box.replaceChildren(h("label", { class: "inline" }, h("span", {}, "source"), select), result);
  run();
}

// Layered layout: a node's layer is one more than its deepest input; within a layer, plan order.
function drawPlan(name, plan, selected) {
  const byId = new Map(plan.nodes.map((n) => [n.id, n]));
  const layer = new Map();
  const depth = (n, seen = new Set()) => {
    if (layer.has(n.id)) return layer.get(n.id);
    if (seen.has(n.id)) return 0;
    seen.add(n.id);
    const d = Math.max(-1, ...(n.inputs || []).map((i) => (byId.has(i) ? depth(byId.get(i), seen) : -1))) + 1;
    layer.set(n.id, d);
    return d;
  };
  plan.nodes.forEach((n) => depth(n));
  const layers = [];
  for (const n of plan.nodes) (layers[layer.get(n.id)] = layers[layer.get(n.id)] || []).push(n);
  const W = 190;
  const H = 40;
  const gx = 50;
  const gy = 28;
  const tall = Math.max(...layers.map((l) => l.length));
  const pos = new Map();
  layers.forEach((nodes, li) => nodes.forEach((n, i) => {
    const offset = ((tall - nodes.length) * (H + gy)) / 2;
    pos.set(n.id, { x: 20 + li * (W + gx), y: 20 + offset + i * (H + gy) });
  }));
  const width = 40 + layers.length * (W + gx) - gx;
  const height = 40 + tall * (H + gy) - gy;
  const svg = h("svg", { class: "graph", id: "plan-svg", width, height, viewBox: `0 0 ${width} ${height}` });
  for (const n of plan.nodes) {
    for (const i of n.inputs || []) {
      const a = pos.get(i);
      const b = pos.get(n.id);
      if (!a) continue;
      const [x1, y1, x2, y2] = [a.x + W, a.y + H / 2, b.x, b.y + H / 2];
      svg.append(h("path", { class: "edge", d: `M${x1},${y1} C${x1 + gx / 2},${y1} ${x2 - gx / 2},${y2} ${x2},${y2}` }));
    }
  }
  for (const n of plan.nodes) {
    const { x, y } = pos.get(n.id);
    const cls = `node ${n.stateful ? "stateful" : ""} ${n.stateful && n.state_id === selected ? "selected" : ""}`;
    const g = h("g", { class: cls, dataset: { id: n.id, stateId: n.state_id || "" } },
      h("title", {}, `${n.kind}: ${n.label}${n.stateful ? ` (state ${n.state_id})` : ""}`),
      h("rect", { x, y, width: W, height: H, rx: 6 }),
      h("text", { x: x + W / 2, y: y + 16, "text-anchor": "middle", "font-weight": 600 }, short(n.kind, 28)),
      h("text", { x: x + W / 2, y: y + 31, "text-anchor": "middle" }, short(n.label || "", 27)));
    if (n.stateful) g.addEventListener("click", () => { location.hash = `#/p/${enc(name)}/state/${enc(n.state_id)}`; });
    svg.append(g);
  }
  return h("div", { class: "scroll" }, svg);
}

// ---- SQL -------------------------------------------------------------------------------------------------------

async function pageSql(app, name) {
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

// ---- actions behind a confirmation -----------------------------------------------------------------------------

// Opens the dialog: `fields` (elements), `what` (the text of what will happen, refreshed by `refresh`), and
// `confirm` (returns a promise; its message is toasted). Confirm stays disabled while `ready()` is false.
function openDialog({ title, fields = [], describe, confirmLabel = "Confirm", danger = false, confirm }) {
  const dialog = $("#confirm-dialog");
  const what = $("#dialog-what");
  const error = $("#dialog-error");
  const ok = $("#dialog-confirm");
  $("#dialog-title").textContent = title;
  $("#dialog-body").replaceChildren(...fields);
  error.hidden = true;
  ok.textContent = confirmLabel;
  ok.className = danger ? "danger" : "primary";
  let ready = false;
  const refresh = async () => {
    ready = false;
    ok.disabled = true;
    try {
      const node = await describe();
      what.replaceChildren(node.element || node);
      ready = node.ready !== false;
      error.hidden = true;
    } catch (err) {
      what.replaceChildren();
      error.textContent = err.message;
      error.hidden = false;
    }
    ok.disabled = !ready;
  };
  for (const f of fields) f.addEventListener("input", debounced(refresh));
  $("#dialog-cancel").onclick = () => dialog.close();
  $("#dialog-form").onsubmit = async (e) => {
    e.preventDefault();
    if (!ready) return;
    ok.disabled = true;
    try {
      const message = await confirm();
      dialog.close();
      toast(message);
      route();
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
      ok.disabled = false;
    }
  };
  dialog.showModal();
  refresh();
  return refresh;
}
function debounced(fn, ms = 250) {
  let t = null;
  return () => { clearTimeout(t); t = setTimeout(fn, ms); };
}
const field = (label, input) => h("label", {}, h("span", {}, label), input);
const pendingNote = (res) => (res.pending ? ` The pipeline has not answered yet (request ${res.pending}); it will apply it at its next epoch boundary.` : "");

function dialogSavepoint(name) {
  const sp = h("input", { type: "text", id: "f-name", placeholder: "before_deploy", required: true });
  const epoch = h("input", { type: "number", id: "f-epoch", min: 1, placeholder: "latest" });
  const reason = h("input", { type: "text", id: "f-reason", placeholder: "why (recorded in the manifest)" });
  openDialog({
    title: "Create a savepoint",
    fields: [field("Name", sp), field("Epoch (empty: the latest checkpoint; a running pipeline checkpoints first)", epoch), field("Reason", reason)],
    describe: async () => ({
      ready: /^[A-Za-z0-9_.-]+$/.test(sp.value),
      element: h("p", {}, sp.value ? `Names ${epoch.value ? `epoch ${epoch.value}` : "the latest checkpoint"} of ${name} "${sp.value}". `
        + "Its state, offsets and sinks stay readable and restorable until the savepoint is deleted; the audit records your token's name."
        : "Give the savepoint a name (letters, digits, _ . -)."),
    }),
    confirmLabel: "Create savepoint",
    confirm: async () => {
      const res = await api(`${P(name)}/savepoints`, { method: "POST",
        body: { name: sp.value, epoch: epoch.value ? Number(epoch.value) : null, reason: reason.value || null } });
      return `Savepoint ${res.savepoint || sp.value} at epoch ${res.epoch ?? "?"}.${pendingNote(res)}`;
    },
  });
}

function dialogDeleteSavepoint(name, savepoint) {
  const reason = h("input", { type: "text", id: "f-reason", placeholder: "why (recorded in the manifest)" });
  openDialog({
    title: `Delete savepoint ${savepoint}`, fields: [field("Reason", reason)], danger: true, confirmLabel: "Delete savepoint",
    describe: async () => h("p", {}, `Removes the name "${savepoint}". The epoch it named is then kept only as long as the retention policy keeps it; `
      + "the deletion is recorded in the manifest."),
    confirm: async () => {
      await api(`${P(name)}/savepoints/${enc(savepoint)}?reason=${enc(reason.value)}`, { method: "DELETE" });
      return `Savepoint ${savepoint} deleted.`;
    },
  });
}

function dialogCheckpoint(name) {
  openDialog({
    title: "Request a checkpoint",
    describe: async () => h("p", {}, `Asks ${name} to commit its operator state and a manifest row at its next epoch boundary `
      + "(if it is stopped, at the first epoch of its next run). Sinks and offsets are not changed."),
    confirmLabel: "Request checkpoint",
    confirm: async () => {
      const res = await api(`${P(name)}/checkpoints`, { method: "POST" });
      return res.running ? "Checkpoint requested: the running pipeline takes it at its next epoch boundary."
        : "Checkpoint requested: the pipeline is stopped; its next run takes it.";
    },
  });
}

function dialogRollback(name) {
  const kind = h("select", { id: "f-target-kind" }, [["epoch", "an epoch"], ["savepoint", "a savepoint"], ["timestamp", "a time (ISO, UTC)"]]
    .map(([v, l]) => h("option", { value: v }, l)));
  const target = h("input", { type: "text", id: "f-target", placeholder: "epoch number", required: true });
  const reason = h("input", { type: "text", id: "f-reason", placeholder: "why (recorded in the manifest)", required: true });
  const force = h("input", { type: "checkbox", id: "f-force" });
  const forceLabel = h("label", { class: "inline", hidden: true, id: "f-force-label" }, force, h("span", {}, "force: accept the repeated output"));
  kind.addEventListener("change", () => {
    target.placeholder = { epoch: "epoch number", savepoint: "savepoint name", timestamp: "2026-01-31T10:00:00" }[kind.value];
  });
  const params = () => `${kind.value}=${enc(target.value.trim())}`;
  let preview = null;
  const refresh = openDialog({
    title: `Roll back ${name}`, danger: true, confirmLabel: "Roll back",
    fields: [field("Target", kind), field("Value", target), field("Reason", reason), forceLabel],
    describe: async () => {
      if (!target.value.trim()) return { ready: false, element: h("p", { class: "muted" }, "Choose the target: the preview shows what will happen.") };
      preview = await api(`${P(name)}/rollback/preview?${params()}`);
      const repeated = Object.entries(preview.repeated_output || {});
      const needsForce = repeated.length > 0 || Boolean(preview.refused);
      forceLabel.hidden = !needsForce;
      const list = (items) => (items.length ? h("ul", {}, items.map((t) => h("li", { class: "mono" }, t))) : h("span", { class: "muted" }, " none"));
      const element = h("div", { id: "rollback-preview" },
        h("p", {}, h("strong", {}, `From epoch ${preview.from_epoch} back to epoch ${preview.to_epoch}. `),
          "State, source offsets and sinks return to that cut together; the next epochs are processed again (epoch numbers keep increasing)."),
        h("div", {}, "Tables restored:", list(preview.restored || [])),
        h("div", {}, "Tables emptied (created after the target):", list(preview.emptied || [])),
        (preview.compensated || []).length ? h("div", {}, "Sinks compensated (undo records written):", list(preview.compensated)) : null,
        repeated.length ? h("div", { class: "warn" }, "Sinks that cannot be rolled back will receive their output again:",
          list(repeated.map(([sink, rows]) => `${sink}: ${fmtNum(rows)} rows`))) : null,
        preview.refused ? h("p", { class: "warn", id: "rollback-refused" }, preview.refused) : null);
      return { element, ready: Boolean(reason.value.trim()) && (!needsForce || force.checked) };
    },
    confirm: async () => {
      const body = { [kind.value]: kind.value === "epoch" ? Number(target.value) : target.value.trim(), reason: reason.value, force: force.checked };
      const res = await api(`${P(name)}/rollback`, { method: "POST", body });
      return `Rolled back to epoch ${res.to_epoch ?? preview.to_epoch}.${pendingNote(res)}`;
    },
  });
  force.addEventListener("change", refresh);
  kind.addEventListener("change", refresh);
}

function dialogBranch(name, savepoint = "") {
  const folder = h("input", { type: "text", id: "f-name", placeholder: "whatif", required: true });
  const from = h("input", { type: "text", id: "f-target", value: savepoint, placeholder: "savepoint name or epoch number" });
  openDialog({
    title: `Branch ${name}`,
    fields: [field("New folder (created beside this pipeline's directory)", folder), field("From savepoint or epoch", from)],
    describe: async () => ({
      ready: /^[A-Za-z0-9_.-]+$/.test(folder.value) && !folder.value.startsWith(".") && Boolean(from.value.trim()),
      element: h("p", {}, "Copies the cut of ", h("strong", {}, /^\d+$/.test(from.value.trim()) ? `epoch ${from.value}` : `savepoint "${from.value || "?"}"`),
        ` (state, offsets, sinks) into a new directory "${folder.value || "?"}" beside ${name}'s; ${name} is only read. `
        + "The console serves the branch too; run it with `timelapse run ... --state` on that folder."),
    }),
    confirmLabel: "Create branch",
    confirm: async () => {
      const v = from.value.trim();
      const res = await api(`${P(name)}/branches`, { method: "POST",
        body: /^\d+$/.test(v) ? { name: folder.value, epoch: Number(v) } : { name: folder.value, savepoint: v } });
      await loadMe();
      return `Branch ${res.pipeline || folder.value} created.`;
    },
  });
}

// ---- boot ------------------------------------------------------------------------------------------------------

$("#logout").addEventListener("click", () => { token.clear(); me = null; showLogin(); });
window.addEventListener("hashchange", route);
route();
