"""SExtractor's FITS_1.0 catalog -> Arrow, keeping SExtractor's own column types.

NUMBER stays int32, FLAGS int16, fluxes float32, coordinates float64; vector keys become
list columns (``FLUX_APER(3)`` -> list<float32>, ``VIGNET(15,15)`` -> list<list<float32>>).
Header keys are attached per source from its extension's header, then the primary's.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import pyarrow as pa
from astropy.io import fits

from sexstream import inputs
from sexstream.params import Key
from sexstream.schema import header_column

#: Sky coordinates used for the `healpix` column, in order of preference.
SKY_COLUMNS = (("ALPHA_J2000", "DELTA_J2000"), ("ALPHA_SKY", "DELTA_SKY"))


def _native(a: np.ndarray) -> np.ndarray:
    return a.astype(a.dtype.newbyteorder("="), copy=False) if a.dtype.byteorder not in "=|" else a


def _column(values: np.ndarray, axes: int) -> pa.Array:
    values = _native(np.asarray(values))
    n = values.shape[0]
    if axes == 0:
        return pa.array(values)
    if axes == 1:
        flat = values.reshape(n, -1)
        return pa.ListArray.from_arrays(
            pa.array(np.arange(0, flat.size + 1, max(flat.shape[1], 1), dtype=np.int32)
                     if flat.shape[1] else np.zeros(n + 1, np.int32)),
            pa.array(flat.reshape(-1)))
    # 2 axes: astropy gives (n, rows, cols) following TDIM; keep rows as inner lists
    rows = values.reshape(n, values.shape[1] if values.ndim == 3 else 1, -1)
    inner = pa.ListArray.from_arrays(
        pa.array(np.arange(0, rows.size + 1, rows.shape[2], dtype=np.int32)),
        pa.array(rows.reshape(-1)))
    return pa.ListArray.from_arrays(
        pa.array(np.arange(0, n * rows.shape[1] + 1, rows.shape[1], dtype=np.int32)), inner)


def read(cat_path, keys: Sequence[Key], fitskeys: Sequence[str], ext_headers: list[fits.Header],
         primary: fits.Header) -> pa.Table:
    """Read a FITS_1.0 catalog written with `keys`; attach the header keys `fitskeys` per source.

    `ext_headers[i]` is the header of the image SExtractor numbers EXT_NUMBER = i + 1."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fits.open(cat_path, memmap=False) as hdul:
            tables = [h.data for h in hdul if isinstance(h, fits.BinTableHDU) and h.data is not None]
            data = {}
            for key in keys:
                parts = [np.asarray(t[key.name]) for t in tables]
                data[key.name] = np.concatenate(parts) if parts else np.zeros(0)
            ext = np.concatenate([np.asarray(t["EXT_NUMBER"]) for t in tables]) if tables else np.zeros(0, np.int16)
    columns: dict[str, pa.Array] = {}
    for key in keys:
        axes = len(key.size)
        arr = data[key.name]
        if axes == 0 and arr.ndim > 1:  # a vector parameter selected without a size
            axes = 1
        columns[key.name] = _column(arr, axes)
    ext = _native(ext).astype(np.int64)
    idx = pa.array(np.clip(ext - 1, 0, max(len(ext_headers) - 1, 0)))
    for name in fitskeys:
        # typed once from the extensions' values, then one value per source by its extension
        per_ext = [inputs.lookup(name, h, primary) for h in ext_headers]
        columns[name] = header_column(per_ext).take(idx) if per_ext else pa.nulls(len(ext))
    return pa.table(columns)


def healpix_index(ra: np.ndarray, dec: np.ndarray, order: int) -> pa.Array:
    """Nested HEALPix index at `order` of (ra, dec) in degrees; null where not finite."""
    from astropy import units as u
    from astropy_healpix import HEALPix

    ra = np.asarray(ra, dtype=np.float64)
    dec = np.asarray(dec, dtype=np.float64)
    ok = np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90)
    out = np.zeros(len(ra), dtype=np.int64)
    if ok.any():
        hp = HEALPix(nside=2 ** order, order="nested")
        out[ok] = hp.lonlat_to_healpix(ra[ok] * u.deg, dec[ok] * u.deg)
    return pa.array(out, mask=~ok)


def with_provenance(table: pa.Table, record: dict, healpix_order: int) -> pa.Table:
    """Add `path`, `image_id`, `config_hash` and `healpix` (when sky coordinates were
    selected and the image has a celestial WCS) to a catalog from `read`."""
    n = table.num_rows
    table = table.append_column("path", pa.array([record["path"]] * n, pa.string()))
    table = table.append_column("image_id", pa.array([record["image_id"]] * n, pa.string()))
    table = table.append_column("config_hash", pa.array([record["config_hash"]] * n, pa.string()))
    names = set(table.column_names)
    for ra_name, dec_name in SKY_COLUMNS:
        if ra_name in names and dec_name in names:
            ra = table[ra_name].to_numpy(zero_copy_only=False).astype(np.float64)
            dec = table[dec_name].to_numpy(zero_copy_only=False).astype(np.float64)
            has_wcs = {fp["ext_number"] for fp in (record.get("footprints") or []) if fp["ra"] is not None}
            if "EXT_NUMBER" in names:
                ext = table["EXT_NUMBER"].to_numpy(zero_copy_only=False)
                no_wcs = ~np.isin(ext, list(has_wcs))
                ra = np.where(no_wcs, np.nan, ra)
            elif not has_wcs:
                ra = np.full(n, np.nan)
            table = table.append_column("healpix", healpix_index(ra, dec, healpix_order))
            break
    return table

