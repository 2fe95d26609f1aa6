"""The sky-coverage map as a static matplotlib figure (the dashboard's map, on paper).

An all-sky Mollweide projection with RA increasing to the LEFT (east left, as on the
sky), a graticule labelled in hours of RA and degrees of Dec, the HEALPix density of
the sources, and one outline per image extension coloured by filter.
"""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy_healpix import boundaries_lonlat
from matplotlib.collections import PolyCollection
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from sexstream.coverage import footprints, read_images, source_density

#: Outline colours of common filters (the dashboard uses the same table).
FILTER_COLOURS = {
    "u": "#a78bfa", "g": "#4ade80", "r": "#f87171", "i": "#fb923c", "z": "#e879f9",
    "y": "#facc15", "Y": "#facc15", "J": "#67e8f9", "H": "#60a5fa", "K": "#c084fc",
    "Ks": "#c084fc", "B": "#60a5fa", "V": "#4ade80", "R": "#f87171", "I": "#fb923c",
    "Ha": "#ef4444", "OIII": "#2dd4bf", "SII": "#b91c1c", "L": "#e5e7eb", "clear": "#e5e7eb",
}
_PALETTE = ("#38bdf8", "#a3e635", "#f472b6", "#fcd34d", "#818cf8", "#34d399", "#fda4af")
BACKGROUND = "#0b1020"
FOREGROUND = "#cbd5e1"


def filter_colour(name: str | None) -> str:
    """Outline colour of a filter: the usual one for common bands, else a stable pick."""
    if not name:
        return "#94a3b8"
    if name in FILTER_COLOURS:
        return FILTER_COLOURS[name]
    short = name.split()[0].split("_")[0]
    if short in FILTER_COLOURS:
        return FILTER_COLOURS[short]
    return _PALETTE[sum(name.encode()) % len(_PALETTE)]


def sky_x(ra: np.ndarray, ra_center: float) -> np.ndarray:
    """Mollweide-axes longitude (radians) of RA (degrees): RA grows to the left."""
    return -np.radians((np.asarray(ra, float) - ra_center + 180.0) % 360.0 - 180.0)


def _polygons(ra: np.ndarray, dec: np.ndarray, ra_center: float) -> list[np.ndarray]:
    """Vertices (x, y radians) of a polygon, twice when it straddles the map's edge."""
    x = sky_x(ra, ra_center)
    x = x[0] + (x - x[0] + np.pi) % (2 * np.pi) - np.pi  # continuous across the edge
    xy = np.column_stack([x, np.radians(dec)])
    out = [xy]
    if x.max() > np.pi:
        out.append(xy - [2 * np.pi, 0])
    if x.min() < -np.pi:
        out.append(xy + [2 * np.pi, 0])
    return out


def _graticule(ax, ra_center: float) -> None:
    ax.grid(True, color="#334155", linewidth=0.6, alpha=0.9)
    ras = (ra_center + np.arange(-150, 181, 30)) % 360.0
    ticks = sky_x(ras, ra_center)
    keep = np.abs(ticks) < np.pi - 1e-6
    ax.set_xticks(np.sort(ticks[keep]))
    order = np.argsort(ticks[keep])
    ax.set_xticklabels([f"{r / 15:.0f}h" for r in ras[keep][order]], color=FOREGROUND,
                       fontsize=8)
    ax.set_yticks(np.radians(np.arange(-60, 61, 30)))
    ax.set_yticklabels([f"{d:+d}°" for d in range(-60, 61, 30)], color=FOREGROUND, fontsize=8)
    ax.tick_params(axis="x", pad=0)


