// The sources where the user clicks: a cone search (/api/cone) listed beside the map and
// drawn on it; a click on a source (row or marker) draws its light curve (/api/lightcurve).
import { formatRA, formatDec } from "./sky.js";
import { filterColour, fmtInt } from "./format.js";
import { drawLightCurve } from "./curve.js";

const $ = (id) => document.getElementById(id);
const PICK_PX = 10;                         // a click searches this many pixels around
const MIN_R = 1 / 3600, MAX_R = 1;          // degrees
let seq = 0;

function td(text, cls = "", title = "") {
  const c = document.createElement("td");
  c.textContent = text ?? "—";
  if (cls) c.className = cls;
  if (title) c.title = title;
  return c;
}

function readNote(read) {
  return `read ${fmtInt(read.files)} of ${fmtInt(read.of)} files (${(100 * read.fraction).toFixed(2)} % of the table)`;
}

export class SourcesPanel {
  constructor(map, state) {
    this.map = map;
    this.state = state;           // window.sexstream: lastCone / lastCurve for the curious
    this.rows = [];
    $("sources-rows").addEventListener("click", (ev) => {
      const tr = ev.target.closest("tr[data-i]");
      if (tr) this.curve(Number(tr.dataset.i));
    });
    map.query.addEventListener("click", (ev) => {
      const c = ev.target.closest("circle.src");
      if (c) { ev.stopPropagation(); this.curve(Number(c.dataset.i)); }
    });
    map.svg.addEventListener("click", (ev) => {
      if (map._justDragged || ev.defaultPrevented) return;
      const at = map.skyAt(ev);
      if (at) this.search(at[0], at[1], Math.min(MAX_R, Math.max(MIN_R, PICK_PX * map.scalePerPixel())));
    });
    $("close-sources").addEventListener("click", () => { $("sources-panel").hidden = true; map.clearCone(); });
    $("close-curve").addEventListener("click", () => { $("curve-panel").hidden = true; });
  }

  async search(ra, dec, radius) {
    const mine = ++seq;
    const q = new URLSearchParams({ ra: ra.toFixed(7), dec: dec.toFixed(7), radius: `${(radius * 3600).toFixed(3)}arcsec` });
    $("sources-panel").hidden = false;
    $("sources-note").textContent = `searching ${(radius * 3600).toFixed(1)}″ around ${formatRA(ra)} ${formatDec(dec)}…`;
    const res = await fetch(`/api/cone?${q}`);
    const data = await res.json();
    if (mine !== seq) return;
    if (!res.ok) { $("sources-note").textContent = data.error; $("sources-rows").replaceChildren(); return; }
    this.state.lastCone = data;
    this.rows = data.rows;
    const more = data.total > data.rows.length ? ` (the nearest ${fmtInt(data.rows.length)} listed)` : "";
    $("sources-note").textContent = `${fmtInt(data.total)} sources within ${data.radius_arcsec.toFixed(1)}″ of ` +
      `${formatRA(data.ra)} ${formatDec(data.dec)}${more} · ${readNote(data.read)} · ${data.ms} ms`;
    $("sources-rows").replaceChildren(...data.rows.map((r, i) => {
      const tr = document.createElement("tr");
      tr.dataset.i = i;
      const f = td(r[5] || "?", "filter");
      f.style.color = filterColour(r[5]);
      tr.append(td(r[0].toFixed(2), "num"), td(r[3] == null ? "—" : r[3].toFixed(2), "num"), f,
        td(r[8] == null ? "—" : r[8].toFixed(3), "num", r[9] === "header" ? "MJD from the header" : "ingest time"),
        td(r[6], "file", r[7]));
      return tr;
    }));
    this.map.drawCone(data.ra, data.dec, data.radius_arcsec / 3600,
      data.rows.map((r, i) => ({ ra: r[1], dec: r[2], i })));
    document.body.dataset.cones = (Number(document.body.dataset.cones) || 0) + 1;
  }

  async curve(i) {
    const row = this.rows[i];
    if (!row) return;
    for (const tr of $("sources-rows").querySelectorAll("tr.sel")) tr.classList.remove("sel");
    $("sources-rows").querySelector(`tr[data-i="${i}"]`)?.classList.add("sel");
    const q = new URLSearchParams({ ra: row[1].toFixed(7), dec: row[2].toFixed(7), radius: "1arcsec" });
    $("curve-panel").hidden = false;
    $("curve-note").textContent = `light curve at ${formatRA(row[1])} ${formatDec(row[2])}…`;
    const res = await fetch(`/api/lightcurve?${q}`);
    const data = await res.json();
    if (!res.ok) { $("curve-note").textContent = data.error; return; }
    this.state.lastCurve = data;
    const ingest = data.points.filter((p) => p[1] !== "header").length;
    $("curve-note").textContent = `${data.points.length} images saw a source within 1″ of ` +
      `${formatRA(data.ra)} ${formatDec(data.dec)}` + (ingest ? ` (${ingest} timed by ingest, no header time)` : "") +
      ` · ${data.ms} ms`;
    drawLightCurve($("curve"), data);
    document.body.dataset.curves = (Number(document.body.dataset.curves) || 0) + 1;
  }
}
