"""A Delta table followed from question to question: its version, schema and live files
(with their statistics), refreshed incrementally (only new log entries are read)."""
from __future__ import annotations

import os
import threading

import pyarrow as pa

from sexstream.tables import KeptTable


class Snapshot:
    """The latest state of the Delta table at `table_dir` (which may not exist yet)."""

    def __init__(self, table_dir: str | os.PathLike[str]) -> None:
        self.path = os.path.abspath(str(table_dir))
        self.version = -1
        #: The live files: path, size_bytes, num_records, null_count.*, min.*, max.*.
        self.files: pa.Table | None = None
        self.schema: pa.Schema | None = None
        self._kept = KeptTable(self.path)
        self._lock = threading.Lock()

    def refresh(self) -> int:
        """Follow the table to its latest version; returns it (-1: no table)."""
        with self._lock:
            table = self._kept.latest()
            version = -1 if table is None else table.version()
            if version != self.version:
                self.version = version
                self.files = None if table is None else pa.table(table.get_add_actions(flatten=True))
                self.schema = None if table is None else pa.schema(table.schema().to_arrow())
            return version
