"""When the images behind source rows were observed: MJD from the header, else the
ingest time, and which of the two.

The header's time is the sources row's own `MJD-OBS` column when that key was selected,
else the images table's `obs_mjd` (MJD-OBS, else DATE-OBS, of the image's primary
header), looked up by `image_id`. The images rows are found through the Delta log's
statistics: a sources row and its image's row are committed in the same batch with the
same `ingest_time`, so only the images files whose ingest_time range holds one of the
rows' times are read (the others too, only if an image is still missing). An image
whose header has no time gets its ingest time (converted to MJD) and says so.
"""
from __future__ import annotations

import os
import threading
from urllib.parse import unquote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from sexstream.coverage import MJD_UNIX_EPOCH
from sexstream.query.snapshot import Snapshot

#: Values of the `obs_mjd_from` column.
HEADER, INGEST = "header", "ingest_time"
#: Image ids remembered between questions.
CACHE_SIZE = 200_000
_SCHEMA = pa.schema([("image_id", pa.string()), ("obs_mjd", pa.float64())])


class ObsTimes:
    """image_id -> obs_mjd from the images table, with the files' statistics for pruning."""

    def __init__(self, table_dir: str | os.PathLike[str]) -> None:
        self.snapshot = Snapshot(table_dir)
        self.path = self.snapshot.path
        self._known: dict[str, float | None] = {}
        self._lock = threading.RLock()
        self.files_read = 0

    def refresh(self) -> int:
        """Follow the images table to its latest version; returns it (-1: no table)."""
        return self.snapshot.refresh()

    def forget(self) -> None:
        """Drop the remembered times (the next lookups read the images table again)."""
        with self._lock:
            self._known.clear()

    def lookup(self, image_ids: np.ndarray, ingest_us: np.ndarray) -> dict[str, float | None]:
        """obs_mjd (days; None when the header had none) of each image id, given the
        ingest times (microseconds since 1970, UTC) of the rows that carry them."""
        with self._lock:
            wanted = {i for i in image_ids.tolist() if i is not None} - self._known.keys()
            files = self.snapshot.files
            if wanted and files is not None and files.num_rows:
                times = np.unique(ingest_us[np.isin(image_ids, list(wanted))])
                chosen = np.zeros(files.num_rows, bool)
                if "min.ingest_time" in files.column_names and len(times):
                    lo = _micros(files["min.ingest_time"], np.iinfo(np.int64).min)
                    hi = _micros(files["max.ingest_time"], np.iinfo(np.int64).max)
                    k = np.minimum(np.searchsorted(times, lo), len(times) - 1)
                    chosen = times[k] >= lo
                    chosen &= times[k] <= hi
                for pick in (chosen, ~chosen):
                    if wanted and pick.any():
                        self._read(files["path"].filter(pa.array(pick)).to_pylist(), wanted)
                for missing in wanted:
                    self._known[missing] = None
            if len(self._known) > CACHE_SIZE:
                self._known = {k: self._known[k] for k in image_ids.tolist() if k in self._known}
            return {i: self._known.get(i) for i in image_ids.tolist()}

    def _read(self, names: list[str], wanted: set[str]) -> None:
        paths = [os.path.join(self.path, unquote(n)) for n in names]
        found = ds.dataset(paths, schema=_SCHEMA, format="parquet").to_table(
            columns=["image_id", "obs_mjd"],
            filter=pc.field("image_id").isin(pa.array(sorted(wanted), pa.string())))
        self.files_read += len(paths)
        for image_id, mjd in zip(found["image_id"].to_pylist(), found["obs_mjd"].to_pylist()):
            if mjd is not None or image_id not in self._known:
                self._known[image_id] = mjd
            wanted.discard(image_id)


def _micros(column: pa.ChunkedArray, fill: int) -> np.ndarray:
    """A timestamp column as int64 microseconds; nulls as `fill`."""
    values = column.cast(pa.timestamp("us", "UTC")).cast(pa.int64())
    return np.asarray(pc.fill_null(values, fill), np.int64)


def observation_times(rows: pa.Table, times: ObsTimes | None) -> tuple[pa.Array, pa.Array]:
    """(obs_mjd, obs_mjd_from) of each sources row: the header's MJD ('header'), else
    its ingest time as MJD ('ingest_time'); both null without either."""
    n = rows.num_rows
    mjd = np.full(n, np.nan)
    if "MJD-OBS" in rows.column_names:
        header = pc.cast(rows["MJD-OBS"], pa.float64(), safe=False)
        mjd = pc.fill_null(header, np.nan).to_numpy().astype(float)
    missing = np.isnan(mjd)
    if missing.any() and times is not None and "image_id" in rows.column_names:
        # one lookup per image, not per row: a cone holds many rows of few images
        pick = (lambda column: column) if missing.all() else (
            lambda column: column.filter(pa.array(missing)))
        encoded = pc.dictionary_encode(pick(rows["image_id"])).combine_chunks()
        ids = np.asarray(encoded.dictionary.to_pylist(), object)
        index = np.asarray(pc.fill_null(encoded.indices, -1), np.int64)
        ingest = (_micros(pick(rows["ingest_time"]), 0) if "ingest_time" in rows.column_names
                  else np.zeros(len(index), np.int64))
        when = np.zeros(len(ids) + 1, np.int64)
        when[index] = ingest  # the ingest time of a row of each image (all rows share it)
        found = times.lookup(ids, when[:-1]) if len(ids) else {}
        per_image = np.array([np.nan if found.get(i) is None else found[i] for i in ids] + [np.nan])
        mjd[missing] = per_image[index]
    source = np.where(np.isnan(mjd), INGEST, HEADER).astype(object)
    if "ingest_time" in rows.column_names:
        fallback = _micros(rows["ingest_time"], np.iinfo(np.int64).min)
        usable = np.isnan(mjd) & (fallback != np.iinfo(np.int64).min)
        mjd[usable] = fallback[usable] / 86400e6 + MJD_UNIX_EPOCH
    source[np.isnan(mjd)] = None
    return pa.array(mjd, pa.float64(), mask=np.isnan(mjd)), pa.array(source, pa.string())
