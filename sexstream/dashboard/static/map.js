// The all-sky SVG map: graticule with labels, HEALPix density layer, footprints,
// zoom (wheel, buttons) and pan (drag). Knows nothing about the server.
import {
  SCALE, X_MAX, Y_MAX, polygonPath, healpixBoundary, projectLambda, decAtY, lambdaAt,
  unproject, raLabel, decLabel, project, smallCircle,
} from "./sky.js";

const NS = "http://www.w3.org/2000/svg";
const MARGIN_X = 34, MARGIN_Y = 12;
const VIEW = { x: -X_MAX - MARGIN_X, y: -Y_MAX - MARGIN_Y, w: 2 * (X_MAX + MARGIN_X), h: 2 * (Y_MAX + MARGIN_Y) };
// magma-like ramp, dark to bright, for the density layer
export const RAMP = ["#1d1147", "#2c115f", "#45106b", "#5c126e", "#721f81", "#89257f",
  "#a1307e", "#b73779", "#cd4071", "#e1506b", "#f1605d", "#f8765c", "#fb8f66", "#fea772",
  "#febf84", "#fcd69c", "#fcfdbf"];
const GRID_STEPS = [30, 15, 10, 5, 2, 1, 0.5, 0.25, 1 / 6, 1 / 12, 1 / 30, 1 / 60];

const el = (tag, attrs = {}, parent = null) => {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
};

export class SkyMap {
  constructor(svg, { raCenter = 0, onView = () => {}, onCursor = () => {} } = {}) {
    this.svg = svg;
    this.raCenter = raCenter;
    this.onView = onView;
    this.onCursor = onCursor;
    this.k = 1; this.tx = 0; this.ty = 0;
    svg.setAttribute("viewBox", `${VIEW.x} ${VIEW.y} ${VIEW.w} ${VIEW.h}`);
    svg.setAttribute("preserveAspectRatio", "xMidYMid meet");
    const defs = el("defs", {}, svg);
    const clip = el("clipPath", { id: "sky-clip" }, defs);
    this.clipEllipse = el("ellipse", { cx: 0, cy: 0, rx: X_MAX, ry: Y_MAX }, clip);
    this.world = el("g", { id: "world" }, svg);
    this.sky = el("ellipse", { class: "sky", cx: 0, cy: 0, rx: X_MAX, ry: Y_MAX }, this.world);
    const inside = el("g", { "clip-path": "url(#sky-clip)" }, this.world);
    this.grid = el("g", { id: "graticule" }, inside);
    this.density = el("g", { id: "density" }, inside);
    this.footprints = el("g", { id: "footprints" }, inside);
    this.query = el("g", { id: "query" }, inside);  // a cone search: its circle and sources
    this.limb = el("ellipse", { class: "limb", cx: 0, cy: 0, rx: X_MAX, ry: Y_MAX }, this.world);
    this.labels = el("g", { id: "labels" }, svg);
    this._bindPointer();
    this.apply();
  }

  // -- view ---------------------------------------------------------------------------
  apply() {
    this.world.setAttribute("transform", `translate(${this.tx} ${this.ty}) scale(${this.k})`);
    this.svg.classList.toggle("far", this.k < 6); // thicker outlines keep small images visible
    this._sizeMarkers();
    cancelAnimationFrame(this._raf);
    this._raf = requestAnimationFrame(() => { this.drawGraticule(); this.onView(this); });
  }

  /** Visible rectangle in plane coordinates. */
  visible() {
    return { x0: (VIEW.x - this.tx) / this.k, x1: (VIEW.x + VIEW.w - this.tx) / this.k,
             y0: (VIEW.y - this.ty) / this.k, y1: (VIEW.y + VIEW.h - this.ty) / this.k };
  }

  zoomAt(factor, px = 0, py = 0) {
    const k = Math.min(4000, Math.max(1, this.k * factor));
    const f = k / this.k;
    this.tx = px - (px - this.tx) * f;
    this.ty = py - (py - this.ty) * f;
    this.k = k;
    this._clamp();
    this.apply();
  }

  reset() { this.k = 1; this.tx = 0; this.ty = 0; this.apply(); }

  /** Centre the view on plane point (x, y) at zoom k. */
  centreOn(x, y, k) {
    this.k = Math.min(4000, Math.max(1, k));
    this.tx = -x * this.k; this.ty = -y * this.k;
    this._clamp();
    this.apply();
  }

  _clamp() {
    const limX = X_MAX * this.k, limY = Y_MAX * this.k;
    this.tx = Math.max(-limX, Math.min(limX, this.tx));
    this.ty = Math.max(-limY, Math.min(limY, this.ty));
    if (this.k === 1) { this.tx = 0; this.ty = 0; }
  }

  /** viewBox coordinates of a mouse event. */
  _point(ev) {
    const pt = this.svg.createSVGPoint();
    pt.x = ev.clientX; pt.y = ev.clientY;
    const m = this.svg.getScreenCTM();
    return m ? pt.matrixTransform(m.inverse()) : { x: 0, y: 0 };
  }

