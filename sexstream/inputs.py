"""Opening a FITS input: what kind of file it is, whether it is complete, decompression,
header keys and sky footprints.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

BLOCK = 2880  # bytes in a FITS block
_GZIP_MAGIC = b"\x1f\x8b"
_BZIP2_MAGIC = b"BZh"


class InputError(Exception):
    """An input that cannot become a catalog; `str()` is the one-line reason.

    `status` is "failed" for a permanent problem and "incomplete" for a file that may
    still be growing (truncated against what its headers declare)."""

    def __init__(self, reason: str, status: str = "failed", transient: bool = False):
        super().__init__(reason)
        self.status = status
        self.transient = transient


@dataclass(frozen=True)
class HDUInfo:
    """One HDU as laid out in the file: index, header, data byte span."""

    index: int
    header: fits.Header
    data_offset: int
    data_bytes: int  # declared, without padding

    @property
    def is_image(self) -> bool:
        """An image SExtractor measures: an image HDU with at least 2 axes of data."""
        h = self.header
        if self.index > 0 and h.get("XTENSION", "").strip() != "IMAGE":
            return False
        return int(h.get("NAXIS", 0)) >= 2 and self.data_bytes > 0

    @property
    def is_tile_compressed(self) -> bool:
        return bool(self.header.get("ZIMAGE", False)) and self.header.get("XTENSION", "").strip() == "BINTABLE"


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


def _data_bytes(h: fits.Header) -> int:
    naxis = int(h.get("NAXIS", 0))
    if naxis == 0:
        return 0
    n = 1
    for i in range(1, naxis + 1):
        n *= int(h.get(f"NAXIS{i}", 0))
    return abs(int(h["BITPIX"])) // 8 * int(h.get("GCOUNT", 1)) * (int(h.get("PCOUNT", 0)) + n)


def walk_hdus(path: str | Path) -> list[HDUInfo]:
    """Read every header of a FITS file without reading its data, and check that the file
    holds all the bytes the headers declare.

    Raises InputError: "incomplete" when the file ends before a declared HDU does (it may
    still be being written), "failed" when a header is unreadable.
    """
    path = Path(path)
    size = path.stat().st_size
    hdus: list[HDUInfo] = []
    offset = 0
    with open(path, "rb") as fh:
        while offset < size:
            fh.seek(offset)
            chunks = []
            while True:
                block = fh.read(BLOCK)
                if len(block) < BLOCK:
                    raise InputError(
                        f"truncated: header of HDU {len(hdus)} has no END card before the end "
                        f"of the file ({size} bytes)", status="incomplete")
                chunks.append(block)
                if _has_end(block):
                    break
            raw = b"".join(chunks)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    header = fits.Header.fromstring(raw.decode("ascii", "replace"))
            except Exception as exc:  # astropy raises several kinds for a bad card
                raise InputError(f"unreadable FITS header in HDU {len(hdus)}: {exc}") from None
            if len(hdus) == 0 and "SIMPLE" not in header:
                raise InputError("not a FITS file: no SIMPLE card in the primary header")
            if len(hdus) > 0 and "XTENSION" not in header:
                break  # trailing bytes after the last HDU: FITS allows special records
            try:
                nbytes = _data_bytes(header)
            except (KeyError, ValueError, TypeError) as exc:
                raise InputError(f"invalid FITS header in HDU {len(hdus)}: bad {exc}") from None
            data_offset = offset + len(raw)
            hdus.append(HDUInfo(len(hdus), header, data_offset, nbytes))
            end = data_offset + nbytes
            if end > size:
                declared = data_offset + ((nbytes + BLOCK - 1) // BLOCK) * BLOCK
                raise InputError(f"truncated: header declares {declared} bytes, file has {size}",
                                 status="incomplete")
            offset = data_offset + ((nbytes + BLOCK - 1) // BLOCK) * BLOCK
    if not hdus:
        raise InputError("empty file (0 bytes)" if size == 0 else "not a FITS file: no header")
    return hdus


def _has_end(block: bytes) -> bool:
    return any(block[i:i + 8] == b"END     " or block[i:i + 80].rstrip() == b"END"
               for i in range(0, BLOCK, 80))


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


def check_planes(images: list[HDUInfo]) -> None:
    """InputError for an image HDU with more than 2 non-degenerate axes: SExtractor 2.25
    silently measures only the first plane of a cube, so its catalog would misrepresent
    the file. A 3rd axis of length 1 (NAXIS3 = 1) is a plain image."""
    for h in images:
        naxis = int(h.header.get("NAXIS", 0))
        shape = [int(h.header.get(f"NAXIS{i}", 1)) for i in range(1, naxis + 1)]
        if any(n > 1 for n in shape[2:]):
            raise InputError(f"{naxis}-D image in HDU {h.index} ({'x'.join(map(str, shape))}): "
                             "SExtractor measures only the first plane of a cube; split the "
                             "planes into 2-D images to measure them")


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


def uncompress_tiles(path: Path, hdus: list[HDUInfo], out: Path) -> Path:
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
    except InputError:
        raise
    except Exception as exc:
        out.unlink(missing_ok=True)
        raise InputError(f"corrupt tile-compressed image: {type(exc).__name__}: {exc}") from None
    return out


def header_value(value: Any) -> Any:
    """A header card's value as a plain Python value of its FITS type (None if undefined)."""
    if value is None or isinstance(value, fits.card.Undefined):
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, complex):
        return str(value)
    return str(value).rstrip()


def lookup(key: str, *headers: fits.Header) -> Any:
    """The first header among `headers` that has `key`, its value; None when none has it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for h in headers:
            if key in h:
                return header_value(h[key])
    return None


def footprint(header: fits.Header) -> tuple[list[float], list[float]] | None:
    """RA and Dec (degrees) of the 4 outer pixel corners of an image HDU, from its WCS.

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
            nx, ny = int(header.get("ZNAXIS1", header.get("NAXIS1", 0))), int(
                header.get("ZNAXIS2", header.get("NAXIS2", 0)))
            px = np.array([[0.5, 0.5], [nx + 0.5, 0.5], [nx + 0.5, ny + 0.5], [0.5, ny + 0.5]])
            sky = w.all_pix2world(px, 1)
    except Exception:
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
