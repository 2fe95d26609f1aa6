// A light curve as SVG: one point (with its error bar) per image, coloured by filter,
// magnitudes upwards. Knows nothing about the server: it draws what /api/lightcurve gave.
import { filterColour } from "./format.js";

const NS = "http://www.w3.org/2000/svg";
const W = 320, H = 190, M = { l: 54, r: 8, t: 20, b: 30 };

const el = (tag, attrs = {}, text = null) => {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text != null) node.textContent = text;
  return node;
};

/** About `count` round tick values covering [lo, hi]. */
export function ticks(lo, hi, count = 4) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count, mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => s >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
  return out;
}

/** Draw `data` ({points: [[mjd, from, filter, value, error, path]], value, is_mag}) in `svg`. */
export function drawLightCurve(svg, data) {
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const pts = data.points.filter((p) => p[0] != null && p[3] != null);
  if (!pts.length) {
    svg.replaceChildren(el("text", { x: W / 2, y: H / 2, class: "axis-label", "text-anchor": "middle" },
      data.value ? "no measurement" : "no MAG_* or FLUX_* column"));
    return;
  }
  const t0 = Math.floor(Math.min(...pts.map((p) => p[0])));
  const xs = pts.map((p) => p[0] - t0), ys = pts.map((p) => p[3]);
  const lo = (i) => ys[i] - (pts[i][4] || 0), hi = (i) => ys[i] + (pts[i][4] || 0);
  let x0 = Math.min(...xs), x1 = Math.max(...xs);
  let y0 = Math.min(...ys.map((_, i) => lo(i))), y1 = Math.max(...ys.map((_, i) => hi(i)));
  const padX = (x1 - x0) * 0.06 || 0.5, padY = (y1 - y0) * 0.08 || 0.05;
  x0 -= padX; x1 += padX; y0 -= padY; y1 += padY;
  const sx = (x) => M.l + ((x - x0) / (x1 - x0)) * (W - M.l - M.r);
  // magnitudes: brighter (smaller) at the top
  const sy = (y) => data.is_mag ? M.t + ((y - y0) / (y1 - y0)) * (H - M.t - M.b)
    : H - M.b - ((y - y0) / (y1 - y0)) * (H - M.t - M.b);
  const nodes = [el("rect", { x: M.l, y: M.t, width: W - M.l - M.r, height: H - M.t - M.b, class: "frame" })];
  for (const v of ticks(x0, x1)) {
    nodes.push(el("line", { x1: sx(v), x2: sx(v), y1: M.t, y2: H - M.b, class: "grid" }));
    nodes.push(el("text", { x: sx(v), y: H - M.b + 12, class: "tick", "text-anchor": "middle" }, String(v)));
  }
  for (const v of ticks(y0, y1)) {
    nodes.push(el("line", { x1: M.l, x2: W - M.r, y1: sy(v), y2: sy(v), class: "grid" }));
    nodes.push(el("text", { x: M.l - 4, y: sy(v) + 3, class: "tick", "text-anchor": "end" }, String(v)));
  }
  nodes.push(el("text", { x: (M.l + W - M.r) / 2, y: H - 3, class: "axis-label", "text-anchor": "middle" },
    `MJD − ${t0}`));
  nodes.push(el("text", { x: 9, y: (M.t + H - M.b) / 2, class: "axis-label", "text-anchor": "middle",
    transform: `rotate(-90 9 ${(M.t + H - M.b) / 2})` }, data.value || ""));
  const bands = [...new Set(pts.map((p) => p[2] || "?"))].sort();
  pts.forEach((p, i) => {
    const colour = filterColour(p[2]);
    if (p[4] != null) {
      nodes.push(el("line", { x1: sx(xs[i]), x2: sx(xs[i]), y1: sy(lo(i)), y2: sy(hi(i)), stroke: colour, class: "err" }));
    }
    const dot = el("circle", { cx: sx(xs[i]), cy: sy(ys[i]), r: 3.2, fill: colour, class: "pt" });
    dot.append(el("title", {}, `MJD ${p[0].toFixed(5)} (${p[1]})  ${p[2] || "?"}  ${ys[i]} ± ${p[4] ?? "?"}\n${p[5]}`));
    nodes.push(dot);
  });
  bands.forEach((b, k) => {
    const x = W - M.r - 6 - (bands.length - 1 - k) * 34;
    nodes.push(el("circle", { cx: x - 14, cy: 10, r: 3.2, fill: filterColour(b === "?" ? null : b) }));
    nodes.push(el("text", { x: x - 8, y: 13, class: "tick" }, b));
  });
  svg.replaceChildren(...nodes);
}
