"""The sources table read by sky position: only the files and row groups whose HEALPix
range meets the question are opened.

A question arrives as ranges of nested HEALPix indices at the table's order (the
`healpix` column, docs/tables.md). The Delta log's statistics (min/max of `healpix` per
file) drop the files outside every range without opening them; the footer of each
remaining file (cached: a committed file never changes) drops its row groups outside
them; the `healpix` column of the remaining row groups picks the rows; only then are
the other columns read, and only for the row groups that hold a match.

On a table clustered by healpix (`sexstream.maintenance.cluster_sources`) a small cone
meets one or two row groups per sorted run. Files not clustered yet (the newest
appends) go through the same steps: their statistics prune most of them, the rest are
read, healpix column first. A sources table without a `healpix` column (written before
it existed) is read whole, coordinates first.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Callable
from urllib.parse import unquote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sexstream.catalog import SKY_COLUMNS
from sexstream.coverage import infer_healpix_order
from sexstream.query.position import QueryError
from sexstream.query.snapshot import Snapshot
from sexstream.schema import with_columns

#: Footers kept in memory (one per data file; a few tens of kB each).
FOOTER_CACHE = 4096
_NO_STATS = (np.iinfo(np.int64).min, np.iinfo(np.int64).max)


@dataclass
class ScanStats:
    """What a scan read: files and row groups opened, bytes read from disk."""

    files: int = 0               # live data files of the table
    table_bytes: int = 0         # their total size
    files_opened: int = 0        # files whose footer or columns were read
    row_groups_probed: int = 0   # row groups whose probe column was read
    row_groups_read: int = 0     # row groups whose other columns were read
    bytes_read: int = 0          # footers (not cached yet) + column chunks, compressed
    rows: int = 0                # rows returned

    @property
    def fraction_read(self) -> float:
        """bytes_read / table_bytes."""
        return self.bytes_read / self.table_bytes if self.table_bytes else 0.0


@dataclass(frozen=True)
class Footer:
    """A data file's Parquet footer and its row groups' healpix bounds (inclusive)."""

    metadata: pq.FileMetaData
    lo: np.ndarray
    hi: np.ndarray
    size: int
    no_nulls: np.ndarray  # row groups whose healpix has no null

    def chunk_bytes(self, row_groups: list[int], columns: list[str]) -> int:
        """Compressed bytes of `columns` in `row_groups`."""
        names = self.metadata.schema.names
        index = [names.index(c) for c in columns if c in names]
        return sum(self.metadata.row_group(g).column(j).total_compressed_size
                   for g in row_groups for j in index)


def in_ranges(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """True where values[i] lies in one of the sorted, disjoint ranges [lo[k], hi[k])."""
    if not len(lo):
        return np.zeros(len(values), bool)
    k = np.searchsorted(lo, values, side="right") - 1
    return (k >= 0) & (values < hi[np.maximum(k, 0)])


def inside(first: np.ndarray, last: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """True where the closed interval [first[i], last[i]] lies in one range [lo[k], hi[k])."""
    if not len(lo):
        return np.zeros(len(first), bool)
    k = np.searchsorted(lo, first, side="right") - 1
    return (k >= 0) & (last < hi[np.maximum(k, 0)])


def overlaps(first: np.ndarray, last: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """True where the closed interval [first[i], last[i]] meets a range [lo[k], hi[k])."""
    if not len(lo):
        return np.zeros(len(first), bool)
    k = np.searchsorted(hi, first, side="right")
    return (k < len(lo)) & (lo[np.minimum(k, len(lo) - 1)] <= last)


class SkyIndex:
    """Reads the sources table by HEALPix ranges; keeps the log's file list and the
    files' footers between questions (`refresh` follows new commits).

    Thread-safe: questions from several threads are answered one at a time.
    """

    def __init__(self, table_dir: str | os.PathLike[str]) -> None:
        self.snapshot = Snapshot(table_dir)
        self.path = self.snapshot.path
        self._footers: OrderedDict[str, Footer] = OrderedDict()
        self._order: int | None = None
        self._lock = threading.RLock()

    # -- the snapshot -----------------------------------------------------------------
    def refresh(self) -> int:
        """Follow the table to its latest version; returns it (-1: no table)."""
        return self.snapshot.refresh()

    @property
    def version(self) -> int:
        return self.snapshot.version

    @property
    def schema(self) -> pa.Schema:
        """The table's Arrow schema (QueryError when there is no table)."""
        if self.snapshot.schema is None:
            raise QueryError(f"no sources table at {self.path} (has the daemon committed "
                             "anything to this sink yet?)")
        return self.snapshot.schema

    @property
    def files(self) -> pa.Table:
        """The live data files: path, size_bytes, num_records and statistics columns."""
        if self.snapshot.files is None:
            raise QueryError(f"no sources table at {self.path}")
        return self.snapshot.files

    def coordinates(self) -> tuple[str, str]:
        """The (RA, Dec) columns the `healpix` column was computed from (ALPHA_J2000/
        DELTA_J2000, else ALPHA_SKY/DELTA_SKY); QueryError when the table has neither."""
        names = set(self.schema.names)
        for pair in SKY_COLUMNS:
            if set(pair) <= names:
                return pair
        raise QueryError(
            f"the sources table at {self.path} has no sky coordinates: select ALPHA_J2000 and "
            "DELTA_J2000 (or ALPHA_SKY and DELTA_SKY) among the catalog keys and measure the "
            "images again (columns: " + ", ".join(self.schema.names) + ")")

    @property
    def has_healpix(self) -> bool:
        return "healpix" in self.schema.names and "min.healpix" in self.files.column_names

    # -- footers ----------------------------------------------------------------------
    def _file(self, name: str) -> str:
        return os.path.join(self.path, unquote(name))

    def footer(self, name: str, stats: ScanStats | None = None) -> Footer:
        """The footer of data file `name` (relative to the table), cached."""
        footer = self._footers.get(name)
        if footer is not None:
            self._footers.move_to_end(name)
            return footer
        metadata = pq.read_metadata(self._file(name))
        lo = np.full(metadata.num_row_groups, _NO_STATS[0], np.int64)
        hi = np.full(metadata.num_row_groups, _NO_STATS[1], np.int64)
        no_nulls = np.zeros(metadata.num_row_groups, bool)
        names = metadata.schema.names
        if "healpix" in names:
            j = names.index("healpix")
            for g in range(metadata.num_row_groups):
                st = metadata.row_group(g).column(j).statistics
                if st is not None and st.has_min_max:
                    lo[g], hi[g] = st.min, st.max
                    no_nulls[g] = st.has_null_count and st.null_count == 0
                elif st is not None and st.null_count == metadata.row_group(g).num_rows:
                    lo[g], hi[g] = _NO_STATS[1], _NO_STATS[0]  # all null: meets no range
        footer = Footer(metadata, lo, hi, metadata.serialized_size + 8, no_nulls)
        if stats is not None:
            stats.bytes_read += footer.size
        self._footers[name] = footer
        if len(self._footers) > FOOTER_CACHE:
            self._footers.popitem(last=False)
        return footer

    def forget_footers(self) -> None:
        """Drop the cached footers (the next questions read them again, as a cold process)."""
        with self._lock:
            self._footers.clear()

    # -- the HEALPix order -------------------------------------------------------------
    def order(self) -> int:
        """The nested HEALPix order of the `healpix` column, learnt from sample rows of
        the smallest and the newest file (QueryError if they disagree or none fits)."""
        with self._lock:
            if self._order is not None:
                return self._order
            files = self.files
            nulls = files["null_count.healpix"].to_numpy(zero_copy_only=False)
            rows = files["num_records"].to_numpy(zero_copy_only=False)
            usable = np.flatnonzero(np.nan_to_num(nulls.astype(float), nan=0.0) < rows)
            if not len(usable):
                raise QueryError(f"the sources table at {self.path} has no row with a sky position")
            smallest = usable[np.argmin(rows[usable])]
            newest = usable[np.argmax(files["modification_time"].to_numpy()[usable])]
            ra, dec = self.coordinates()
            found = set()
            for i in {int(smallest), int(newest)}:
                name = files["path"][i].as_py()
                batch = next(pq.ParquetFile(self._file(name)).iter_batches(
                    batch_size=256, columns=["healpix", ra, dec]))
                pix = np.asarray(pc.fill_null(batch.column(0), -1), np.int64)
                lon = np.asarray(pc.fill_null(batch.column(1), np.nan), float)
                lat = np.asarray(pc.fill_null(batch.column(2), np.nan), float)
                found.add(infer_healpix_order(pix, lon, lat))
            if None in found or len(found) != 1:
                raise QueryError(f"cannot tell the HEALPix order of {self.path}/healpix "
                                 f"(samples gave {sorted(found, key=str)}): was healpix_order "
                                 "changed while this sink was written?")
            self._order = found.pop()
            return self._order

    # -- reading ----------------------------------------------------------------------
    def scan(self, columns: list[str], *, ranges: tuple[np.ndarray, np.ndarray] | None = None,
             probe: list[str] | None = None,
             keep: Callable[[pa.Table], np.ndarray] | None = None,
             since: datetime | None = None, config_hash: str | None = None,
             ) -> tuple[pa.Table, ScanStats]:
        """Rows of `columns` (in the table's types; missing in old files: null).

        With `ranges` = (lo, hi), sorted disjoint HEALPix ranges [lo, hi) at `order()`,
        only rows whose healpix lies in them are returned (rows with a null healpix
        never). Otherwise `keep(probe table) -> bool mask` picks the rows from the
        `probe` columns, read first. `since` drops files whose newest ingest_time is
        older; `config_hash` files that cannot hold a hash starting with it (rows are not
        filtered here).
        """
        with self._lock:
            schema = self.schema
            files = self.files
            stats = ScanStats(files=files.num_rows,
                              table_bytes=int(pc.sum(files["size_bytes"]).as_py() or 0))
            if ranges is not None and not self.has_healpix:
                raise QueryError(f"the sources table at {self.path} has no healpix column")
            chosen = self._prune(files, ranges, since, config_hash)
            if ranges is not None:
                lo, hi = (np.asarray(r, np.int64) for r in ranges)
                probe, keep = ["healpix"], lambda t: in_ranges(
                    np.asarray(pc.fill_null(t["healpix"], -1), np.int64), lo, hi)
            elif probe is None or keep is None:
                raise TypeError("scan needs ranges, or probe columns and keep")
            parts = []
            for name in files["path"].take(pa.array(chosen, pa.int64())).to_pylist():
                part = self._read_file(name, schema, columns, probe, keep,
                                       None if ranges is None else (lo, hi), stats)
                if part is not None:
                    parts.append(part)
            out = (pa.concat_tables(parts) if parts
                   else pa.schema([schema.field(c) for c in columns]).empty_table())
            stats.rows = out.num_rows
            return out, stats

    def _prune(self, files: pa.Table, ranges, since: datetime | None,
               config_hash: str | None) -> np.ndarray:
        """Indices of the files whose statistics allow a match."""
        keep = np.ones(files.num_rows, bool)
        stat = lambda name, fill: np.asarray(  # noqa: E731
            pc.fill_null(files[name], fill).to_numpy(zero_copy_only=False))
        if ranges is not None:
            lo, hi = (np.asarray(r, np.int64) for r in ranges)
            first = stat("min.healpix", _NO_STATS[0]).astype(np.int64)
            last = stat("max.healpix", _NO_STATS[1]).astype(np.int64)
            rows = files["num_records"].to_numpy(zero_copy_only=False)
            nulls = stat("null_count.healpix", -1)
            keep &= overlaps(first, last, lo, hi) & (nulls != rows)
        if since is not None and "max.ingest_time" in files.column_names:
            newest = files["max.ingest_time"]
            keep &= np.asarray(pc.fill_null(pc.greater_equal(
                newest, pa.scalar(since, newest.type)), True), bool)
        if config_hash is not None and "min.config_hash" in files.column_names:
            low = pc.fill_null(pc.less_equal(files["min.config_hash"], config_hash + "\U0010ffff"), True)
            high = pc.fill_null(pc.greater_equal(files["max.config_hash"], config_hash), True)
            keep &= np.asarray(pc.and_(low, high), bool)
        return np.flatnonzero(keep)

    def _read_file(self, name: str, schema: pa.Schema, columns: list[str], probe: list[str],
                   keep: Callable[[pa.Table], np.ndarray], ranges, stats: ScanStats) -> pa.Table | None:
        footer = self.footer(name, stats)
        stats.files_opened += 1
        groups = np.arange(footer.metadata.num_row_groups)
        whole = np.zeros(0, np.int64)
        if ranges is not None:
            groups = groups[overlaps(footer.lo[groups], footer.hi[groups], *ranges)]
            within = inside(footer.lo[groups], footer.hi[groups], *ranges) & footer.no_nulls[groups]
            whole, groups = groups[within], groups[~within]  # whole: every row matches
        present = set(footer.metadata.schema.names)
        if not (len(groups) or len(whole)) or not set(probe) <= present:
            return None  # nothing there, or a file from before these columns existed
        handle = pq.ParquetFile(self._file(name), metadata=footer.metadata)
        out = pa.schema([schema.field(c) for c in columns])
        parts = []
        if len(whole):
            readable = [c for c in columns if c in present]
            parts.append(with_columns(handle.read_row_groups(whole.tolist(), columns=readable), out))
            stats.row_groups_read += len(whole)
            stats.bytes_read += footer.chunk_bytes(whole.tolist(), readable)
        if len(groups):
            part = self._read_matching(handle, footer, groups.tolist(), columns, probe, keep,
                                       present, stats)
            if part is not None:
                parts.append(with_columns(part, out))
        return pa.concat_tables(parts) if parts else None

    def _read_matching(self, handle: pq.ParquetFile, footer: Footer, groups: list[int],
                       columns: list[str], probe: list[str], keep: Callable[[pa.Table], np.ndarray],
                       present: set[str], stats: ScanStats) -> pa.Table | None:
        """The rows `keep` picks in `groups`: probe columns first, the others only for the
        row groups that hold a match."""
        probed = handle.read_row_groups(groups, columns=probe)
        stats.row_groups_probed += len(groups)
        stats.bytes_read += footer.chunk_bytes(groups, probe)
        mask = keep(probed)
        if not mask.any():
            return None
        sizes = np.array([footer.metadata.row_group(g).num_rows for g in groups])
        owner = np.repeat(np.arange(len(groups)), sizes)
        has = np.bincount(owner[mask], minlength=len(groups)) > 0
        hit = [g for g, h in zip(groups, has) if h]
        rest = [c for c in columns if c not in probe and c in present]
        if len(hit) < len(groups):
            where = np.flatnonzero(has[owner])
            probed, mask = probed.take(pa.array(where)), mask[where]
        other = handle.read_row_groups(hit, columns=rest) if rest else None
        stats.row_groups_read += len(hit) if rest else 0
        stats.bytes_read += footer.chunk_bytes(hit, rest)
        picked = pa.array(mask)
        found = {c: probed[c].filter(picked) for c in probe}
        if other is not None:
            found.update({c: other[c].filter(picked) for c in rest})
        return pa.table(found)
