"""Reading the two Delta tables under a sink folder: `<sink>/sources` and `<sink>/images`.

Every read goes through the Delta log, so part files that were written but never
committed (orphans) are never seen. The columns are described in docs/tables.md.

Local tables are read through pyarrow's own LocalFileSystem rather than delta-rs's
default Python file-system handler: with deltalake 1.6.6 + pyarrow 26, a process that
read through the default handler aborts at exit about one time in three ("terminate
called without an active exception", exit status 134; delta-rs issue #2184).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from sexstream.schema import IMAGES, SOURCES

if TYPE_CHECKING:
    import pandas as pd



def table_path(sink: str | os.PathLike[str], name: str) -> str:
    """The folder of the table `name` (`SOURCES` or `IMAGES`) inside the sink folder."""
    return str(Path(sink) / name)


def sources_path(sink: str | os.PathLike[str]) -> str:
    """The folder of the sources table (one row per detected source)."""
    return table_path(sink, SOURCES)


def images_path(sink: str | os.PathLike[str]) -> str:
    """The folder of the images table (one row per image and attempt)."""
    return table_path(sink, IMAGES)


def open_table(table_dir: str | os.PathLike[str]) -> DeltaTable | None:
    """The Delta table at `table_dir` at its latest version, or None if there is none."""
    try:
        return DeltaTable(str(table_dir))
    except TableNotFoundError:
        return None


def refresh(table: DeltaTable, table_dir: str | os.PathLike[str]) -> None:
    """Bring a kept handle of the table at `table_dir` to its latest version. On a local
    folder the log is listed (`update_incremental`) only when the next commit's file
    exists: a listing costs in proportion to the log's files, a look at one name does
    not (README, Performance: commit cost after 20,000 commits)."""
    folder = str(table_dir)
    if "://" not in folder and not os.path.exists(
            os.path.join(folder, "_delta_log", f"{table.version() + 1:020d}.json")):
        return
    table.update_incremental()


def _last_checkpoint(table_dir: str) -> bytes | None:
    """The bytes of the table's `_delta_log/_last_checkpoint` (None: none, or not local):
    they change when a new Delta checkpoint is written."""
    if "://" in table_dir:
        return None
    try:
        with open(os.path.join(table_dir, "_delta_log", "_last_checkpoint"), "rb") as fh:
            return fh.read()
    except OSError:
        return None


class KeptTable:
    """A handle of the Delta table at `table_dir` kept between uses and followed to its
    latest version (`latest`): `refresh` while the table's newest checkpoint is the one
    it was opened at, opened anew at each new checkpoint (a handle's log segment starts
    at the checkpoint it was opened at, and the maintenance removes expired log entries
    before the newest one) or when following it fails. Not thread-safe."""

    def __init__(self, table_dir: str | os.PathLike[str]) -> None:
        self.path = str(table_dir)
        self.table: DeltaTable | None = None
        self._checkpoint: bytes | None = None

    def latest(self) -> DeltaTable | None:
        """The table at its latest version; None while it does not exist."""
        marker = _last_checkpoint(self.path)
        if self.table is not None and marker == self._checkpoint:
            try:
                refresh(self.table, self.path)
                return self.table
            except Exception:  # noqa: BLE001 (the log changed behind the handle): open it afresh
                pass
        self.table, self._checkpoint = open_table(self.path), marker
        return self.table


def _empty(columns: list[str] | None) -> pa.Table:
    return pa.table({name: pa.array([], pa.null()) for name in columns or []})


def read_table(table_dir: str | os.PathLike[str], columns: list[str] | None = None,
               filters: Any = None) -> pa.Table:
    """All committed rows of the Delta table at `table_dir`.

    `columns` selects columns; `filters` is a DNF list of (column, op, value) tuples or
    a `pyarrow.dataset.Expression` (files whose statistics exclude it are not read).
    A missing table reads as an empty table (with `columns`, all of null type).
    """
    table = open_table(table_dir)
    if table is None:
        return _empty(columns)
    return table.to_pyarrow_table(columns=columns, filters=filters, filesystem=_filesystem(table_dir))


def _filesystem(table_dir: str | os.PathLike[str]):
    """pyarrow's own file system for a local table (see the module doc), else None."""
    if "://" in str(table_dir):
        return None
    return pafs.SubTreeFileSystem(os.path.abspath(str(table_dir)), pafs.LocalFileSystem())


def open_dataset(table_dir: str | os.PathLike[str]):
    """A `pyarrow.dataset.Dataset` of the table's committed files (None: no table), for
    streaming reads in record batches."""
    table = open_table(table_dir)
    return None if table is None else table.to_pyarrow_dataset(filesystem=_filesystem(table_dir))


def read_sources(sink: str | os.PathLike[str], columns: list[str] | None = None,
                 filters: Any = None) -> pa.Table:
    """The sources table (see `read_table` for `columns` and `filters`)."""
    return read_table(sources_path(sink), columns, filters)


def read_images(sink: str | os.PathLike[str], columns: list[str] | None = None,
                filters: Any = None) -> pa.Table:
    """The images table, every attempt (see `latest_images` for one row per path)."""
    return read_table(images_path(sink), columns, filters)


def read_sources_pandas(sink: str | os.PathLike[str], columns: list[str] | None = None,
                        filters: Any = None) -> pd.DataFrame:
    """`read_sources` as a pandas DataFrame."""
    return read_sources(sink, columns, filters).to_pandas()


def read_images_pandas(sink: str | os.PathLike[str], columns: list[str] | None = None,
                       filters: Any = None) -> pd.DataFrame:
    """`read_images` as a pandas DataFrame."""
    return read_images(sink, columns, filters).to_pandas()


def latest_images(sink: str | os.PathLike[str], columns: list[str] | None = None) -> pa.Table:
    """One images row per path: the newest current verdict on that file.

    Current rows are those not marked `current = false` (a newer measurement of the path
    under the same config superseded them). Among them, newest means the latest
    `ingest_time` (the driver's commit clock, comparable across the daemon and replays,
    whose batch_ids are not), then the highest `batch_id`, then the latest `started`.
    Rows are sorted by path.
    """
    images = read_images(sink)
    if "path" not in images.column_names:
        return _empty(columns)
    if "current" in images.column_names:
        images = images.filter(pc.invert(pc.fill_null(pc.equal(images["current"], False), False)))
    order = [("path", "ascending")] + [(name, "descending") for name in
                                       ("ingest_time", "batch_id", "started")
                                       if name in images.column_names]
    images = images.sort_by(order)
    paths = images.column("path").to_numpy(zero_copy_only=False)
    first = np.ones(len(paths), dtype=bool)
    first[1:] = paths[1:] != paths[:-1]
    latest = images.filter(pa.array(first))
    return latest.select(columns) if columns else latest
