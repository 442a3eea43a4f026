// The two drawn graphs: the version tree (tree page) and the plan graph (state page). Both lay themselves out
// here, in a few lines, rather than with a graph library: the graphs are small and their shapes are known.
import { h } from "./dom.js";
import { cellText, enc, fmtTime, folderName, short } from "./format.js";

// One column per node in history order and one lane (row) per line of history, so a rollback or a branch shows
// as a step to another lane. Clicking a node fills `details` with its fields and links to its state.
export function drawTree(name, tree, details) {
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
  const select = (g, n) => {
    svg.querySelectorAll(".node.selected").forEach((el) => el.classList.remove("selected"));
    g.classList.add("selected");
    const epoch = n.kind === "run" ? n.last : n.epoch;
    const fields = ["kind", "label", "epoch", "first", "last", "at", "user", "reason"].filter((k) => n[k] !== null && n[k] !== undefined && n[k] !== "");
    details.replaceChildren(h("dl", { class: "details" }, fields.map((k) => [h("dt", {}, k), h("dd", {}, k === "at" ? fmtTime(n[k]) : cellText(n[k]))])),
      h("div", { class: "actions" },
        // one link per epoch, oldest first: a run links its first and its last epoch
        n.kind === "run" && n.first !== n.last && n.first !== null && n.first !== undefined
          ? h("a", { href: `#/p/${enc(name)}/state?at=${n.first}`, id: "tree-state-link-first" }, `state at epoch ${n.first}`) : null,
        (n.kind === "run" || (n.kind === "savepoint" && !n.deleted)) && epoch !== null && epoch !== undefined
          ? h("a", { href: `#/p/${enc(name)}/state?at=${epoch}`, id: "tree-state-link" }, `state at epoch ${epoch}`) : null,
        n.pipeline ? h("a", { href: `#/p/${enc(n.pipeline)}`, id: "tree-branch-link" }, `Open pipeline ${n.pipeline}`) : null));
  };
  for (const n of nodes) {
    const { x, y } = pos.get(n.id);
    const shape = n.kind === "run" ? h("rect", { x: x - 45, y: y - 14, width: 90, height: 28, rx: 6 })
      : n.kind === "savepoint" ? h("path", { d: `M${x},${y - 13} L${x + 13},${y} L${x},${y + 13} L${x - 13},${y} Z` })
      : h("circle", { cx: x, cy: y, r: 11 });
    const label = nodeLabel(n);
    const g = h("g", { class: `node ${n.kind}`, dataset: { id: n.id, kind: n.kind, epoch: n.epoch ?? n.last ?? "" },
      tabindex: 0, onclick: () => select(g, n) },
    h("title", {}, [`${n.kind}: ${n.label || label}`, n.path && `path: ${n.path}`, n.parent && `parent: ${n.parent}`,
      n.user && `by ${n.user}`, n.reason && `reason: ${n.reason}`].filter(Boolean).join("\n")), shape,
    h("text", { x, y: n.kind === "run" ? y + 4 : y + 28, "text-anchor": "middle" }, short(label, 22)));
    svg.append(g);
  }
  return h("div", { class: "scroll" }, svg);
}

// A node's label under its shape, short enough for its column (the whole text is in the node's tooltip): a run
// its epochs, a savepoint its name, a branch its folder, the parent of a branch its folder and epoch.
function nodeLabel(n) {
  switch (n.kind) {
    case "run": return n.first === n.last ? `epoch ${n.first}` : `epochs ${n.first}–${n.last}`;
    case "savepoint": return n.name ? (n.deleted ? `${short(n.name, 12)} (deleted)` : `'${short(n.name, 19)}'`) : n.label;
    case "branch": return n.path ? `branch ${short(folderName(n.path), 15)}` : n.label;
    case "branched_from": return n.parent ? `from ${short(folderName(n.parent), 11)} @ ${n.epoch}` : n.label;
    case "rollback": return n.from_epoch !== undefined && n.from_epoch !== null ? `rollback ${n.from_epoch} → ${n.epoch}` : n.label;
    case "retention": return n.epoch !== null && n.epoch !== undefined ? `retention < ${n.epoch}` : n.label;
    default: return n.label || n.kind;
  }
}

// Layered layout: a node's layer is one more than its deepest input; within a layer, plan order. Stateful nodes
// are the ones with something to look at, so only they are clickable (to that operator's state).
export function drawPlan(name, plan, selected) {
  const byId = new Map(plan.nodes.map((n) => [n.id, n]));
  const layer = new Map();
  const depth = (n, seen = new Set()) => {
    if (layer.has(n.id)) return layer.get(n.id);
    if (seen.has(n.id)) return 0;   // a cycle would be a bug in the plan; draw it rather than recurse forever
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
    const offset = ((tall - nodes.length) * (H + gy)) / 2;   // centre short layers against the tallest
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
