// The dashboard page: loads /api/state, follows /events (pushed at each Delta commit),
// filters by the rolling window, draws the map and fills counters and tables.
import { SkyMap } from "./map.js";
import { formatRA, formatDec, project } from "./sky.js";
import { filterColour, utc, mjdToUnix, ago, fmtInt } from "./format.js";
import { SourcesPanel } from "./sources.js";

const WINDOWS = { "1h": 3600, night: 16 * 3600, "24h": 86400, week: 7 * 86400, all: null };
const $ = (id) => document.getElementById(id);
const state = {
  rows: new Map(),        // rid -> images row (every verdict)
  latest: new Map(),      // image id -> its latest row
  window: "night", axis: "ingest", showFootprints: true, showDensity: true,
  hiddenFilters: new Set(), selected: null, sink: "", sourcesTotal: 0,
  densityAvailable: false, densityOrder: 10, lastCommit: { images: null, sources: null },
  lastPushMs: null, loading: true, events: 0, densitySeq: 0, densityKey: "",
};
// for tests and the curious: window.sexstream.events counts pushed commits
window.sexstream = { state, get events() { return state.events; } };

// -- window -----------------------------------------------------------------------------
function maxObs() {
  let m = -Infinity;
  for (const r of state.latest.values()) if (r.obs_mjd != null && r.obs_mjd > m) m = r.obs_mjd;
  return m;
}
function windowStart() {
  const w = WINDOWS[state.window];
  if (w == null) return null;
  if (state.axis === "obs") return maxObs() - w / 86400;
  return Math.floor((Date.now() / 1000 - w) / 10) * 10;
}
function inWindow(row, start) {
  if (start == null) return true;
  if (state.axis === "obs") return row.obs_mjd != null && row.obs_mjd >= start;
  return row.t != null && row.t >= start;
}
function windowRows() {
  const start = windowStart();
  return [...state.latest.values()].filter((r) => inWindow(r, start));
}

// -- map --------------------------------------------------------------------------------
const map = new SkyMap($("sky"), {
  onView: () => scheduleDensity(),
  onCursor: (c) => { $("cursor").textContent = c ? `RA ${formatRA(c[0])}  Dec ${formatDec(c[1])}` : "RA —  Dec —"; },
});

function footprintNodes(row) {
  if (row._nodes) return row._nodes;
  const colour = filterColour(row.filter);
  row._nodes = row.fp.map(([ext, ra, dec]) => {
    const p = document.createElementNS("http://www.w3.org/2000/svg", "path");
    p.setAttribute("d", map.footprintPath(ra, dec));
    p.setAttribute("class", `fp ${row.status === "ok" ? "ok" : "bad"}`);
    p.setAttribute("stroke", row.status === "ok" ? colour : "#ef4444");
    p.setAttribute("fill", colour);
    p.dataset.rid = row.rid;
    p.dataset.ext = ext ?? "";
    return p;
  });
  return row._nodes;
}

function visibleOnMap(row) {
  return state.showFootprints && !state.hiddenFilters.has(row.filter || "?");
}

function renderFootprints() {
  const frag = document.createDocumentFragment();
  const rows = windowRows().sort((a, b) => a.rid - b.rid);
  for (const row of rows) if (visibleOnMap(row)) for (const n of footprintNodes(row)) frag.appendChild(n);
  map.footprints.replaceChildren(frag);
  markSelected();
}

function appendFootprints(rows) {
  const start = windowStart();
  for (const row of rows) {
    if (!inWindow(row, start) || !visibleOnMap(row) || state.latest.get(row.id) !== row) continue;
    for (const n of footprintNodes(row)) {
      n.classList.add("fresh");
      setTimeout(() => n.classList.remove("fresh"), 4000);
      map.footprints.appendChild(n);
    }
  }
}

let densityTimer = null;
function scheduleDensity() {
  clearTimeout(densityTimer);
  densityTimer = setTimeout(fetchDensity, 120);
}
async function fetchDensity(force = false) {
  if (!state.showDensity || !state.densityAvailable) { map.drawDensity(0, [], []); drawColourBar(null); return; }
  const order = map.densityOrder(state.densityOrder);
  const start = windowStart();
  const q = new URLSearchParams({ order, axis: state.axis });
  if (start != null && Number.isFinite(start)) q.set("since", start);
  const key = q.toString() + "|" + state.sourcesTotal + "|" + state.rows.size;
  if (!force && key === state.densityKey) return;
  const seq = ++state.densitySeq;
  const res = await fetch(`/api/density?${q}`);
  if (!res.ok || seq !== state.densitySeq) return;
  const data = await res.json();
  state.densityKey = key;
  drawColourBar(map.drawDensity(data.order, data.cells, data.counts), data.order);
}

