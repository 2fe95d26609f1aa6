"""The sources table's layout: sorted runs of files clustered by `healpix`.

Streaming appends one small file per image and batch, each file's rows spread over the
image's part of the sky. A *run* is a set of files written together whose rows are
sorted by `healpix` (nulls last): each file holds one range of cells, disjoint from the
run's other files, in row groups of `row_group_rows`, so a cone's cells fall in one or
two row groups of each run (file and row-group statistics do the rest). Files of a run
are named `part-b00000000-hpx-<run>-<uuid>.snappy.parquet`; any other file is *tail*.

`sort_tail` turns tail files into runs (in groups of at most `sort_rows` rows held in
memory), `merge_runs` merges runs into one, reading each of their row groups once and
holding about one row group per run plus one output file in memory. Each step is one
Delta commit that removes its inputs and adds its outputs (`dataChange` false: the
rows are the same), retried when a concurrent writer (the daemon's appends) got in
first, and given up, its new files deleted, when another rewrite removed an input.
The policy (which step, when) is `sexstream.maintenance.cluster_sources`.
"""
from __future__ import annotations

import os
import random
import re
import time
import uuid
from dataclasses import dataclass
from urllib.parse import unquote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from deltalake.exceptions import CommitFailedError
from deltalake.transaction import AddAction, CommitProperties, RemoveAction

from sexstream import parts
from sexstream.schema import with_columns
from sexstream.tables import open_table
from sexstream.transaction import HOOKS

#: Key of a null healpix: sorts after every cell.
NULL_KEY = np.iinfo(np.int64).max
_RUN = re.compile(r"-hpx-([0-9a-f]{12})-")
_ATTEMPTS = 50


@dataclass(frozen=True)
class DataFile:
    """A live file of the table: its path (relative), size, rows and healpix bounds."""

    path: str
    size: int
    rows: int
    lo: int
    hi: int

    @property
    def run(self) -> str | None:
        """The run the file belongs to (None: a tail file)."""
        match = _RUN.search(self.path)
        return match.group(1) if match else None


def data_files(table) -> list[DataFile]:
    """The live files of a Delta table, in log order, with their healpix bounds (a file
    with a null healpix has hi = NULL_KEY)."""
    files = pa.table(table.get_add_actions(flatten=True))
    n = files.num_rows
    get = lambda name, fill: (np.asarray(pc.fill_null(files[name], fill).to_numpy(zero_copy_only=False))  # noqa: E731
                              if name in files.column_names else np.full(n, fill))
    lo, hi = get("min.healpix", NULL_KEY), get("max.healpix", NULL_KEY)
    nulls = get("null_count.healpix", 1)
    hi = np.where(nulls > 0, NULL_KEY, hi)
    return [DataFile(p, int(s), int(r), int(a), int(b)) for p, s, r, a, b in zip(
        files["path"].to_pylist(), files["size_bytes"].to_pylist(),
        files["num_records"].to_pylist(), lo, hi)]


def runs_of(files: list[DataFile]) -> tuple[dict[str, list[DataFile]], list[DataFile]]:
    """(runs by id, each sorted by its files' ranges; tail files in log order)."""
    runs: dict[str, list[DataFile]] = {}
    tail = []
    for f in files:
        if f.run is None:
            tail.append(f)
        else:
            runs.setdefault(f.run, []).append(f)
    return {k: sorted(v, key=lambda f: (f.lo, f.hi)) for k, v in runs.items()}, tail


def sort_key(table: pa.Table | pa.RecordBatch) -> np.ndarray:
    """The clustering key of each row: its healpix, NULL_KEY where null."""
    return np.asarray(pc.fill_null(table.column("healpix"), NULL_KEY), np.int64)


