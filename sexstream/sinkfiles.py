"""The sink tables' commits and live files, read from their Delta logs (never a scan of
the data), cached: what an operator watches to know when a sink needs compacting.

`SinkFiles(sink).tables()` gives, per table, the number of commits (its latest version
+ 1), the live data files, how many of them are small, their bytes, and when the latest
commit was written. It keeps its own table handles and brings them up to date with the
log's new entries only (`tables.KeptTable`), at most once per `refresh_s`: a scrape
every few seconds costs a dictionary look-up.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from sexstream.schema import TABLES
from sexstream.tables import KeptTable, table_path

#: A live file under this size (bytes) counts as small. Streaming commits parts of a few
#: KiB to a few MiB per batch; `sexstream compact` rewrites them into ~100 MiB files.
SMALL_FILE_BYTES = 16 * 2**20
#: Seconds a reading of the logs is reused.
REFRESH_S = 15.0


@dataclass(frozen=True)
class TableFiles:
    """One table as its log describes it: `commits` (latest version + 1), live `files`,
    `small_files` (under SMALL_FILE_BYTES), `bytes` of the live files, and
    `last_commit_at` (epoch seconds: the latest commit file's mtime; None if unknown)."""

    table: str
    commits: int
    files: int
    small_files: int
    bytes: int
    last_commit_at: float | None


class SinkFiles:
    """The tables of the sink folder `sink`, read at most once per `refresh_s` seconds."""

    def __init__(self, sink: str | os.PathLike[str], *, refresh_s: float = REFRESH_S,
                 small_file_bytes: int = SMALL_FILE_BYTES):
        self.sink = os.fspath(sink)
        self.refresh_s = float(refresh_s)
        self.small_file_bytes = int(small_file_bytes)
        self._kept = {name: KeptTable(table_path(self.sink, name)) for name in TABLES}
        self._cache: tuple[float, tuple[TableFiles, ...]] | None = None
        self._lock = threading.Lock()

    def tables(self) -> tuple[TableFiles, ...]:
        """Every table that exists (none before the first commit), cached for `refresh_s`."""
        with self._lock:
            now = time.monotonic()
            if self._cache is None or now - self._cache[0] >= self.refresh_s:
                self._cache = (now, tuple(t for t in map(self._read, TABLES) if t is not None))
            return self._cache[1]

    def _read(self, name: str) -> TableFiles | None:
        path = table_path(self.sink, name)
        handle = self._kept[name].latest()
        if handle is None:
            return None
        version = handle.version()
        adds = pa.table(handle.get_add_actions(flatten=False))
        sizes = adds.column("size_bytes") if adds.num_rows else pa.array([], pa.int64())
        small = pc.sum(pc.less(sizes, self.small_file_bytes)).as_py() or 0
        try:
            last = os.stat(os.path.join(path, "_delta_log", f"{version:020d}.json")).st_mtime
        except OSError:
            last = None  # cleaned up behind a checkpoint
        return TableFiles(name, version + 1, adds.num_rows, int(small), int(pc.sum(sizes).as_py() or 0), last)

    def last_commit_at(self) -> float | None:
        """Epoch seconds of the newest commit to any table (cached like `tables`)."""
        times = [t.last_commit_at for t in self.tables() if t.last_commit_at is not None]
        return max(times) if times else None