function drawColourBar(range, order) {
  const box = $("colourbar");
  if (!range) { box.hidden = true; return; }
  box.hidden = false;
  $("cb-min").textContent = fmtInt(range.min);
  $("cb-max").textContent = fmtInt(range.max);
  $("cb-title").textContent = `sources / HEALPix cell (order ${order})`;
}

function drawLegend(rows) {
  const counts = new Map();
  for (const r of rows) counts.set(r.filter || "?", (counts.get(r.filter || "?") || 0) + 1);
  const items = [...counts.entries()].sort((a, b) => a[0].localeCompare(b[0])).map(([f, n]) => {
    const li = document.createElement("li");
    li.className = state.hiddenFilters.has(f) ? "off" : "";
    li.dataset.filter = f;
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.backgroundColor = filterColour(f === "?" ? null : f);
    li.append(sw, document.createTextNode(`${f}`));
    const c = document.createElement("span");
    c.className = "n"; c.textContent = fmtInt(n);
    li.append(c);
    li.title = "show / hide this filter";
    return li;
  });
  $("filters").replaceChildren(...items);
}

// -- counters and tables ----------------------------------------------------------------
function median(values) {
  if (!values.length) return null;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function renderCounters(rows) {
  const ok = rows.filter((r) => r.status === "ok");
  const failed = rows.filter((r) => r.status === "failed").length;
  const incomplete = rows.filter((r) => r.status !== "ok" && r.status !== "failed").length;
  $("n-ok").textContent = fmtInt(ok.length);
  $("n-failed").textContent = fmtInt(failed + incomplete);
  $("n-failed-sub").textContent = incomplete ? `${failed} failed · ${incomplete} incomplete` : "failed";
  $("n-sources").textContent = fmtInt(ok.reduce((s, r) => s + (r.n || 0), 0));
  $("n-sources-sub").textContent = `${fmtInt(state.sourcesTotal)} rows in table`;
  const batches = new Set(rows.map((r) => r.batch));
  $("n-batches").textContent = fmtInt(batches.size);
  const lastBatch = Math.max(-1, ...[...state.rows.values()].map((r) => r.batch ?? -1));
  $("n-batches-sub").textContent = lastBatch >= 0 ? `latest #${lastBatch}` : "—";
  const lagRows = [...state.rows.values()].filter((r) => r.batch === lastBatch && r.mtime != null && r.t != null);
  const lag = median(lagRows.map((r) => r.t - r.mtime));
  $("lag").textContent = lag == null ? "—" : `${lag.toFixed(1)} s`;
  renderClock();
}

function renderClock() {
  const times = [state.lastCommit.images, state.lastCommit.sources].filter((t) => t != null);
  const last = times.length ? Math.max(...times) : null;
  $("last-commit").textContent = ago(last);
  $("last-commit-sub").textContent = last ? utc(last, false) + " UTC" : "no commit yet";
  $("push").textContent = state.lastPushMs == null ? "—" : `${Math.max(0, state.lastPushMs).toFixed(0)} ms`;
}

function cell(text, cls = "", title = "") {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  if (title) td.title = title;
  return td;
}

function renderTables(rows) {
  const recent = [...rows].sort((a, b) => (b.t - a.t) || (b.rid - a.rid)).slice(0, 14);
  $("recent").replaceChildren(...recent.map((r) => {
    const tr = document.createElement("tr");
    tr.dataset.rid = r.rid;
    const sw = cell(r.filter || "?", "filter");
    sw.style.color = filterColour(r.filter);
    tr.append(cell(utc(r.t, false)), cell(r.file, "file", r.path), sw,
      cell(r.status, `status ${r.status}`), cell(fmtInt(r.n), "num"),
      cell(r.dur == null ? "—" : `${r.dur.toFixed(1)} s`, "num"));
    return tr;
  }));
  const bad = rows.filter((r) => r.status !== "ok").sort((a, b) => b.t - a.t).slice(0, 10);
  $("failures").replaceChildren(...bad.map((r) => {
    const tr = document.createElement("tr");
    tr.dataset.rid = r.rid;
    tr.append(cell(utc(r.t, false)), cell(r.file, "file", r.path), cell(r.status, `status ${r.status}`),
      cell(r.reason || "—", "reason", r.reason || ""));
    return tr;
  }));
  $("no-failures").hidden = bad.length > 0;
}

function renderAll() {
  const rows = windowRows();
  renderFootprints();
  renderCounters(rows);
  renderTables(rows);
  drawLegend(rows);
  scheduleDensity();
  $("loading").hidden = !state.loading;
}

// -- details ----------------------------------------------------------------------------
function centreOf(row) {
  const pts = row.fp.flatMap(([, ra, dec]) => ra.map((a, i) => [a, dec[i]]));
  if (!pts.length) return null;
  const x = pts.reduce((s, p) => s + Math.cos(p[0] * Math.PI / 180), 0);
  const y = pts.reduce((s, p) => s + Math.sin(p[0] * Math.PI / 180), 0);
  const ra = (Math.atan2(y, x) * 180 / Math.PI + 360) % 360;
  return [ra, pts.reduce((s, p) => s + p[1], 0) / pts.length];
}

function describe(row, ext) {
  const c = centreOf(row);
  const lines = [
    ["file", row.file], ["filter", row.filter || "—"],
    ["status", row.status + (row.reason ? ` — ${row.reason}` : "")],
    ["sources", fmtInt(row.n)],
    ["observed", row.obs_mjd != null ? `${utc(mjdToUnix(row.obs_mjd))} UTC (MJD ${row.obs_mjd.toFixed(5)})` : "—"],
    ["ingested", `${utc(row.t)} UTC · batch ${row.batch}`],
  ];
  if (ext !== undefined) lines.push(["extension", ext]);
  if (c) lines.push(["centre", `${formatRA(c[0])} ${formatDec(c[1])}`]);
  return lines;
}

function fillDl(dl, lines) {
  dl.replaceChildren(...lines.flatMap(([k, v]) => {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v;
    return [dt, dd];
  }));
}

function select(rid, { zoom = false } = {}) {
  const row = state.rows.get(Number(rid));
  state.selected = row ? row.rid : null;
  markSelected();
  const box = $("selected");
  if (!row) { box.hidden = true; return; }
  box.hidden = false;
  fillDl($("selected-dl"), [...describe(row), ["path", row.path], ["host", row.host || "—"],
    ["duration", row.dur == null ? "—" : `${row.dur.toFixed(2)} s, ${row.att ?? 1} attempt(s)`],
    ["image_id", row.id]]);
  const c = centreOf(row);
  if (zoom && c) { const [x, y] = project(c[0], c[1], map.raCenter); map.centreOn(x, y, 90); }
}

function markSelected() {
  for (const n of map.footprints.querySelectorAll(".fp.sel")) n.classList.remove("sel");
  const row = state.rows.get(state.selected);
  if (row && row._nodes) for (const n of row._nodes) { n.classList.add("sel"); n.parentNode?.appendChild(n); }
}

function fitToData() {
  const nodes = map.footprints.querySelectorAll(".fp");
  if (!nodes.length) { map.reset(); return; }
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const n of nodes) {
    const b = n.getBBox();
    x0 = Math.min(x0, b.x); x1 = Math.max(x1, b.x + b.width);
    y0 = Math.min(y0, b.y); y1 = Math.max(y1, b.y + b.height);
  }
  const k = Math.min(566 / ((x1 - x0) * 1.3 + 1e-6), 283 / ((y1 - y0) * 1.3 + 1e-6));
  map.centreOn((x0 + x1) / 2, (y0 + y1) / 2, k);
}

