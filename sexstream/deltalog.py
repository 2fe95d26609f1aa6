"""Follow a Delta table commit by commit: the new versions' files, never a full re-read.

`DeltaTail.snapshot()` reads the table once (through `deltalake`, so checkpoints and
log clean-up are handled); afterwards `DeltaTail.poll()` parses only the new
`_delta_log/<version>.json` commit files and returns their `add` actions, whose Parquet
files the caller reads with `read_add` (only the columns it needs).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.parquet as pq

_COMMIT_NAME = re.compile(r"^(\d{20})\.json$")


@dataclass(frozen=True)
class AddFile:
    """A data file a commit added: absolute local path and partition values (strings)."""

    path: str
    partition_values: dict[str, str | None] = field(default_factory=dict)
    data_change: bool = True


@dataclass(frozen=True)
class Commit:
    """The parts of one Delta commit the dashboard needs.

    `visible_at` is when the commit file appeared (its mtime, Unix seconds);
    `rewrites` is True when the commit removed data (delete/overwrite), after which an
    incremental reader must start over from a snapshot.
    """

    version: int
    adds: tuple[AddFile, ...]
    rewrites: bool
    visible_at: float
    timestamp_ms: int | None


class DeltaTail:
    """The reading position in one Delta table (`<sink>/images` or `<sink>/sources`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.log_dir = self.path / "_delta_log"
        self.version = -1
        self.schema: pa.Schema | None = None

    def exists(self) -> bool:
        """True once the table's first commit is there."""
        return (self.log_dir / f"{0:020d}.json").exists() or any(self._checkpoints())

    def _checkpoints(self) -> list[Path]:
        try:
            return [p for p in self.log_dir.iterdir() if ".checkpoint" in p.name]
        except FileNotFoundError:
            return []

    def snapshot(self) -> list[AddFile]:
        """All live files of the latest version, and move the position there."""
        from deltalake import DeltaTable

        table = DeltaTable(str(self.path))
        adds = pa.table(table.get_add_actions(flatten=False)).to_pylist()
        self.version = table.version()
        self.schema = pa.schema(table.schema().to_arrow())
        return [AddFile(self._local(a["path"]), dict(a.get("partition") or {})) for a in adds]

    def _local(self, uri: str) -> str:
        """Absolute local path of an add action's (relative, URL-encoded) path or URI."""
        if "://" in uri:
            return unquote(urlparse(uri).path)
        return str(self.path / unquote(uri))

    def has_gap(self) -> bool:
        """True when the log holds a commit beyond the next one but not the next one.

        That happens when log clean-up ran while nobody was reading; the caller then
        takes a new snapshot.
        """
        if (self.log_dir / f"{self.version + 1:020d}.json").exists():
            return False
        try:
            names = os.listdir(self.log_dir)
        except FileNotFoundError:
            return False
        versions = [int(m.group(1)) for m in map(_COMMIT_NAME.match, names) if m]
        return bool(versions) and max(versions) > self.version + 1

    def poll(self) -> Iterator[Commit]:
        """The commits after the current position, in order, one at a time.

        The position moves past a commit when the caller asks for the next one, so a
        commit whose files could not be read (the caller raised) is read again next
        time. Stops at the first missing or unreadable commit file.
        """
        while True:
            version = self.version + 1
            path = self.log_dir / f"{version:020d}.json"
            try:
                text = path.read_text()
                visible_at = path.stat().st_mtime
            except FileNotFoundError:
                return
            try:
                actions = [json.loads(line) for line in text.splitlines() if line.strip()]
            except json.JSONDecodeError:
                return
            yield self._commit(version, actions, visible_at)
            self.version = version

    def _commit(self, version: int, actions: list[dict], visible_at: float) -> Commit:
        adds, rewrites, timestamp = [], False, None
        for action in actions:
            if "add" in action:
                add = action["add"]
                adds.append(AddFile(self._local(add["path"]),
                                    dict(add.get("partitionValues") or {}),
                                    bool(add.get("dataChange", True))))
            elif "remove" in action:
                rewrites |= bool(action["remove"].get("dataChange", True))
            elif "commitInfo" in action:
                timestamp = action["commitInfo"].get("timestamp")
            elif "metaData" in action:
                self.schema = None
        return Commit(version, tuple(adds), rewrites, visible_at, timestamp)


def read_add(add: AddFile, columns: list[str], schema: pa.Schema | None = None,
             dictionary: tuple[str, ...] = ()) -> pa.Table:
    """The wanted `columns` of one added Parquet file (those it has).

    Columns named in `dictionary` are read dictionary-encoded (cheap for repeated
    strings such as image_id). Partition columns, absent from the file, are filled from
    the add's partition values (cast to their type in `schema` when given, else strings).
    """
    file_schema = pq.read_schema(add.path)
    present = [c for c in columns if c in file_schema.names]
    table = pq.read_table(add.path, columns=present, partitioning=None,
                          read_dictionary=[c for c in dictionary if c in present])
    for name in columns:
        if name in add.partition_values and name not in table.column_names:
            value = add.partition_values[name]
            typ = schema.field(name).type if schema is not None and name in schema.names else pa.string()
            column = pa.array([value] * table.num_rows, pa.string())
            table = table.append_column(name, column.cast(typ) if typ != pa.string() else column)
    return table