  _bindPointer() {
    const svg = this.svg;
    svg.addEventListener("wheel", (ev) => {
      ev.preventDefault();
      const p = this._point(ev);
      this.zoomAt(Math.exp(-ev.deltaY * (ev.deltaMode ? 0.05 : 0.0015)), p.x, p.y);
    }, { passive: false });
    let drag = null;
    svg.addEventListener("pointerdown", (ev) => {
      if (ev.button !== 0) return;
      const p = this._point(ev);
      drag = { x: p.x, y: p.y, tx: this.tx, ty: this.ty, moved: false };
    });
    window.addEventListener("pointermove", (ev) => {
      const p = this._point(ev);
      if (drag) {
        const dx = p.x - drag.x, dy = p.y - drag.y;
        if (Math.abs(dx) + Math.abs(dy) > 1.5) drag.moved = true;
        if (drag.moved) {
          if (!svg.hasPointerCapture(ev.pointerId)) svg.setPointerCapture(ev.pointerId);
          svg.classList.add("dragging");
          this.tx = drag.tx + dx; this.ty = drag.ty + dy;
          this._clamp();
          this.apply();
        }
      }
      if (ev.target && svg.contains(ev.target)) {
        this.onCursor(unproject((p.x - this.tx) / this.k, (p.y - this.ty) / this.k, this.raCenter));
      }
    });
    window.addEventListener("pointerup", () => {
      if (drag && drag.moved) this._justDragged = true;
      drag = null;
      svg.classList.remove("dragging");
      setTimeout(() => { this._justDragged = false; }, 0);
    });
    svg.addEventListener("dblclick", (ev) => {
      const p = this._point(ev);
      this.zoomAt(ev.shiftKey ? 0.5 : 2, p.x, p.y);
    });
  }

  // -- graticule ----------------------------------------------------------------------
  drawGraticule() {
    const v = this.visible();
    const decTop = Math.min(90, decAtY(v.y0)), decBot = Math.max(-90, decAtY(v.y1));
    // lambda is widest (|x| fixed) at the band's latitude nearest a pole, narrowest nearest 0
    const far = Math.abs(decTop) > Math.abs(decBot) ? decTop : decBot;
    const near = decBot < 0 && decTop > 0 ? 0 : (Math.abs(decTop) < Math.abs(decBot) ? decTop : decBot);
    const R2D = 180 / Math.PI, cap = (l) => Math.max(-180, Math.min(180, l * R2D));
    const lamLo = cap(v.x0 < 0 ? lambdaAt(v.x0, far) : lambdaAt(v.x0, near));
    const lamHi = cap(v.x1 > 0 ? lambdaAt(v.x1, far) : lambdaAt(v.x1, near));
    // the finest step that keeps the line count readable
    const pick = (span, most) => GRID_STEPS.findLast((s) => span / s <= most) || GRID_STEPS[0];
    const raStep = pick(lamHi - lamLo, 12), decStep = pick(decTop - decBot, 7);
    const sample = Math.min(1, decStep / 4);
    const line = (points) => points.map(([l, b], i) => {
      const [x, y] = projectLambda(l / R2D, b);
      return (i ? "L" : "M") + x.toFixed(4) + " " + y.toFixed(4);
    }).join("");
    let d = "";
    const meridians = [];
    for (let l = Math.ceil(lamLo / raStep) * raStep; l <= lamHi + 1e-9; l += raStep) {
      meridians.push(l);
      const pts = [];
      for (let b = decBot; b < decTop; b += sample) pts.push([l, b]);
      pts.push([l, decTop]);
      d += line(pts);
    }
    const parallels = [];
    for (let b = Math.ceil(decBot / decStep) * decStep; b <= decTop + 1e-9; b += decStep) {
      if (Math.abs(b) >= 90 - 1e-9) continue;
      parallels.push(b);
      const pts = [], lstep = Math.max(raStep / 8, 0.005);
      for (let l = lamLo; l < lamHi; l += lstep) pts.push([l, b]);
      pts.push([lamHi, b]);
      d += line(pts);
    }
    this.grid.replaceChildren(el("path", { d, class: "grid" }));
    this._drawLabels(v, meridians, parallels, decTop, decBot);
  }

