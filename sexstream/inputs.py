"""Opening a FITS input: what kind of file it is, decompression (gzip, bzip2, tiles),
header keys and sky footprints. The file's structure and completeness are
`sexstream.structure`'s.

Nothing here modifies the raw file: a compressed input is decompressed into the run's
private temp dir, and everything else is read in place.
"""
from __future__ import annotations

import bz2
import errno
import gzip
import os
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from sexstream.errors import InputError
from sexstream.sandbox import one_line

_GZIP_MAGIC = b"\x1f\x8b"
_BZIP2_MAGIC = b"BZh"


def sniff(path: str | Path) -> str:
    """The container of a file by its first bytes: "fits", "gzip", "bzip2", or "unknown"."""
    with open(path, "rb") as fh:
        head = fh.read(80)
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head.startswith(_BZIP2_MAGIC):
        return "bzip2"
    if head.startswith(b"SIMPLE  =") or head.startswith(b"SIMPLE ="):
        return "fits"
    return "unknown"


def _describe_unknown(path: Path) -> str:
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head.startswith(b"\x89PNG"):
        what = "a PNG image"
    elif head.startswith(b"\xff\xd8"):
        what = "a JPEG image"
    elif head.startswith(b"%PDF"):
        what = "a PDF document"
    elif head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        what = f"text starting {head.decode('ascii', 'replace')[:12]!r}"
    else:
        what = "first bytes " + head[:8].hex()
    return f"not a FITS file: {what} (a FITS file starts with 'SIMPLE  =')"


def decompress_stream(path: Path, kind: str, out: Path, limit: int | None = None) -> Path:
    """Write the gzip/bzip2-decompressed bytes of `path` to `out`; InputError if broken,
    or if they exceed `limit` bytes (a decompression bomb never fills the disk)."""
    opener = gzip.open if kind == "gzip" else bz2.open
    written = 0
    try:
        with opener(path, "rb") as src, open(out, "wb") as dst:
            while chunk := src.read(4 << 20):
                written += len(chunk)
                if limit is not None and written > limit:
                    raise InputError(f"too large: decompresses to more than max_image_bytes {limit}")
                dst.write(chunk)
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        out.unlink(missing_ok=True)
        raise InputError(f"broken {kind} stream: {exc}") from None
    except InputError:
        out.unlink(missing_ok=True)
        raise
    return out


def describe_os_error(path: Path, exc: OSError) -> InputError:
    """The image-level verdict for an OSError met while reading `path`: permanent for a
    missing file, a broken or looping symlink, a directory or missing permission;
    transient (worth another try) for anything else, e.g. EIO on a flaky disk."""
    mine = exc.filename is None or os.path.abspath(str(exc.filename)) == str(path)
    if mine and exc.errno == errno.ELOOP:
        return InputError("symlink loop: too many levels of symbolic links")
    if mine and exc.errno == errno.ENOENT:
        if os.path.islink(path):
            return InputError(f"dangling symlink: {path} -> {os.readlink(path)} does not exist")
        if not os.path.lexists(path):
            return InputError("file vanished before it could be read")
    if mine and exc.errno == errno.EISDIR:
        return InputError("a directory, not a file")
    if mine and exc.errno in (errno.EACCES, errno.EPERM):
        return InputError(f"not readable by the daemon's user: {exc.strerror}")
    return InputError(f"I/O error: {exc.strerror or exc}" + (f": {exc.filename}" if not mine else ""),
                      transient=True)


def uncompress_tiles(path: Path, out: Path) -> Path:
    """Write a copy of a FITS file whose tile-compressed images (RICE, GZIP, HCOMPRESS,
    PLIO) are stored as plain image HDUs; InputError if a tile is corrupt."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(path, memmap=False, disable_image_compression=False) as hdul:
                new = fits.HDUList()
                for i, hdu in enumerate(hdul):
                    if isinstance(hdu, fits.CompImageHDU):
                        data = hdu.data  # decompresses every tile
                        header = hdu.header.copy()
                        new.append(fits.ImageHDU(data=data, header=header))
                    elif i == 0:
                        new.append(fits.PrimaryHDU(data=hdu.data, header=hdu.header))
                    else:
                        new.append(hdu.copy())
                new.writeto(out, output_verify="silentfix", overwrite=True)
    except Exception as exc:  # noqa: BLE001 (astropy and its decompressors raise many kinds)
        out.unlink(missing_ok=True)
        raise InputError(f"corrupt tile-compressed image: {one_line(exc)}") from None
    return out


#: Integers a table column can hold (int64); larger header integers are kept as text.
_INT64 = (-(1 << 63), (1 << 63) - 1)


def header_value(value: Any) -> Any:
    """A header card's value as a plain Python value of its FITS type (None if undefined).

    An integer beyond int64 is kept exactly, as its text; a complex value as text."""
    if value is None or isinstance(value, fits.card.Undefined):
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        value = int(value)
        return value if _INT64[0] <= value <= _INT64[1] else str(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, complex):
        return str(value)
    return str(value).rstrip()


def lookup(key: str, *headers: fits.Header) -> Any:
    """The first header among `headers` that has `key`, its value; None when none has it,
    or when its card cannot be parsed (a header key is data, never a reason to fail)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for h in headers:
            try:
                if key in h:
                    return header_value(h[key])
            except Exception:  # noqa: BLE001 (astropy raises several kinds for a bad card)
                return None
    return None


def footprint(header: fits.Header, shape: tuple[int, ...]) -> tuple[list[float], list[float]] | None:
    """RA and Dec (degrees) of the 4 outer pixel corners of an image HDU of `shape`
    (NAXIS1, NAXIS2, ...), from its WCS.

    None when the header has no celestial WCS or the WCS cannot be evaluated."""
    from astropy.wcs import WCS

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            w = WCS(header, naxis=2, relax=True)
            if not w.has_celestial:
                return None
            if w.naxis != 2 or w.wcs.lng < 0 or w.wcs.lat < 0:  # else it is celestial already
                w = w.celestial
            nx, ny = shape[0], shape[1]
            px = np.array([[0.5, 0.5], [nx + 0.5, 0.5], [nx + 0.5, ny + 0.5], [0.5, ny + 0.5]])
            sky = w.all_pix2world(px, 1)
    except Exception:  # noqa: BLE001 (a WCS that cannot be evaluated is no footprint)
        return None
    if not np.all(np.isfinite(sky)) or np.any(np.abs(sky[:, 1]) > 90):
        return None
    ra = [float(x) % 360.0 for x in sky[:, 0]]
    dec = [float(x) for x in sky[:, 1]]
    return ra, dec


def obs_mjd(*headers: fits.Header) -> float | None:
    """Observation time as MJD (days), from MJD-OBS, else DATE-OBS; None if neither parses."""
    mjd = lookup("MJD-OBS", *headers)
    if isinstance(mjd, (int, float)) and np.isfinite(mjd):
        return float(mjd)
    date = lookup("DATE-OBS", *headers)
    if isinstance(date, str) and date.strip():
        from astropy.time import Time

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return float(Time(date.strip(), format="isot" if "T" in date else None, scale="utc").mjd)
        except Exception:
            return None
    return None


def safe_link(src: Path, workdir: Path, name: str = "image.fits") -> Path:
    """A name SExtractor can take (no spaces, commas or shell characters) for `src`:
    a symlink in the run's private dir; the raw file is never touched."""
    dst = workdir / name
    os.symlink(os.path.abspath(src), dst)
    return dst