def coverage_figure(sink: str | Path, window: str = "24h", *, axis: str = "ingest",
                    order: int = 7, ra_center: float = 0.0, density: bool = True,
                    now: datetime | None = None) -> Figure:
    """The coverage map of the sink's images within `window` (see coverage.parse_window).

    `order` is the HEALPix order of the density cells (7: ~0.46 deg); `ra_center` the
    RA (degrees) at the centre of the map. Returns a Figure not attached to pyplot, so
    it is safe in threads and servers; save it with `fig.savefig(path)`.
    """
    images = read_images(sink, window, axis=axis, now=now)
    fig = Figure(figsize=(12, 6.6), facecolor=BACKGROUND)
    ax = fig.add_axes([0.04, 0.1, 0.8, 0.8], projection="mollweide")
    ax.set_facecolor("#111a33")
    _graticule(ax, ra_center)

    cells, counts = source_density(sink, images, order) if density else (np.empty(0),) * 2
    if len(cells):
        step = 1 if order >= 5 else 4
        lon, lat = boundaries_lonlat(cells, step, 1 << order, order="nested")
        pieces = [_polygons(lo, la, ra_center)
                  for lo, la in zip(lon.to_value(u.deg), lat.to_value(u.deg))]
        polys = [p for cell in pieces for p in cell]
        values = np.repeat(counts, [len(cell) for cell in pieces])
        norm = LogNorm(vmin=max(1, counts.min()), vmax=max(2, counts.max()))
        cells_art = PolyCollection(polys, array=values, cmap="magma", norm=norm,
                                   edgecolors="none", zorder=2)
        ax.add_collection(cells_art, autolim=False)
        cax = fig.add_axes([0.86, 0.3, 0.015, 0.4])
        bar = fig.colorbar(cells_art, cax=cax)
        bar.set_label(f"sources per HEALPix cell (order {order})", color=FOREGROUND, fontsize=8)
        bar.ax.tick_params(colors=FOREGROUND, labelsize=7)

    fps = footprints(images)
    filters: dict[str, str] = {}
    polys, edges, faces, styles = [], [], [], []
    for fp in fps:
        colour = filter_colour(fp.filter)
        filters.setdefault(fp.filter or "?", colour)
        for p in _polygons(np.array(fp.ra), np.array(fp.dec), ra_center):
            polys.append(p)
            edges.append(colour if fp.status == "ok" else "#ef4444")
            faces.append(colour + ("33" if fp.status == "ok" else "11"))
            styles.append("solid" if fp.status == "ok" else "dashed")
    if fps:  # a dot per extension too, so that images far smaller than the map show
        centres = np.array([(np.degrees(np.arctan2(np.sin(np.radians(fp.ra)).sum(),
                                                   np.cos(np.radians(fp.ra)).sum())),
                             np.mean(fp.dec)) for fp in fps])
        ax.scatter(sky_x(centres[:, 0], ra_center), np.radians(centres[:, 1]), s=4,
                   c=[filter_colour(fp.filter) for fp in fps], linewidths=0, zorder=3)
    if polys:
        ax.add_collection(PolyCollection(polys, facecolors=faces, edgecolors=edges,
                                         linewidths=0.8, linestyles=styles, zorder=3),
                          autolim=False)
    handles = [Line2D([], [], color=c, linewidth=3, label=f) for f, c in sorted(filters.items())]
    if handles:
        legend = ax.legend(handles=handles, title="filter", loc="upper left",
                           bbox_to_anchor=(1.0, 1.02), frameon=False, fontsize=8)
        legend.get_title().set_color(FOREGROUND)
        for text in legend.get_texts():
            text.set_color(FOREGROUND)

    n_ok = int(sum(s == "ok" for s in images["status"].to_pylist())) if images.num_rows else 0
    n_src = int(counts.sum()) if len(cells) else 0
    title = (f"sexstream coverage — {Path(sink).name or sink} — window {window} ({axis})\n"
             f"{images.num_rows} images ({n_ok} ok), {len(fps)} extensions, "
             f"{n_src:,} sources")
    fig.suptitle(title, color=FOREGROUND, fontsize=11, y=0.97)
    fig.text(0.04, 0.04, "Mollweide, ICRS, RA increasing to the left", color="#64748b",
             fontsize=7)
    return fig