def repetitive_columns(rows: pa.Table, share: float = 0.25) -> list[str]:
    """Columns worth dictionary-encoding: plain columns with at most `share` distinct
    values per row (paths, filters, header values, cells, times of few batches).
    Measurements have (nearly) one value per row: in row groups of 16,384 rows their
    dictionary is as large as the data and slows reading (a 524k-row run file: 43 ->
    33 MB, read in 0.42 -> 0.31 s)."""
    return [name for name, column in zip(rows.column_names, rows.columns)
            if not pa.types.is_nested(column.type)
            and pc.count_distinct(column).as_py() <= share * max(rows.num_rows, 1)]


@dataclass
class Step:
    """One rewrite: files removed, files added, rows moved, whether it was committed."""

    removed: int = 0
    added: int = 0
    rows: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    committed: bool = False


class Writer:
    """Writes one run's files (sorted rows, cut where the key changes) and commits them."""

    def __init__(self, table_dir: str, file_rows: int, row_group_rows: int) -> None:
        self.table_dir = table_dir
        self.file_rows = file_rows
        self.row_group_rows = row_group_rows
        self.run = uuid.uuid4().hex[:12]
        self.parts: list[parts.PartFile] = []

    def write(self, rows: pa.Table) -> None:
        """Write sorted `rows` as files of about `file_rows`, never splitting a cell."""
        if rows.num_rows == 0:
            return
        keys = sort_key(rows)
        changes = np.flatnonzero(np.diff(keys)) + 1
        cuts = [0]
        while rows.num_rows - cuts[-1] > self.file_rows * 1.5:
            k = np.searchsorted(changes, cuts[-1] + self.file_rows)
            if k >= len(changes):
                break
            cuts.append(int(changes[k]))
        cuts.append(rows.num_rows)
        for start, stop in zip(cuts, cuts[1:]):
            chunk = rows.slice(start, stop - start)
            part = parts.write_part(self.table_dir, chunk, batch_id=0, task_tag=f"hpx-{self.run}",
                                   row_group_size=self.row_group_rows,
                                   use_dictionary=repetitive_columns(chunk))
            if part is not None:
                self.parts.append(part)

    def commit(self, removed: list[DataFile], step: Step) -> Step:
        """Replace `removed` by the written files in one commit (see the module doc)."""
        now = int(time.time() * 1000)
        actions = [AddAction(p.path, p.size, {}, p.modification_time, False, p.stats)
                   for p in self.parts]
        actions += [RemoveAction(f.path, False, now, f.size, {}) for f in removed]
        step.added, step.removed = len(self.parts), len(removed)
        step.bytes_written = sum(p.size for p in self.parts)
        wanted = {f.path for f in removed}
        backoff = 0.01
        for _ in range(_ATTEMPTS):
            table = open_table(self.table_dir)
            live = set(pa.table(table.get_add_actions(flatten=False))["path"].to_pylist())
            if not wanted <= live:
                break  # another rewrite took some input first
            try:
                table.create_write_transaction(
                    actions, "append", pa.schema(table.schema().to_arrow()),
                    commit_properties=CommitProperties(
                        max_commit_retries=0,
                        custom_metadata={"sexstream": f"cluster by healpix: run {self.run}"}),
                    post_commithook_properties=HOOKS)
                step.committed = True
                return step
            except CommitFailedError:
                time.sleep(backoff * (0.5 + random.random()))
                backoff = min(2 * backoff, 0.5)
        for p in self.parts:  # never committed: nobody can see them
            try:
                os.remove(os.path.join(self.table_dir, p.path))
            except FileNotFoundError:
                pass
        return step


def _read(table_dir: str, files: list[DataFile], schema: pa.Schema) -> pa.Table:
    paths = [os.path.join(table_dir, unquote(f.path)) for f in files]
    return ds.dataset(paths, schema=schema, format="parquet").to_table()


