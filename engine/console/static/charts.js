// A small SVG line chart: enough to see a trend over the last epochs without shipping a charting library.
import { h } from "./dom.js";
import { fmtNum } from "./format.js";

const PALETTE = ["#2f6fdb", "#e8590c", "#18794e", "#7c3aed", "#c0362c", "#0891b2", "#a16207", "#db2777"];

// lines: {label: [[x, y], ...]}; x is the epoch. Only min/max ticks: the legend and each line's title carry the
// last value, which is what an operator looks for. `unit` follows the values in the legend and the tooltips;
// `empty` is what an empty chart says.
export function lineChart(lines, { width = 420, height = 150, unit = "", empty = "no data yet" } = {}) {
  const u = unit ? ` ${unit}` : "";
  const pad = { l: 48, r: 10, t: 8, b: 20 };
  const all = Object.values(lines).flat();
  const svg = h("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  if (!all.length) {
    svg.append(h("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "empty" }, empty));
    return h("div", {}, svg);
  }
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  // From zero unless negative: a rate that barely moves should not look like it swings.
  const [y0, y1] = [Math.min(0, ...ys), Math.max(...ys)];
  const sx = (x) => pad.l + (x1 === x0 ? 0.5 : (x - x0) / (x1 - x0)) * (width - pad.l - pad.r);
  const sy = (y) => height - pad.b - (y1 === y0 ? 0.5 : (y - y0) / (y1 - y0)) * (height - pad.t - pad.b);
  const tick = (v) => (Math.abs(v) >= 1e6 ? `${fmtNum(v / 1e6)}M` : Math.abs(v) >= 1e4 ? `${fmtNum(v / 1e3)}k` : fmtNum(v));
  svg.append(
    h("line", { class: "axis", x1: pad.l, x2: width - pad.r, y1: sy(y0), y2: sy(y0) }),
    h("line", { class: "axis", x1: pad.l, x2: pad.l, y1: pad.t, y2: height - pad.b }),
    h("line", { class: "axis", x1: pad.l, x2: width - pad.r, y1: sy(y1), y2: sy(y1), "stroke-dasharray": "2 3" }),
    h("text", { x: pad.l - 4, y: sy(y1) + 3, "text-anchor": "end" }, tick(y1)),
    h("text", { x: pad.l - 4, y: sy(y0) + 3, "text-anchor": "end" }, tick(y0)),
    h("text", { x: pad.l, y: height - 5 }, `epoch ${x0}`),
    h("text", { x: width - pad.r, y: height - 5, "text-anchor": "end" }, `epoch ${x1}`));
  const legend = h("div", { class: "legend" });
  Object.entries(lines).forEach(([label, points], i) => {
    const color = PALETTE[i % PALETTE.length];
    const d = points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ");
    const last = points[points.length - 1];
    // A one-point polyline draws nothing: show a dot instead.
    svg.append(points.length === 1
      ? h("circle", { cx: sx(last[0]), cy: sy(last[1]), r: 3, fill: color }, h("title", {}, `${label}: ${fmtNum(last[1])}${u} at epoch ${last[0]}`))
      : h("polyline", { points: d, fill: "none", stroke: color, "stroke-width": 1.6, "stroke-linejoin": "round" },
        h("title", {}, `${label}: ${fmtNum(last[1])}${u} at epoch ${last[0]}`)));
    legend.append(h("span", {}, h("i", { style: `background:${color}` }), `${label} ${fmtNum(last[1])}${u}`));
  });
  return h("div", {}, svg, legend);
}