// -- data -------------------------------------------------------------------------------
function addRows(rows) {
  const added = [];
  for (const row of rows) {
    if (state.rows.has(row.rid)) continue;
    state.rows.set(row.rid, row);
    const prev = state.latest.get(row.id);
    if (!prev || prev.rid < row.rid) {
      if (prev && prev._nodes) for (const n of prev._nodes) n.remove();
      state.latest.set(row.id, row);
    }
    added.push(row);
  }
  return added;
}

async function loadState() {
  const res = await fetch("/api/state");
  if (!res.ok) return;
  const s = await res.json();
  state.rows.clear(); state.latest.clear();
  addRows(s.images);
  state.sink = s.sink; state.sourcesTotal = s.sources; state.loading = s.loading;
  state.densityAvailable = s.density; state.densityOrder = s.density_order;
  state.lastCommit = s.last_commit;
  $("sink").textContent = s.sink;
  $("sink").title = s.sink;
  state.densityKey = "";
  renderAll();
}

function onEvent(ev) {
  if (ev.type === "hello") return;
  if (ev.type === "reset") { loadState(); return; }
  state.events += 1;
  state.lastPushMs = Date.now() - ev.visible_ms;
  state.lastCommit[ev.table] = ev.visible_ms / 1000;
  if (ev.type === "images") {
    const added = addRows(ev.rows);
    appendFootprints(added);
    const rows = windowRows();
    renderCounters(rows); renderTables(rows); drawLegend(rows);
    markSelected();
  } else if (ev.type === "sources") {
    state.sourcesTotal = ev.total;
    state.densityAvailable = state.densityAvailable || ev.rows > 0;
    renderCounters(windowRows());
    scheduleDensity();
  }
  document.body.dataset.events = state.events;
}