def sort_tail(table_dir: str, files: list[DataFile], *, file_rows: int,
              row_group_rows: int) -> Step:
    """Sort the rows of `files` (they fit in memory) by healpix into a new run."""
    table = open_table(table_dir)
    schema = pa.schema(table.schema().to_arrow())
    rows = _read(table_dir, files, schema)
    order = np.argsort(sort_key(rows), kind="stable")
    writer = Writer(table_dir, file_rows, row_group_rows)
    writer.write(rows.take(pa.array(order)))
    step = Step(rows=rows.num_rows, bytes_read=sum(f.size for f in files))
    return writer.commit(files, step)


class _RunCursor:
    """A run's rows in key order, one row group at a time."""

    def __init__(self, table_dir: str, files: list[DataFile], schema: pa.Schema) -> None:
        self.schema = schema
        self.groups: list[tuple[int, str, int]] = []  # (lo, path, row group)
        self.bytes = 0
        for f in files:
            path = os.path.join(table_dir, unquote(f.path))
            meta = pq.read_metadata(path)
            j = meta.schema.names.index("healpix") if "healpix" in meta.schema.names else None
            for g in range(meta.num_row_groups):
                st = meta.row_group(g).column(j).statistics if j is not None else None
                lo = st.min if st is not None and st.has_min_max else NULL_KEY
                self.groups.append((int(lo), path, g))
        self.groups.sort(key=lambda item: item[0])
        self.next = 0
        self.buffer = schema.empty_table()
        self._open: dict[str, pq.ParquetFile] = {}

    def take_below(self, bound: int | None) -> pa.Table:
        """The rows whose key is below `bound` (None: all that are left), in key order."""
        pieces = [self.buffer]
        while self.next < len(self.groups) and (bound is None or self.groups[self.next][0] < bound):
            _, path, g = self.groups[self.next]
            handle = self._open.setdefault(path, pq.ParquetFile(path))
            pieces.append(with_columns(handle.read_row_group(g), self.schema))
            self.bytes += sum(handle.metadata.row_group(g).column(j).total_compressed_size
                              for j in range(handle.metadata.num_columns))
            self.next += 1
            if self.next == len(self.groups) or self.groups[self.next][1] != path:
                self._open.pop(path, None)
        rows = pa.concat_tables(pieces) if len(pieces) > 1 else pieces[0]
        if bound is None:
            self.buffer = self.schema.empty_table()
            return rows
        below = sort_key(rows) < bound
        self.buffer = rows.filter(pa.array(~below))
        return rows.filter(pa.array(below))


def merge_runs(table_dir: str, runs: list[list[DataFile]], *, file_rows: int,
               row_group_rows: int) -> Step:
    """Merge sorted runs into one: chunks of about `file_rows` rows, bounded by cell
    values chosen from the row groups' statistics, each sorted and written as a file."""
    table = open_table(table_dir)
    schema = pa.schema(table.schema().to_arrow())
    cursors = [_RunCursor(table_dir, files, schema) for files in runs]
    bounds = _chunk_bounds(runs, cursors, file_rows)
    writer = Writer(table_dir, file_rows, row_group_rows)
    rows = 0
    for bound in [*bounds, None]:
        chunk = pa.concat_tables([c.take_below(bound) for c in cursors])
        order = np.argsort(sort_key(chunk), kind="stable")
        writer.write(chunk.take(pa.array(order)))
        rows += chunk.num_rows
    removed = [f for files in runs for f in files]
    step = Step(rows=rows, bytes_read=sum(c.bytes for c in cursors))
    return writer.commit(removed, step)


def _chunk_bounds(runs: list[list[DataFile]], cursors: list[_RunCursor], file_rows: int) -> list[int]:
    """Increasing key values that cut the merged rows into chunks of about file_rows."""
    total = sum(f.rows for files in runs for f in files)
    groups = sorted(lo for c in cursors for lo, _, _ in c.groups)
    if total <= file_rows or not groups:
        return []
    per_group = total / len(groups)
    every = max(1, int(round(file_rows / per_group)))
    bounds = sorted({groups[i] for i in range(every, len(groups), every)} - {NULL_KEY})
    return bounds