  _drawLabels(v, meridians, parallels, decTop, decBot) {
    const out = [];
    const toView = (x, y) => [x * this.k + this.tx, y * this.k + this.ty];
    const inView = ([x, y]) => x > VIEW.x + 6 && x < VIEW.x + VIEW.w - 6 && y > VIEW.y + 4 && y < VIEW.y + VIEW.h - 4;
    // RA labels on the equator when it is in view, else along the bottom of the view
    const raDec = decTop > 0 && decBot < 0 && this.k < 3 ? 0 : decAtY((VIEW.y + VIEW.h - 10 - this.ty) / this.k);
    for (const l of meridians) {
      const [px, py] = projectLambda(l * Math.PI / 180, raDec);
      const p = toView(px, py);
      if (!inView(p) || Math.abs(l) > 179.9) continue;
      const ra = this.raCenter - l;
      const t = el("text", { x: p[0].toFixed(2), y: (p[1] - 1.5).toFixed(2), class: "lab ra" });
      t.textContent = raLabel(ra);
      out.push(t);
    }
    // Dec labels at the left limb, or the left edge of the view when zoomed in
    for (const b of parallels) {
      const [lx, ly] = projectLambda(Math.PI, b);
      const limb = toView(-Math.abs(lx), ly);
      const atLimb = limb[0] - 3 > VIEW.x + 30;  // room left of the limb, else inside the view
      const x = atLimb ? limb[0] - 3 : VIEW.x + 4;
      if (!inView([x + 1, limb[1]])) continue;
      const t = el("text", { x: x.toFixed(2), y: limb[1].toFixed(2), class: atLimb ? "lab dec" : "lab dec inner" });
      t.textContent = decLabel(b);
      out.push(t);
    }
    const px = VIEW.w / Math.max(1, this.svg.getBoundingClientRect().width); // units per pixel
    this.labels.setAttribute("font-size", (11 * px).toFixed(2));
    this.labels.setAttribute("stroke-width", (3 * px).toFixed(2));
    this.labels.replaceChildren(...out);
  }

  // -- layers -------------------------------------------------------------------------
  /** (ra, dec) degrees under a mouse event, or null off the sky. */
  skyAt(ev) {
    const p = this._point(ev);
    return unproject((p.x - this.tx) / this.k, (p.y - this.ty) / this.k, this.raCenter);
  }

  /** Client (page) coordinates {x, y} of (ra, dec) degrees at the current view. */
  clientOf(ra, dec) {
    const [x, y] = project(ra, dec, this.raCenter);
    const pt = this.svg.createSVGPoint();
    pt.x = x * this.k + this.tx; pt.y = y * this.k + this.ty;
    const c = pt.matrixTransform(this.svg.getScreenCTM());
    return { x: c.x, y: c.y };
  }

  /** Draw a cone (centre and radius in degrees) and its sources [{ra, dec, i}]. */
  drawCone(ra, dec, radius, sources) {
    const [cra, cdec] = smallCircle(ra, dec, radius);
    const nodes = [el("path", { d: polygonPath(cra, cdec, this.raCenter, 1, 5), class: "cone" })];
    for (const s of sources) {
      const [x, y] = project(s.ra, s.dec, this.raCenter);
      nodes.push(el("circle", { cx: x.toFixed(6), cy: y.toFixed(6), r: 0, class: "src", "data-i": s.i }));
    }
    this.query.replaceChildren(...nodes);
    this._sizeMarkers();
  }

  clearCone() { this.query.replaceChildren(); }

  /** Source markers keep ~4 screen pixels whatever the zoom. */
  _sizeMarkers() {
    if (!this.query) return;
    const unitsPerPx = VIEW.w / Math.max(1, this.svg.getBoundingClientRect().width);
    const r = (4 * unitsPerPx / this.k).toFixed(6);
    for (const c of this.query.querySelectorAll("circle.src")) c.setAttribute("r", r);
  }

  /** Path data of an image extension's polygon (ra[], dec[] degrees). */
  footprintPath(ra, dec) { return polygonPath(ra, dec, this.raCenter, 4, 4); }

  /** Draw density cells: order, cells[], counts[] -> one path per colour level. */
  drawDensity(order, cells, counts) {
    if (!cells.length) { this.density.replaceChildren(); return null; }
    const max = Math.max(...counts), min = Math.min(...counts);
    const lo = Math.log(Math.max(1, min)), hi = Math.log(Math.max(2, max));
    const paths = RAMP.map(() => []);
    const step = order <= 2 ? 8 : order <= 4 ? 3 : 1;
    for (let i = 0; i < cells.length; i++) {
      const f = hi > lo ? (Math.log(counts[i]) - lo) / (hi - lo) : 1;
      const level = Math.max(0, Math.min(RAMP.length - 1, Math.round(f * (RAMP.length - 1))));
      const [ra, dec] = healpixBoundary(order, cells[i], step);
      paths[level].push(polygonPath(ra, dec, this.raCenter, 1, 3));
    }
    const nodes = [];
    paths.forEach((parts, level) => {
      if (parts.length) nodes.push(el("path", { d: parts.join(""), fill: RAMP[level], class: "cells" }));
    });
    this.density.replaceChildren(...nodes);
    return { min, max };
  }

  /** HEALPix order to ask for at the current zoom (finer when zoomed in). */
  densityOrder(maxOrder) {
    return Math.max(3, Math.min(maxOrder, Math.floor(5 + Math.log2(this.k))));
  }

  scalePerPixel() {
    const r = this.svg.getBoundingClientRect();
    const unitsPerPx = VIEW.w / Math.max(1, r.width);
    return unitsPerPx / this.k / SCALE * 180 / Math.PI; // degrees per pixel at the centre
  }
}