function connect() {
  const es = new EventSource("/events");
  es.onopen = () => { $("live").className = "live on"; $("live-text").textContent = "live"; loadState(); };
  es.onerror = () => { $("live").className = "live off"; $("live-text").textContent = "reconnecting…"; };
  es.onmessage = (m) => onEvent(JSON.parse(m.data));
}

// -- controls ---------------------------------------------------------------------------
function bindSegment(id, key, after) {
  const box = $(id);
  box.addEventListener("click", (ev) => {
    const b = ev.target.closest("button[data-value]");
    if (!b) return;
    state[key] = b.dataset.value;
    for (const o of box.querySelectorAll("button")) o.classList.toggle("active", o === b);
    after();
  });
  for (const o of box.querySelectorAll("button")) o.classList.toggle("active", o.dataset.value === state[key]);
}

bindSegment("windows", "window", renderAll);
bindSegment("axis", "axis", renderAll);
$("layer-fp").addEventListener("change", (e) => { state.showFootprints = e.target.checked; renderFootprints(); });
$("layer-density").addEventListener("change", (e) => { state.showDensity = e.target.checked; fetchDensity(true); });
$("zoom-in").addEventListener("click", () => map.zoomAt(2));
$("zoom-out").addEventListener("click", () => map.zoomAt(0.5));
$("zoom-reset").addEventListener("click", () => map.reset());
$("zoom-fit").addEventListener("click", fitToData);
$("filters").addEventListener("click", (ev) => {
  const li = ev.target.closest("li[data-filter]");
  if (!li) return;
  const f = li.dataset.filter;
  if (state.hiddenFilters.has(f)) state.hiddenFilters.delete(f); else state.hiddenFilters.add(f);
  renderFootprints(); drawLegend(windowRows());
});
for (const id of ["recent", "failures"]) {
  $(id).addEventListener("click", (ev) => {
    const tr = ev.target.closest("tr[data-rid]");
    if (tr) select(tr.dataset.rid, { zoom: true });
  });
}
$("close-selected").addEventListener("click", () => select(null));

const tip = $("tooltip");
function placeTip(ev) {
  const box = $("map-wrap").getBoundingClientRect();
  const x = ev.clientX - box.left + 14, y = ev.clientY - box.top + 14;
  tip.style.left = `${Math.max(4, Math.min(x, box.width - tip.offsetWidth - 8))}px`;
  tip.style.top = `${Math.max(4, Math.min(y, box.height - tip.offsetHeight - 8))}px`;
}
map.footprints.addEventListener("pointerover", (ev) => {
  const p = ev.target.closest(".fp");
  const row = p && state.rows.get(Number(p.dataset.rid));
  if (!row || map.svg.classList.contains("dragging")) return;
  fillDl($("tooltip-dl"), describe(row, p.dataset.ext));
  tip.hidden = false;
  placeTip(ev);
});
map.footprints.addEventListener("pointerout", () => { tip.hidden = true; });
map.svg.addEventListener("pointermove", (ev) => {
  if (map.svg.classList.contains("dragging")) tip.hidden = true;
  else if (!tip.hidden) placeTip(ev);
});
map.footprints.addEventListener("click", (ev) => {
  if (map._justDragged) return;
  const p = ev.target.closest(".fp");
  if (p) select(p.dataset.rid);
});

const sources = new SourcesPanel(map, window.sexstream);
// for tests and the curious: where a sky position is on the page, and a view centred on it
window.sexstream.screenOf = (ra, dec) => map.clientOf(ra, dec);
window.sexstream.view = (ra, dec, k) => { const [x, y] = project(ra, dec, map.raCenter); map.centreOn(x, y, k); };

setInterval(renderClock, 1000);
setInterval(() => { if (WINDOWS[state.window] != null) renderAll(); }, 30000);
connect();
