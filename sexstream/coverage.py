"""Sky coverage of the sink: time windows, image footprints, HEALPix source density, MOC.

Everything here reads the two Delta tables of docs/tables.md through the Delta log
(`deltalake.DeltaTable`) and returns plain arrays; the dashboard (`sexstream.dashboard`)
and the static map (`sexstream.plot`) draw them.

Conventions: angles in degrees (ICRS), times as `datetime` in UTC or seconds,
HEALPix indices in the nested scheme.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from astropy import units as u
from astropy_healpix import lonlat_to_healpix
from mocpy import MOC

#: Order of the per-image HEALPix counts kept by the density aggregate (~3.4' cells).
DENSITY_ORDER = 10
#: The rolling windows the UI offers, by name.
NAMED_WINDOWS = {"1h": 3600.0, "night": 16 * 3600.0, "24h": 86400.0, "7d": 7 * 86400.0,
                 "week": 7 * 86400.0, "all": None}
#: Unix epoch as an MJD.
MJD_UNIX_EPOCH = 40587.0
#: Coordinate columns used for the density, best first (ALPHA_J2000 over ALPHA_SKY).
COORD_COLUMNS = (("ALPHA_J2000", "DELTA_J2000"), ("ALPHA_SKY", "DELTA_SKY"))
#: Header keys that may carry the filter name, best first.
FILTER_KEYS = ("FILTER", "FILTER1", "BAND", "FILTNAME")

_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


def parse_window(text: str | None) -> float | None:
    """Length of a rolling window in seconds; None for 'all'.

    Accepts the named windows ('1h', '24h', '7d', 'week', 'all', and 'night', defined as
    the last 16 hours) and any '<number><s|m|h|d|w>' such as '90m' or '1.5d'.
    """
    key = "all" if text is None else text.strip().lower()
    if key in NAMED_WINDOWS:
        return NAMED_WINDOWS[key]
    match = re.fullmatch(r"(\d+(?:\.\d*)?)\s*([smhdw])", key)
    if not match:
        raise ValueError(f"bad window {text!r}: use 1h, 24h, 7d, night, all or <N>[smhdw]")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"bad window {text!r}: must be positive")
    return seconds


def mjd_to_unix(mjd: float) -> float:
    """Seconds since 1970-01-01 UTC of a Modified Julian Date (days)."""
    return (mjd - MJD_UNIX_EPOCH) * 86400.0


def unix_to_mjd(seconds: float) -> float:
    """Modified Julian Date (days) of a Unix time in seconds."""
    return seconds / 86400.0 + MJD_UNIX_EPOCH


def table_path(sink: str | Path, name: str) -> Path:
    """Folder of the `name` ('images' or 'sources') Delta table under `sink`."""
    return Path(sink) / name


def read_images(sink: str | Path, window: str | None = "all", *, axis: str = "ingest",
                now: datetime | None = None) -> pa.Table:
    """The images table's current verdicts, restricted to a rolling window.

    `axis='ingest'` keeps rows with ingest_time >= now - window; `axis='obs'` keeps rows
    whose obs_mjd is within the window before the latest obs_mjd of the table (so a
    replayed archive still shows its last night). An absent table reads as empty.
    """
    from sexstream.tables import open_table, read_table

    path = table_path(sink, "images")
    if open_table(path) is None:
        return pa.table({})
    table = read_table(path)
    if "current" in table.column_names:  # verdicts superseded by a newer measurement
        table = table.filter(pc.invert(pc.fill_null(pc.equal(table["current"], False), False)))
    seconds = parse_window(window)
    if seconds is None or table.num_rows == 0:
        return table
    if axis == "obs":
        if "obs_mjd" not in table.column_names:
            return table.slice(0, 0)
        latest = pc.max(table["obs_mjd"]).as_py()
        if latest is None:
            return table.slice(0, 0)
        return table.filter(pc.greater_equal(table["obs_mjd"], latest - seconds / 86400.0))
    if axis != "ingest":
        raise ValueError(f"axis must be 'ingest' or 'obs', not {axis!r}")
    start = (now or datetime.now(timezone.utc)) - timedelta(seconds=seconds)
    return table.filter(pc.greater_equal(table["ingest_time"], pa.scalar(start, table["ingest_time"].type)))


@dataclass(frozen=True)
class Footprint:
    """One image extension on the sky: its 4 corners in degrees (ICRS)."""

    path: str
    ext_number: int
    ra: tuple[float, ...]
    dec: tuple[float, ...]
    filter: str | None
    status: str


def filter_of(row: dict) -> str | None:
    """The filter name of an images row (first non-empty of FILTER_KEYS), or None."""
    for key in FILTER_KEYS:
        value = row.get(key)
        if value not in (None, ""):
            return str(value).strip()
    return None


def footprints(images: pa.Table) -> list[Footprint]:
    """Every extension footprint with a celestial WCS in an images table."""
    if images.num_rows == 0 or "footprints" not in images.column_names:
        return []
    keep = [c for c in ("path", "status", "footprints", *FILTER_KEYS) if c in images.column_names]
    out = []
    for row in images.select(keep).to_pylist():
        for ext in row["footprints"] or ():
            if ext.get("ra") and ext.get("dec") and None not in ext["ra"] + ext["dec"]:
                out.append(Footprint(row["path"], int(ext.get("ext_number") or 0),
                                     tuple(ext["ra"]), tuple(ext["dec"]),
                                     filter_of(row), row.get("status") or ""))
    return out


def footprint_moc(images: pa.Table, order: int = 10) -> MOC:
    """Union of the images' extension footprints as an IVOA MOC at `order` (max depth).

    Each extension is a spherical polygon (great-circle edges) through its 4 corners.
    An empty table gives an empty MOC.
    """
    vertices = []
    for fp in footprints(images):
        vertices.extend([np.asarray(fp.ra, float) % 360.0, np.asarray(fp.dec, float)])
    if not vertices:
        return MOC.new_empty(order)
    mocs = MOC.from_polygons(vertices, max_depth=order)
    return mocs[0].union(*mocs[1:]) if len(mocs) > 1 else mocs[0]


def degrade(pixels: np.ndarray, from_order: int, to_order: int) -> np.ndarray:
    """Nested HEALPix indices at `from_order` mapped to their parent cells at `to_order`."""
    if to_order > from_order:
        raise ValueError(f"cannot degrade order {from_order} to the finer {to_order}")
    return np.asarray(pixels, np.int64) >> (2 * (from_order - to_order))


def infer_healpix_order(pixels: np.ndarray, lon: np.ndarray, lat: np.ndarray) -> int | None:
    """The nested HEALPix order at which `pixels` index the positions (lon, lat) in degrees.

    Used to read the sources' `healpix` column without knowing the pipeline's settings;
    None when no order 0-29 fits every sample.
    """
    good = ~(np.isnan(lon) | np.isnan(lat)) & (pixels >= 0)
    pix, lon, lat = pixels[good][:64], lon[good][:64], lat[good][:64]
    if len(pix) == 0:
        return None
    for order in range(30):
        hp = lonlat_to_healpix(lon * u.deg, lat * u.deg, 1 << order, order="nested")
        if np.array_equal(np.asarray(hp, np.int64), pix):
            return order
    return None


def source_pixels(batch: pa.Table | pa.RecordBatch, order: int,
                  healpix_order: int | None) -> np.ndarray | None:
    """HEALPix indices at `order` of each source row; -1 where the position is unknown.

    Uses the `healpix` column when its order (`healpix_order`) is known and no coarser
    than `order`, else ALPHA_J2000/DELTA_J2000 (or ALPHA_SKY/DELTA_SKY). None when the
    batch has no sky position at all.
    """
    names = batch.schema.names
    n = batch.num_rows
    out = np.full(n, -1, np.int64)
    todo = np.ones(n, bool)
    if "healpix" in names and healpix_order is not None and healpix_order >= order:
        col = batch.column(names.index("healpix"))
        valid = np.asarray(pc.is_valid(col), bool)
        values = np.asarray(pc.fill_null(col, -1), np.int64)
        out[valid] = degrade(values[valid], healpix_order, order)
        todo &= ~valid
    coords = next(((a, d) for a, d in COORD_COLUMNS if a in names and d in names), None)
    if coords is not None and todo.any():
        ra = np.asarray(pc.fill_null(batch.column(names.index(coords[0])), np.nan), float)[todo]
        dec = np.asarray(pc.fill_null(batch.column(names.index(coords[1])), np.nan), float)[todo]
        ok = np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90)
        pix = np.full(len(ra), -1, np.int64)
        if ok.any():
            pix[ok] = lonlat_to_healpix((ra[ok] % 360.0) * u.deg, dec[ok] * u.deg,
                                        1 << order, order="nested")
        out[todo] = pix
    elif coords is None and "healpix" not in names:
        return None
    return out


class DensityCounts:
    """Source counts per (image, HEALPix cell at DENSITY_ORDER), never raw rows.

    Memory grows with the number of (image, cell) pairs, not with sources: ~16 bytes
    a pair. `add` takes a batch of rows; `counts` sums the images selected by a mask.
    """

    def __init__(self, order: int = DENSITY_ORDER) -> None:
        self.order = order
        self._ncell = 12 * 4 ** order
        self._keys = np.empty(0, np.int64)
        self._counts = np.empty(0, np.int64)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_len = 0

    def __len__(self) -> int:
        self._compact()
        return len(self._keys)

    def add(self, image_index: np.ndarray, pixels: np.ndarray) -> None:
        """Count sources: image_index[i] (int) had a source in cell pixels[i] (-1 skipped)."""
        good = pixels >= 0
        keys = np.asarray(image_index, np.int64)[good] * self._ncell + pixels[good]
        if len(keys) == 0:
            return
        keys, counts = np.unique(keys, return_counts=True)
        self._pending.append((keys, counts.astype(np.int64)))
        self._pending_len += len(keys)
        if self._pending_len > max(1_000_000, len(self._keys)):
            self._compact()

    def _compact(self) -> None:
        if not self._pending:
            return
        keys = np.concatenate([self._keys, *(k for k, _ in self._pending)])
        counts = np.concatenate([self._counts, *(c for _, c in self._pending)])
        self._pending, self._pending_len = [], 0
        self._keys, inverse = np.unique(keys, return_inverse=True)
        self._counts = np.bincount(inverse, weights=counts).astype(np.int64)

    def counts(self, image_mask: np.ndarray | None, order: int) -> tuple[np.ndarray, np.ndarray]:
        """(cells at `order`, source counts) summed over images where image_mask is True.

        `image_mask` is indexed by image index (None: all images); order <= self.order.
        """
        self._compact()
        keys, counts = self._keys, self._counts
        if image_mask is not None:
            images = keys // self._ncell
            inside = images < len(image_mask)
            sel = np.zeros(len(keys), bool)
            sel[inside] = np.asarray(image_mask, bool)[images[inside]]
            keys, counts = keys[sel], counts[sel]
        cells = degrade(keys % self._ncell, self.order, order)
        uniq, inverse = np.unique(cells, return_inverse=True)
        return uniq, np.bincount(inverse, weights=counts, minlength=len(uniq)).astype(np.int64)


def source_density(sink: str | Path, images: pa.Table, order: int = 7,
                   healpix_order: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(HEALPix cells at `order`, source counts) of the sources of the given images rows.

    Streams the sources table in record batches (only image_id and position columns),
    so memory stays bounded whatever its size. Empty arrays when there is no position.
    """
    from sexstream.tables import open_dataset

    empty = (np.empty(0, np.int64), np.empty(0, np.int64))
    path = table_path(sink, "sources")
    dataset = open_dataset(path) if images.num_rows else None
    if dataset is None:
        return empty
    wanted = ["image_id", "healpix", *(c for pair in COORD_COLUMNS for c in pair)]
    columns = [c for c in wanted if c in dataset.schema.names]
    ids = pa.array(sorted(set(images["image_id"].to_pylist()) - {None}), pa.string())
    density = DensityCounts(order)
    for batch in dataset.to_batches(columns=columns, filter=pc.field("image_id").isin(ids)):
        if batch.num_rows == 0:
            continue
        if healpix_order is None and "healpix" in columns:
            healpix_order = _order_of_batch(batch)
        pixels = source_pixels(batch, order, healpix_order)
        if pixels is None:
            return empty
        density.add(np.zeros(batch.num_rows, np.int64), pixels)
    return density.counts(None, order)


def _order_of_batch(batch: pa.RecordBatch) -> int | None:
    """infer_healpix_order on a record batch with a healpix and a coordinate column."""
    names = batch.schema.names
    coords = next(((a, d) for a, d in COORD_COLUMNS if a in names and d in names), None)
    if coords is None:
        return None
    pick = lambda name: np.asarray(pc.fill_null(batch.column(names.index(name)), np.nan), float)
    pix = np.asarray(pc.fill_null(batch.column(names.index("healpix")), -1), np.int64)
    return infer_healpix_order(pix, pick(coords[0]), pick(coords[1]))

