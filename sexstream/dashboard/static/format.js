// Formatting for the dashboard page: filter colours (the table sexstream.plot uses too),
// UTC times, relative ages, counts.

const FILTER_COLOURS = {
  u: "#a78bfa", g: "#4ade80", r: "#f87171", i: "#fb923c", z: "#e879f9", y: "#facc15",
  Y: "#facc15", J: "#67e8f9", H: "#60a5fa", K: "#c084fc", Ks: "#c084fc", B: "#60a5fa",
  V: "#4ade80", R: "#f87171", I: "#fb923c", Ha: "#ef4444", OIII: "#2dd4bf", SII: "#b91c1c",
  L: "#e5e7eb", clear: "#e5e7eb",
};
const PALETTE = ["#38bdf8", "#a3e635", "#f472b6", "#fcd34d", "#818cf8", "#34d399", "#fda4af"];
const MJD_UNIX = 40587; // MJD of 1970-01-01

export function filterColour(name) {
  if (!name) return "#94a3b8";
  if (FILTER_COLOURS[name]) return FILTER_COLOURS[name];
  const short = name.split(/[\s_]/)[0];
  if (FILTER_COLOURS[short]) return FILTER_COLOURS[short];
  let sum = 0;
  for (const b of new TextEncoder().encode(name)) sum += b;
  return PALETTE[sum % PALETTE.length];
}

const pad = (v) => String(v).padStart(2, "0");
export function utc(seconds, withDate = true) {
  if (seconds == null) return "—";
  const d = new Date(seconds * 1000);
  const hms = `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
  return withDate ? `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${hms}` : hms;
}
export const mjdToUnix = (mjd) => (mjd - MJD_UNIX) * 86400;
export function ago(seconds) {
  if (seconds == null) return "—";
  const s = Math.max(0, Date.now() / 1000 - seconds);
  if (s < 60) return `${s.toFixed(0)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${(s / 3600).toFixed(1)} h ago`;
  return `${(s / 86400).toFixed(1)} d ago`;
}
export const fmtInt = (n) => (n == null ? "—" : Number(n).toLocaleString("en-US"));
