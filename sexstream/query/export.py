"""Query results out: astropy Tables with units, pandas, and the files TOPCAT, Aladin and
astropy open (CSV, Parquet, FITS binary tables, VOTable).

Results travel as Arrow tables inside `sexstream.query`; `to_astropy` makes the Table
users get (nulls as masks, timestamps as ISO-8601 UTC strings,
list columns as fixed-size array columns when every row has the same length, else as
JSON text), with units taken from the column names (degrees, arcsec, mag, pixels, days).
Text columns are fixed-width UTF-8 bytes (numpy `S`, as astropy reads FITS tables: shown
and compared as text; numpy unicode would cost a second per million rows).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: Output formats by file suffix.
FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".fits": "fits",
           ".fit": "fits", ".fits.gz": "fits", ".vot": "votable", ".votable": "votable",
           ".xml": "votable", ".png": "png"}
_UNIT_EXACT = {"separation_arcsec": "arcsec", "obs_mjd": "d", "MJD-OBS": "d", "RA_DEG": "deg",
               "DEC_DEG": "deg", "EXPTIME": "s"}
_UNIT_PREFIX = (("ALPHA", "deg"), ("DELTA", "deg"), ("MAGERR", "mag"), ("MAG_", "mag"),
                ("FLUXERR", "adu"), ("FLUX_", "adu"), ("THETA", "deg"))


def unit_of(name: str) -> str | None:
    """The unit of a result column, from its name (None when unknown or unitless)."""
    if name in _UNIT_EXACT:
        return _UNIT_EXACT[name]
    for prefix, unit in _UNIT_PREFIX:
        if name.startswith(prefix):
            return unit
    if name.endswith("_IMAGE"):
        return "pix"
    return None


def format_of(output: str | None) -> str:
    """The format of an output file name: csv (also for None or '-', stdout), parquet,
    fits, votable or png; ValueError for another suffix."""
    if output in (None, "-"):
        return "csv"
    name = str(output).lower()
    for suffix in sorted(FORMATS, key=len, reverse=True):
        if name.endswith(suffix):
            return FORMATS[suffix]
    raise ValueError(f"cannot tell the format of {output!r}: name it *.csv, *.parquet, "
                     "*.fits, *.vot (VOTable) or *.png")


def _json_text(column: pa.ChunkedArray) -> np.ndarray:
    return _text(["" if v is None else json.dumps(v) for v in column.to_pylist()])


def _text(values: list[str]) -> np.ndarray:
    """UTF-8 bytes, fixed width: what FITS holds and astropy shows as text."""
    return np.array([v.encode() for v in values], dtype="S")


def _strings(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """A string column as (fixed-width UTF-8 bytes, null mask), each distinct value
    encoded once (a column repeats few values: paths, filters, ids of a few images)."""
    encoded = pc.dictionary_encode(column).combine_chunks()
    values = _text(encoded.dictionary.to_pylist() + [""])
    index = np.asarray(pc.fill_null(encoded.indices, -1), np.int64)
    return values[index], index < 0


def _timestamps(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """ISO-8601 UTC text of a timestamp column (formatted once per distinct value)."""
    micros = np.asarray(pc.fill_null(column.cast(pa.timestamp("us", "UTC")).cast(pa.int64()), 0))
    distinct, index = np.unique(micros, return_inverse=True)
    text = pc.strftime(pa.array(distinct).cast(pa.timestamp("us", "UTC")), format="%Y-%m-%dT%H:%M:%S")
    return _text(text.to_pylist())[index], np.asarray(column.is_null(), bool)


def _numpy(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray | None]:
    """(values, null mask or None) of an Arrow column in the types FITS and VOTable hold."""
    dtype = column.type
    mask = np.asarray(column.is_null(), bool) if column.null_count else None
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return _strings(column)
    if pa.types.is_timestamp(dtype):
        return _timestamps(column)
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        lengths = np.asarray(pc.fill_null(pc.list_value_length(column), -1))
        inner = column.type.value_type
        if len(lengths) and (lengths == lengths[0]).all() and lengths[0] > 0 and \
                (pa.types.is_integer(inner) or pa.types.is_floating(inner)):
            flat = pc.list_flatten(column).to_numpy(zero_copy_only=False)
            return flat.reshape(len(lengths), int(lengths[0])), None
        return _json_text(column), mask
    if pa.types.is_floating(dtype):
        return np.asarray(pc.fill_null(column, np.nan).to_numpy(zero_copy_only=False)), mask
    if pa.types.is_integer(dtype) or pa.types.is_boolean(dtype):
        fill = False if pa.types.is_boolean(dtype) else 0
        return np.asarray(pc.fill_null(column, fill).to_numpy(zero_copy_only=False)), mask
    return _json_text(column), mask


def to_astropy(table: pa.Table, meta: dict[str, Any] | None = None):
    """An astropy Table of an Arrow result, with units and `meta` (e.g. the query)."""
    from astropy.table import MaskedColumn, Table

    out = Table(meta=dict(meta or {}))
    for name in table.column_names:
        values, mask = _numpy(table[name])
        unit = unit_of(name)
        out[name] = MaskedColumn(values, mask=mask, unit=unit) if mask is not None and mask.any() \
            else values
        if unit and mask is None:
            out[name].unit = unit
    return out


def to_pandas(table: pa.Table):
    """A pandas DataFrame of an Arrow result (text as str, lists as Python lists)."""
    return table.to_pandas()


def write(table: pa.Table, output: str | None, *, meta: dict[str, Any] | None = None,
          stream: IO[bytes] | None = None) -> str:
    """Write a result to `output` in the format its suffix names (see `format_of`); CSV
    to `stream` (default stdout) when `output` is None or '-'. Returns the format."""
    fmt = format_of(output)
    if fmt == "png":
        raise ValueError("a .png is drawn from a light curve (sexstream lightcurve -o curve.png)")
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table.replace_schema_metadata(
            {k: json.dumps(v) for k, v in (meta or {}).items()}), output)
    elif fmt == "csv":
        import pyarrow.csv as pacsv

        flat = pa.table({name: (pa.array(_json_text(col)) if pa.types.is_nested(col.type) else col)
                         for name, col in zip(table.column_names, table.columns)})
        target = stream or sys.stdout.buffer if output in (None, "-") else output
        pacsv.write_csv(flat, target)
    else:
        astro = to_astropy(table, {k: str(v) for k, v in (meta or {}).items()})
        if fmt == "fits":
            astro.write(output, format="fits", overwrite=True)
        else:
            _write_votable(astro, output)
    return fmt


def _write_votable(table, output: str) -> None:
    """VOTable (TABLEDATA) through astropy; `meta` goes into INFO elements."""
    import warnings

    from astropy.io.votable import from_table
    from astropy.io.votable.tree import Info

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # column names like MJD-OBS are not valid XML ids
        votable = from_table(table)
        element = votable.get_first_table()
        for key, value in table.meta.items():
            element.infos.append(Info(name=str(key), value=str(value)))
        votable.to_xml(str(Path(output)))
