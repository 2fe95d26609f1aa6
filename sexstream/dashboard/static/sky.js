// Sky geometry for the dashboard: Mollweide projection (RA increasing to the left),
// HEALPix nested cell outlines, and SVG path strings. No dependencies.
//
// Projection plane: Mollweide with radius SCALE, x right, y DOWN (SVG), so the map
// spans x in [-2*sqrt2, 2*sqrt2]*SCALE and y in [-sqrt2, sqrt2]*SCALE.

export const SCALE = 100;
const SQRT2 = Math.SQRT2;
const D2R = Math.PI / 180;
export const X_MAX = 2 * SQRT2 * SCALE;
export const Y_MAX = SQRT2 * SCALE;

/** Auxiliary angle theta of Mollweide for latitude phi (radians): 2t + sin 2t = pi sin phi. */
function mollTheta(phi) {
  if (Math.abs(phi) >= Math.PI / 2 - 1e-12) return Math.sign(phi) * Math.PI / 2;
  const target = Math.PI * Math.sin(phi);
  let t = phi;
  for (let i = 0; i < 30; i++) {
    const f = 2 * t + Math.sin(2 * t) - target;
    const d = f / (2 + 2 * Math.cos(2 * t));
    t -= d;
    if (Math.abs(d) < 1e-10) break;
  }
  return t;
}

/** Longitude offset lambda (radians, in (-pi, pi]) of RA from the map centre; RA grows left. */
export function lambdaOf(ra, raCenter) {
  let d = ((ra - raCenter) % 360 + 540) % 360 - 180; // (-180, 180]
  return -d * D2R;
}

/** Plane coordinates [x, y] of (lambda, dec): lambda radians (may exceed pi), dec degrees. */
export function projectLambda(lambda, dec) {
  const t = mollTheta(dec * D2R);
  return [(2 * SQRT2 / Math.PI) * lambda * Math.cos(t) * SCALE, -SQRT2 * Math.sin(t) * SCALE];
}

/** Plane coordinates of (ra, dec) in degrees. */
export function project(ra, dec, raCenter) {
  return projectLambda(lambdaOf(ra, raCenter), dec);
}

/** (ra, dec) degrees at plane point (x, y), or null outside the ellipse. */
export function unproject(x, y, raCenter) {
  const sy = -y / (SQRT2 * SCALE);
  if (Math.abs(sy) > 1) return null;
  const t = Math.asin(sy);
  const dec = Math.asin((2 * t + Math.sin(2 * t)) / Math.PI) / D2R;
  const c = Math.cos(t);
  const lambda = c < 1e-12 ? 0 : (Math.PI * x / SCALE) / (2 * SQRT2 * c);
  if (Math.abs(lambda) > Math.PI) return null;
  const ra = ((raCenter - lambda / D2R) % 360 + 360) % 360;
  return [ra, dec];
}

/** Latitude (degrees) of the plane row y. */
export function decAtY(y) {
  const sy = Math.max(-1, Math.min(1, -y / (SQRT2 * SCALE)));
  const t = Math.asin(sy);
  return Math.asin((2 * t + Math.sin(2 * t)) / Math.PI) / D2R;
}

/** Lambda (radians) at plane x on the row of latitude dec (degrees). */
export function lambdaAt(x, dec) {
  const c = Math.cos(mollTheta(dec * D2R));
  if (c < 1e-9) return x === 0 ? 0 : Math.sign(x) * Infinity; // at a pole every meridian meets
  return (Math.PI * x / SCALE) / (2 * SQRT2 * c);
}

const fmt = (v, digits) => v.toFixed(digits).replace(/\.?0+$/, "") || "0";

/**
 * SVG path data of a spherical polygon (vertex arrays ra[], dec[] in degrees), with
 * edges densified to `steps` segments, drawn twice when it straddles the map's edge.
 */
export function polygonPath(ra, dec, raCenter, steps = 1, digits = 3) {
  const n = ra.length;
  const lams = [], decs = [];
  const l0 = lambdaOf(ra[0], raCenter);
  for (let i = 0; i < n; i++) {
    const j = (i + 1) % n;
    for (let s = 0; s < steps; s++) {
      const f = s / steps;
      let dra = ((ra[j] - ra[i]) % 360 + 540) % 360 - 180;
      const r = ra[i] + f * dra, d = dec[i] + f * (dec[j] - dec[i]);
      let l = lambdaOf(r, raCenter);
      l = l0 + ((l - l0 + 3 * Math.PI) % (2 * Math.PI)) - Math.PI; // continuous
      lams.push(l); decs.push(d);
    }
  }
  const copies = [0];
  if (Math.max(...lams) > Math.PI) copies.push(-2 * Math.PI);
  if (Math.min(...lams) < -Math.PI) copies.push(2 * Math.PI);
  let out = "";
  for (const shift of copies) {
    for (let i = 0; i < lams.length; i++) {
      const [x, y] = projectLambda(lams[i] + shift, decs[i]);
      out += (i ? "L" : "M") + fmt(x, digits) + " " + fmt(y, digits);
    }
    out += "Z";
  }
  return out;
}

