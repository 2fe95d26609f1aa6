"""Arrow schemas of the two tables' fixed columns, and image records -> Arrow rows.

See docs/tables.md for the meaning of every column.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

import pyarrow as pa

SOURCES = "sources"
IMAGES = "images"
TABLES = (SOURCES, IMAGES)

UTC_US = pa.timestamp("us", tz="UTC")
FOOTPRINT = pa.struct([("ext_number", pa.int32()), ("hdu", pa.int32()),
                       ("ra", pa.list_(pa.float64())), ("dec", pa.list_(pa.float64()))])

#: The images table's fixed columns, in order; header keys come after `footprints`.
IMAGE_FIELDS = (
    ("path", pa.string()), ("image_id", pa.string()), ("content_hash", pa.string()),
    ("size", pa.int64()), ("mtime", UTC_US), ("status", pa.string()), ("reason", pa.string()),
    ("n_sources", pa.int64()), ("n_extensions", pa.int32()), ("footprints", pa.list_(FOOTPRINT)),
)
IMAGE_TAIL_FIELDS = (
    ("obs_mjd", pa.float64()), ("sextractor_version", pa.string()), ("config_hash", pa.string()),
    ("host", pa.string()), ("started", UTC_US), ("duration_s", pa.float64()),
    ("attempts", pa.int32()), ("current", pa.bool_()), ("psf_model", pa.string()),
)
BOOKKEEPING = (("batch_id", pa.int64()), ("ingest_time", UTC_US))


def header_column(values: list[Any]) -> pa.Array:
    """Arrow array of header values keeping their FITS type; mixed types fall back to
    float (int and float) or string (anything else); all-missing gives a null array."""
    present = [v for v in values if v is not None]
    if not present:
        return pa.nulls(len(values))
    kinds = {type(v) for v in present}
    if kinds <= {int, float} and bool not in kinds:
        typ = pa.int64() if kinds == {int} else pa.float64()
        return pa.array(values, type=typ)
    if kinds == {bool}:
        return pa.array(values, type=pa.bool_())
    if kinds == {str}:
        return pa.array(values, type=pa.string())
    return pa.array([None if v is None else str(v) for v in values], type=pa.string())


def images_table(records: list[dict], fitskeys: tuple[str, ...], batch_id: int,
                 ingest_time: datetime) -> pa.Table:
    """One row per image record (from `extractor.extract`), typed as docs/tables.md says;
    `current` is true (a newer verdict on the path later sets it false)."""
    cols: dict[str, pa.Array] = {}
    for name, typ in IMAGE_FIELDS:
        cols[name] = pa.array([r.get(name) for r in records], type=typ)
    for key in fitskeys:
        cols[key] = header_column([r.get(key) for r in records])
    for name, typ in IMAGE_TAIL_FIELDS:
        cols[name] = pa.array([r.get(name, True if name == "current" else None) for r in records], type=typ)
    return stamp(pa.table(cols), batch_id, ingest_time)


def stamp(table: pa.Table, batch_id: int, ingest_time: datetime) -> pa.Table:
    """Append the bookkeeping columns `batch_id` and `ingest_time` to a part's rows."""
    n = table.num_rows
    table = table.append_column("batch_id", pa.array([batch_id] * n, pa.int64()))
    return table.append_column("ingest_time", pa.array([ingest_time] * n, UTC_US))


def with_columns(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with exactly `schema`'s columns, in its order and types: a column the
    table lacks (a file written before the column existed) is all null."""
    arrays = []
    for field in schema:
        if field.name in table.column_names:
            column = table[field.name]
            arrays.append(column if column.type.equals(field.type) else column.cast(field.type))
        else:
            arrays.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)
