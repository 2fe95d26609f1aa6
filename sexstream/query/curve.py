"""Light curves: one point per image that saw a source at a position (the nearest
within the radius), with its time, filter and photometry, and their plot.

Photometry columns are the selected MAG_*/FLUX_* keys, each followed by its error
(MAGERR_*/FLUXERR_*) when selected; the filter is the first of FILTER, FILTER1, BAND,
FILTNAME among the header keys.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sexstream.coverage import FILTER_KEYS
from sexstream.query.conesearch import SEPARATION
from sexstream.query.position import QueryError

#: Columns a light curve keeps besides photometry, in order (when the table has them).
TIME_COLUMNS = ("obs_mjd", "obs_mjd_from")
TAIL_COLUMNS = ("FLAGS", SEPARATION, "path", "image_id")


def filter_column(names: list[str]) -> str | None:
    """The header key that names the filter, or None."""
    return next((k for k in FILTER_KEYS if k in names), None)


def photometry_columns(names: list[str]) -> list[str]:
    """MAG_* and FLUX_* columns in table order, each followed by its error column."""
    out = []
    for name in names:
        for value, error in (("MAG_", "MAGERR_"), ("FLUX_", "FLUXERR_")):
            if name.startswith(value):
                out.append(name)
                twin = error + name[len(value):]
                if twin in names:
                    out.append(twin)
    return out


def columns_for(names: list[str], coordinates: tuple[str, str]) -> list[str]:
    """The sources columns a light curve reads from a table with columns `names`."""
    wanted = [filter_column(names), *photometry_columns(names), *coordinates, *TAIL_COLUMNS,
              "MJD-OBS", "ingest_time"]
    return [c for c in dict.fromkeys(wanted) if c is not None and c in names]


def nearest_per_image(rows: pa.Table) -> pa.Table:
    """Of rows sorted by separation, the first (nearest) of each image_id, by time."""
    ids = rows["image_id"].to_numpy(zero_copy_only=False).astype(str)
    _, first = np.unique(ids, return_index=True)
    kept = rows.take(pa.array(np.sort(first)))
    order = pc.sort_indices(kept, [("obs_mjd", "ascending"), (SEPARATION, "ascending")])
    return kept.take(order)


def arrange(rows: pa.Table, coordinates: tuple[str, str]) -> pa.Table:
    """A light curve's columns in reading order: time, filter, photometry, position, rest."""
    names = rows.column_names
    order = [*TIME_COLUMNS, filter_column(names), *photometry_columns(names), *coordinates,
             *TAIL_COLUMNS]
    return rows.select([c for c in dict.fromkeys(order) if c is not None and c in names])


def plotted(curve: pa.Table) -> tuple[str, str | None, bool]:
    """(value column, error column or None, is a magnitude) to draw: the first scalar
    MAG_* column, else the first scalar FLUX_*."""
    names = curve.column_names
    for prefix, error, is_mag in (("MAG_", "MAGERR_", True), ("FLUX_", "FLUXERR_", False)):
        for name in names:
            if name.startswith(prefix) and not pa.types.is_nested(curve.schema.field(name).type):
                twin = error + name[len(prefix):]
                return name, (twin if twin in names else None), is_mag
    raise QueryError("the light curve has no scalar MAG_* or FLUX_* column to draw "
                     f"(columns: {', '.join(names)})")


def figure(curve, title: str = ""):
    """A matplotlib Figure of a light curve (an Arrow table, an astropy Table or a pandas
    DataFrame from `Sky.lightcurve`): one colour per filter, magnitudes upwards."""
    from matplotlib.figure import Figure

    from sexstream.plot import filter_colour

    if not isinstance(curve, pa.Table):
        import pandas as pd

        if not isinstance(curve, pd.DataFrame):  # an astropy Table: its text is bytes
            curve = curve.copy(copy_data=False)
            for name in curve.colnames:
                if curve[name].dtype.kind == "S":
                    curve[name] = curve[name].astype(str)
        frame = curve if isinstance(curve, pd.DataFrame) else curve.to_pandas()
        curve = pa.Table.from_pandas(frame, preserve_index=False)

    value, error, is_mag = plotted(curve)
    fig = Figure(figsize=(8, 4.2), layout="constrained")
    ax = fig.add_subplot()
    band = filter_column(curve.column_names)
    bands = curve[band].to_pylist() if band else [None] * curve.num_rows
    t = np.asarray(pc.fill_null(curve["obs_mjd"], np.nan), float)
    origin = float(np.floor(np.nanmin(t))) if np.isfinite(t).any() else 0.0
    t = t - origin
    y = np.asarray(pc.fill_null(curve[value], np.nan), float)
    dy = np.asarray(pc.fill_null(curve[error], np.nan), float) if error else None
    for name in sorted({b for b in bands}, key=lambda b: (b is None, str(b))):
        pick = np.array([b == name for b in bands])
        ax.errorbar(t[pick], y[pick], yerr=None if dy is None else dy[pick], fmt="o", ms=4,
                    capsize=2, color=filter_colour(name), label=name or "no filter")
    if is_mag:
        ax.invert_yaxis()
    ax.set_xlabel(f"MJD - {origin:.0f}" + ("" if set(curve["obs_mjd_from"].to_pylist()) <= {"header"}
                                           else " (ingest time where the header had none)"))
    ax.set_ylabel(f"{value} [{'mag' if is_mag else 'ADU'}]")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if curve.num_rows:
        ax.legend(title="filter", fontsize=8)
    return fig
