"""Parquet parts: the files executors write straight into a Delta table's folder.

Executors call `conform` (the existing table's column types) then `write_part`: a
Parquet file lands in the table's folder with its Delta statistics, and a `PartFile`
(plain, picklable data) goes back to the driver, which commits it
(`sexstream.transaction`). A part that is never committed is an orphan: readers go
through the Delta log and never see it; vacuum removes it.

Every committed file holds each of its columns in exactly the table's type: parts that
disagree (a header key that is int64 in one image and string in another) are rewritten
by the driver at commit, so delta-rs, `pyarrow.dataset` and Spark can all read the file
list.
"""
from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake.transaction import AddAction

#: Longer strings get no min/max statistics (Delta readers then just read the file).
MAX_STATS_STRING = 256

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_CAST_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)


@dataclass(frozen=True)
class PartFile:
    """One Parquet file written into a table's folder, not yet committed.

    `path` is relative to the table folder, `size` in bytes, `modification_time` in ms
    since the Unix epoch; `stats` is Delta's statistics JSON (numRecords, minValues,
    maxValues, nullCount) and `schema` the file's Arrow schema, IPC-serialized.
    """

    path: str
    size: int
    modification_time: int
    num_records: int
    stats: str
    schema: bytes

    @property
    def arrow_schema(self) -> pa.Schema:
        """The Arrow schema of the file."""
        return pa.ipc.read_schema(pa.py_buffer(self.schema))

    def add_action(self) -> AddAction:
        """The Delta add action that commits this file."""
        return AddAction(self.path, self.size, {}, self.modification_time, True, self.stats)


# --- types ---------------------------------------------------------------------------

def delta_type(dtype: pa.DataType) -> pa.DataType:
    """The Arrow type a column of `dtype` is stored as in a Delta table.

    Unsigned ints widen to the next signed int (uint64 -> int64), float16 -> float32,
    dictionaries -> their values, large/view/fixed variants -> plain string, binary and
    list, every timestamp -> timestamp[us, UTC] (naive values are taken as UTC),
    date64 -> date32; nested children are made nullable.
    """
    t = pa.types
    if t.is_dictionary(dtype):
        return delta_type(dtype.value_type)
    if t.is_large_string(dtype) or t.is_string_view(dtype):
        return pa.string()
    if t.is_large_binary(dtype) or t.is_binary_view(dtype) or t.is_fixed_size_binary(dtype):
        return pa.binary()
    if t.is_unsigned_integer(dtype):
        return {8: pa.int16(), 16: pa.int32()}.get(dtype.bit_width, pa.int64())
    if t.is_float16(dtype):
        return pa.float32()
    if t.is_timestamp(dtype):
        return pa.timestamp("us", "UTC")
    if t.is_date64(dtype):
        return pa.date32()
    if (t.is_list(dtype) or t.is_large_list(dtype) or t.is_fixed_size_list(dtype)
            or t.is_list_view(dtype) or t.is_large_list_view(dtype)):
        return pa.list_(pa.field("element", delta_type(dtype.value_type)))
    if t.is_struct(dtype):
        return pa.struct([pa.field(f.name, delta_type(f.type)) for f in dtype])
    if t.is_map(dtype):
        return pa.map_(delta_type(dtype.key_type), delta_type(dtype.item_type))
    return dtype


