"""Cone geometry and the cone search over the sources table.

`cone_ranges` turns a cone into the nested HEALPix ranges at the table's order that
cover it (every cell the cone touches, a few more at its rim: the MOC of the cone, from
mocpy); `search` reads those ranges through a `SkyIndex` and keeps the rows whose
angular separation from the centre is at most the radius, nearest first.

Angles in degrees unless a name says arcsec.
"""
from __future__ import annotations

from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from astropy import units as u
from astropy.coordinates import angular_separation
from mocpy import MOC

from sexstream.query.skyindex import ScanStats, SkyIndex

#: Name of the separation column, its unit in the name.
SEPARATION = "separation_arcsec"
#: Added to the radius of the cover (not of the selection), degrees: 1 mas, so that a
#: source on the rim never falls between the cover's arithmetic and the filter's.
COVER_MARGIN_DEG = 1.0 / 3.6e6


def cone_ranges(ra: float, dec: float, radius: float, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted, disjoint ranges [lo, hi) of nested HEALPix indices at `order` that cover
    the cone of `radius` degrees around (`ra`, `dec`) degrees."""
    shift = np.uint64(2 * (29 - order))
    if radius + COVER_MARGIN_DEG >= 180.0:
        return np.array([0], np.int64), np.array([12 << (2 * order)], np.int64)
    moc = MOC.from_cone(lon=ra * u.deg, lat=dec * u.deg, radius=(radius + COVER_MARGIN_DEG) * u.deg,
                        max_depth=order, delta_depth=2)
    ranges = np.asarray(moc.to_depth29_ranges, np.uint64).reshape(-1, 2)
    lo = (ranges[:, 0] >> shift).astype(np.int64)
    hi = ((ranges[:, 1] + (np.uint64(1) << shift) - np.uint64(1)) >> shift).astype(np.int64)
    return lo, hi


def separation(ra0: float, dec0: float, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Angular distance in degrees of each (ra, dec) from (ra0, dec0), all in degrees
    (Vincenty's formula: exact at every distance); NaN where a position is NaN."""
    d = angular_separation(np.radians(ra0), np.radians(dec0), np.radians(ra), np.radians(dec))
    return np.degrees(np.asarray(d, float))


def search(index: SkyIndex, ra: float, dec: float, radius: float, columns: list[str], *,
           since: datetime | None = None, config_hash: str | None = None,
           ) -> tuple[pa.Table, ScanStats]:
    """Rows of the sources table within `radius` degrees of (`ra`, `dec`), nearest first.

    Returns `columns` (which must include the table's coordinate columns) and, first,
    the separation in arcsec. `since` keeps rows ingested at or after it,
    `config_hash` rows whose config_hash starts with it. `index` must be refreshed.
    """
    ra_col, dec_col = index.coordinates()

    def distance(rows: pa.Table) -> np.ndarray:
        lon = np.asarray(pc.fill_null(rows[ra_col], np.nan), float)
        lat = np.asarray(pc.fill_null(rows[dec_col], np.nan), float)
        return np.nan_to_num(separation(ra, dec, lon, lat), nan=np.inf)

    if index.has_healpix:
        rows, stats = index.scan(columns, ranges=cone_ranges(ra, dec, radius, index.order()),
                                 since=since, config_hash=config_hash)
    else:
        rows, stats = index.scan(columns, probe=[ra_col, dec_col],
                                 keep=lambda probe: distance(probe) <= radius,
                                 since=since, config_hash=config_hash)
    degrees = distance(rows) if rows.num_rows else np.zeros(0)
    mask = degrees <= radius
    if since is not None and "ingest_time" in rows.column_names:
        start = pa.scalar(since, rows.schema.field("ingest_time").type)
        mask &= np.asarray(pc.fill_null(pc.greater_equal(rows["ingest_time"], start), False), bool)
    if config_hash is not None and "config_hash" in rows.column_names:
        mask &= np.asarray(pc.fill_null(pc.starts_with(rows["config_hash"], config_hash), False), bool)
    keep = np.flatnonzero(mask)
    order = keep[np.argsort(degrees[keep], kind="stable")]
    rows = rows.take(pa.array(order)).add_column(0, SEPARATION, pa.array(degrees[order] * 3600.0))
    stats.rows = rows.num_rows
    return rows, stats