/** [ra[], dec[]] degrees of `n` points on the small circle of `radius` degrees around (ra, dec). */
export function smallCircle(ra, dec, radius, n = 72) {
  const p1 = dec * D2R, l1 = ra * D2R, d = radius * D2R;
  const ras = [], decs = [];
  for (let i = 0; i < n; i++) {
    const t = (2 * Math.PI * i) / n;
    const p2 = Math.asin(Math.sin(p1) * Math.cos(d) + Math.cos(p1) * Math.sin(d) * Math.cos(t));
    const l2 = l1 + Math.atan2(Math.sin(t) * Math.sin(d) * Math.cos(p1), Math.cos(d) - Math.sin(p1) * Math.sin(p2));
    ras.push(((l2 / D2R) % 360 + 360) % 360);
    decs.push(p2 / D2R);
  }
  return [ras, decs];
}

// --- HEALPix, nested scheme (after healpix_base: nest2xyf + xyf2loc) ----------------
const JRLL = [2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4];
const JPLL = [1, 3, 5, 7, 0, 2, 4, 6, 1, 3, 5, 7];

function compressBits(v) {
  let r = v & 0x55555555;
  r = (r | (r >>> 1)) & 0x33333333;
  r = (r | (r >>> 2)) & 0x0f0f0f0f;
  r = (r | (r >>> 4)) & 0x00ff00ff;
  r = (r | (r >>> 8)) & 0x0000ffff;
  return r;
}

/** [lon, lat] degrees of the point (x, y) in [0, 1]^2 of HEALPix base face `face`. */
function faceToLonLat(x, y, face) {
  const jr = JRLL[face] - x - y;
  let nr, z;
  if (jr < 1) { nr = jr; z = 1 - nr * nr / 3; }
  else if (jr > 3) { nr = 4 - jr; z = nr * nr / 3 - 1; }
  else { nr = 1; z = (2 - jr) * 2 / 3; }
  let tmp = JPLL[face] * nr + x - y;
  if (tmp < 0) tmp += 8;
  if (tmp >= 8) tmp -= 8;
  const phi = nr < 1e-15 ? 0 : (Math.PI / 4 * tmp) / nr;
  return [phi / D2R, Math.asin(Math.max(-1, Math.min(1, z))) / D2R];
}

/** Outline of nested cell `pix` at `order` (<= 13): arrays [ra[], dec[]] of 4*step points. */
export function healpixBoundary(order, pix, step = 1) {
  const nside = 1 << order, npface = nside * nside;
  const face = Math.floor(pix / npface), ipf = pix - face * npface;
  const ix = compressBits(ipf), iy = compressBits(ipf >>> 1);
  const xc = (ix + 0.5) / nside, yc = (iy + 0.5) / nside, dc = 0.5 / nside;
  const d = 1 / (step * nside);
  const ra = [], dec = [];
  const push = (x, y) => { const [l, b] = faceToLonLat(x, y, face); ra.push(l); dec.push(b); };
  for (let i = 0; i < step; i++) push(xc + dc - i * d, yc + dc);
  for (let i = 0; i < step; i++) push(xc - dc, yc + dc - i * d);
  for (let i = 0; i < step; i++) push(xc - dc + i * d, yc - dc);
  for (let i = 0; i < step; i++) push(xc + dc, yc - dc + i * d);
  return [ra, dec];
}

// --- formatting ---------------------------------------------------------------------
const pad = (v, w) => String(v).padStart(w, "0");

/** RA degrees as "HHhMMmSS.Ss". */
export function formatRA(ra) {
  let s = ((ra % 360) + 360) % 360 / 15 * 3600;
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  return `${pad(h, 2)}h${pad(m, 2)}m${s.toFixed(1).padStart(4, "0")}s`;
}

/** Dec degrees as "+DD°MM'SS\"". */
export function formatDec(dec) {
  const sign = dec < 0 ? "-" : "+";
  let s = Math.abs(dec) * 3600;
  const d = Math.floor(s / 3600); s -= d * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  return `${sign}${pad(d, 2)}°${pad(m, 2)}'${pad(Math.round(s) % 60, 2)}"`;
}

/** Label of a graticule meridian at RA degrees (hours, with minutes when needed). */
export function raLabel(ra) {
  const mins = Math.round((((ra % 360) + 360) % 360) * 4);
  const h = Math.floor(mins / 60) % 24, m = mins % 60;
  return m ? `${h}h${pad(m, 2)}m` : `${h}h`;
}

/** Label of a graticule parallel at Dec degrees. */
export function decLabel(dec) {
  const r = Math.round(dec * 60) / 60;
  const whole = Math.trunc(r), mins = Math.round(Math.abs(r - whole) * 60);
  const sign = r > 0 ? "+" : r < 0 ? "−" : "";
  return mins ? `${sign}${Math.abs(whole)}°${pad(mins, 2)}'` : `${sign}${Math.abs(whole)}°`;
}