def _cast(column: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray:
    """`column` as `target`; values that cannot be represented become null (never raises)."""
    source = column.type
    if source.equals(target):
        return column
    if pa.types.is_null(source):
        return pa.chunked_array([pa.nulls(len(column), target)], target)
    t = pa.types
    lossy_ok = ((t.is_integer(source) or t.is_floating(source)) and t.is_floating(target)) or (
        t.is_temporal(source) and t.is_temporal(target))
    try:
        return column.cast(target, safe=not lossy_ok)
    except _CAST_ERRORS:
        pass
    if pa.types.is_nested(source) or pa.types.is_nested(target):
        try:
            return column.cast(target, safe=False)
        except _CAST_ERRORS:
            return pa.chunked_array([pa.nulls(len(column), target)], target)
    # Value by value (distinct values only: header keys repeat on every row).
    distinct = pc.unique(column)
    converted = []
    for value in distinct:
        try:
            converted.append(value.cast(target).as_py())
        except _CAST_ERRORS:
            converted.append(None)
    lookup = pa.array(converted, type=target)
    return pa.chunked_array([lookup.take(pc.index_in(column, value_set=distinct))], target)


def conform(table: pa.Table, schema: pa.Schema | None) -> pa.Table:
    """`table` with the columns that `schema` knows cast to their type there.

    Executors call this with the existing table's schema before `write_part`. Casts
    that lose nothing are made (int -> float, anything -> string when the table's
    column is string, "2.5" -> 2.5, 30.0 -> 30); a value that cannot be represented in
    the table's type becomes null (30.5 in an int64 column, "n/a" in a float64 one).
    Columns `schema` does not have pass through with their own type.
    """
    if schema is None:
        return table
    arrays, fields = [], []
    for field, column in zip(table.schema, table.columns):
        if field.name in schema.names:
            target = delta_type(schema.field(field.name).type)
            column = _cast(column, target)
            field = pa.field(field.name, target)
        arrays.append(column)
        fields.append(field)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def concat(tables: list[pa.Table], schema: pa.Schema | None = None) -> pa.Table:
    """`tables` (e.g. the catalogs of one task's images) as one table for `write_part`.

    Each is conformed to `schema` (the existing table's, or None); a column `schema`
    lacks gets one type across `tables`, by the rule of `commit_schema`; a column
    missing from one of `tables` is null in its rows.
    """
    tables = [conform(t, schema) for t in tables]
    types: dict[str, list[pa.DataType]] = {}
    for table in tables:
        for field in table.schema:
            if not pa.types.is_null(field.type):
                types.setdefault(field.name, []).append(field.type)
    common = pa.schema([pa.field(name, delta_type(_promote(ts))) for name, ts in types.items()])
    if not tables:
        return common.empty_table()
    return pa.concat_tables([conform(t, common) for t in tables], promote_options="default")


def _promote(types: list[pa.DataType]) -> pa.DataType:
    """One type for a new column that parts of a batch carry with different types."""
    distinct: list[pa.DataType] = []
    for dtype in types:
        if not any(dtype.equals(d) for d in distinct):
            distinct.append(dtype)
    if len(distinct) == 1:
        return distinct[0]
    if all(pa.types.is_integer(d) or pa.types.is_floating(d) for d in distinct):
        return pa.float64() if any(pa.types.is_floating(d) for d in distinct) else pa.int64()
    if not any(pa.types.is_nested(d) for d in distinct):
        return pa.string()
    return distinct[0]


def commit_schema(table_schema: pa.Schema | None, parts: list[PartFile]) -> pa.Schema | None:
    """The table's schema after committing `parts`: its columns, then the new ones.

    A new column gets its type from the parts; when they disagree: int + float ->
    float64, any other mix of plain types -> string. None when there is neither a table
    nor a part.
    """
    fields = [pa.field(f.name, delta_type(f.type)) for f in table_schema] if table_schema else []
    known = {f.name for f in fields}
    new: dict[str, list[pa.DataType]] = {}
    for part in parts:
        for field in part.arrow_schema:
            if field.name not in known:
                new.setdefault(field.name, []).append(field.type)
    fields += [pa.field(name, delta_type(_promote(types))) for name, types in new.items()]
    return pa.schema(fields) if fields else None


# --- statistics ----------------------------------------------------------------------

def _timestamp_text(micros: int, round_up: bool) -> str:
    millis = -((-micros) // 1000) if round_up else micros // 1000
    moment = _EPOCH + timedelta(milliseconds=millis)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _min_max(column: pa.ChunkedArray) -> tuple[object, object]:
    """JSON-ready (min, max) of a non-empty plain column; None where unknown."""
    dtype = column.type
    if pa.types.is_floating(dtype):
        if pc.any(pc.is_nan(column)).as_py():
            return None, None        # NaN sorts above everything for Spark: no bound is safe
        bounds = pc.min_max(column)
        lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
        finite = lambda v: v if v is not None and abs(v) != float("inf") else None  # noqa: E731
        return finite(lo), finite(hi)
    if pa.types.is_timestamp(dtype):
        bounds = pc.min_max(column.cast(pa.int64()))
        return (_timestamp_text(bounds["min"].as_py(), False),
                _timestamp_text(bounds["max"].as_py(), True))
    if not (pa.types.is_integer(dtype) or pa.types.is_string(dtype) or pa.types.is_date32(dtype)
            or pa.types.is_boolean(dtype)):
        return None, None
    bounds = pc.min_max(column)
    lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
    if pa.types.is_date32(dtype):
        return lo.isoformat(), hi.isoformat()
    if pa.types.is_string(dtype) and max(len(lo), len(hi)) > MAX_STATS_STRING:
        return None, None
    return lo, hi


def delta_stats(table: pa.Table) -> str:
    """Delta `add.stats` JSON of `table`: numRecords, minValues, maxValues, nullCount.

    Plain columns only (lists and structs get none). Bounds are exact, except
    timestamps (milliseconds, the max rounded up). Float columns holding NaN, and
    infinite bounds, are left out, as are strings longer than `MAX_STATS_STRING`.
    """
    mins: dict[str, object] = {}
    maxs: dict[str, object] = {}
    nulls: dict[str, int] = {}
    for name, column in zip(table.column_names, table.columns):
        if pa.types.is_nested(column.type):
            continue
        nulls[name] = column.null_count
        if column.null_count == len(column):
            continue
        lo, hi = _min_max(column)
        if lo is not None:
            mins[name] = lo
        if hi is not None:
            maxs[name] = hi
    return json.dumps({"numRecords": table.num_rows, "minValues": mins, "maxValues": maxs,
                       "nullCount": nulls}, allow_nan=False)


# --- parts ---------------------------------------------------------------------------

def write_part(table_dir: str | os.PathLike[str], table: pa.Table, *, batch_id: int,
               task_tag: str, row_group_size: int | None = None,
               use_dictionary: bool | list[str] = True) -> PartFile | None:
    """Write `table` as a new Parquet file in `table_dir` (created if missing).

    The file is named `part-b{batch_id:08d}-{task_tag}-{uuid}.snappy.parquet`, so
    retried tasks and replays never overwrite each other. Columns are stored in their
    Delta type (`delta_type`); columns of the null type are dropped (readers see null).
    The file is fsync'ed before returning. Returns None when there is no row to write.
    `row_group_size` (rows) and `use_dictionary` (True, or the columns to
    dictionary-encode) default to pyarrow's.
    """
    keep = [name for name, column in zip(table.column_names, table.columns)
            if not pa.types.is_null(column.type)]
    if table.num_rows == 0 or not keep:
        return None
    table = table.select(keep)
    fields = [pa.field(f.name, delta_type(f.type)) for f in table.schema]
    table = pa.Table.from_arrays([_cast(c, f.type) for c, f in zip(table.columns, fields)],
                                 schema=pa.schema(fields))
    tag = re.sub(r"[^A-Za-z0-9_.-]", "_", str(task_tag)) or "task"
    name = f"part-b{batch_id:08d}-{tag}-{uuid.uuid4().hex}.snappy.parquet"
    folder = Path(table_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / name, "wb") as fh:
        pq.write_table(table, fh, compression="snappy", row_group_size=row_group_size,
                       use_dictionary=use_dictionary)
        fh.flush()
        os.fsync(fh.fileno())
    st = os.stat(folder / name)
    return PartFile(path=name, size=st.st_size, modification_time=st.st_mtime_ns // 1_000_000,
                    num_records=table.num_rows, stats=delta_stats(table),
                    schema=table.schema.serialize().to_pybytes())
