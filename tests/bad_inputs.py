"""Crafted bad inputs, one per kind a raw folder meets, with the verdict each must get.

`write_bad_inputs(folder, good)` writes them (plain files; symlinks and unreadable files
are the caller's business, since they depend on where the test runs) and returns
{file name: Expected}. `good` is a generated exposure (sexstream.synthetic).
"""
from __future__ import annotations

import bz2
import gzip
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

#: Larger raw (or decompressed) inputs are refused in the tests that use it.
MAX_IMAGE_BYTES = 3_000_000


@dataclass(frozen=True)
class Expected:
    status: str
    reason: str | None  # a regex that must match the whole reason (None: reason is null)
    sources: bool | None = None  # True: some sources, False: none, None: not checked
    footprint: bool | None = None  # True: ra/dec corners, False: null corners

    def check(self, row) -> None:
        """Assert an images row (a mapping or a namedtuple) matches."""
        def get(key):
            value = row.get(key) if hasattr(row, "get") else getattr(row, key)
            return None if isinstance(value, float) and value != value else value  # pandas NaN

        assert get("status") == self.status, (get("path"), get("status"), get("reason"))
        if self.reason is None:
            assert get("reason") is None, get("reason")
        else:
            assert re.fullmatch(self.reason, get("reason") or ""), (get("path"), get("reason"))
        if self.sources is not None:
            assert (get("n_sources") > 0) == self.sources, (get("path"), get("n_sources"))
        if self.footprint is not None:
            fps = list(get("footprints"))
            assert fps and all((fp["ra"] is not None) == self.footprint for fp in fps), fps


def _image(good: Path) -> tuple[np.ndarray, fits.Header]:
    with fits.open(good) as hdul:
        hdu = next(h for h in hdul if h.data is not None and h.data.ndim == 2)
        return hdu.data.astype(np.float32), hdu.header.copy()


def _corrupt(data: bytes, start: int, n: int, seed: int) -> bytes:
    b = bytearray(data)
    b[start:start + n] = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
    return bytes(b)


def write_bad_inputs(folder: Path, good: Path) -> dict[str, Expected]:
    folder.mkdir(parents=True, exist_ok=True)
    raw = good.read_bytes()
    data, header = _image(good)
    ny, nx = data.shape
    size = len(raw)
    out: dict[str, Expected] = {}

    def put(name: str, content: bytes, expected: Expected) -> None:
        (folder / name).write_bytes(content)
        out[name] = expected

    def put_hdul(name: str, hdul: fits.HDUList, expected: Expected) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hdul.writeto(folder / name, overwrite=True)
        out[name] = expected

    not_fits = r"not a FITS file: {} \(a FITS file starts with 'SIMPLE  ='\)"
    put("empty.fits", b"", Expected("incomplete", r"empty file \(0 bytes\)"))
    put("notes.fits", b"observing log, night 3: clouds\n", Expected(
        "failed", not_fits.format(r"text starting 'observing lo'")))
    put("preview.fits", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, Expected(
        "failed", not_fits.format("a PNG image")))
    noise = np.random.default_rng(7).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    put("noise.fits", noise, Expected("failed", not_fits.format("first bytes " + noise[:8].hex())))
    put("cut_in_header.fits", raw[:1000], Expected(
        "incomplete", r"truncated: header of HDU 0 has no END card before the end of the file "
        r"\(1000 bytes\)"))
    put("cut_in_data.fits", raw[:size // 2], Expected(
        "incomplete", rf"truncated: header declares {size} bytes, file has {size // 2}"))
    put_hdul("header_only.fits", fits.HDUList([fits.PrimaryHDU(header=fits.Header([("OBJECT", "x")]))]),
             Expected("failed", r"no image to measure \(HDU 0: PRIMARY NAXIS=0\)"))
    table = fits.BinTableHDU.from_columns([fits.Column(name="flux", format="E", array=np.arange(5.0))])
    put_hdul("table_only.fits", fits.HDUList([fits.PrimaryHDU(), table]), Expected(
        "failed", r"no image to measure \(HDU 0: PRIMARY NAXIS=0, HDU 1: BINTABLE NAXIS=2\)"))
    put_hdul("cube.fits", fits.HDUList([fits.PrimaryHDU(np.stack([data, data, data]))]), Expected(
        "failed", rf"3-D image in HDU 0 \({nx}x{ny}x3\): SExtractor measures only the first plane "
        r"of a cube; split the planes into 2-D images to measure them"))
    put_hdul("one_pixel.fits", fits.HDUList([fits.PrimaryHDU(np.ones((1, 1), np.float32))]),
             Expected("ok", None, sources=False))
    put_hdul("all_nan.fits", fits.HDUList([fits.PrimaryHDU(np.full((64, 64), np.nan, np.float32))]),
             Expected("ok", None, sources=False))
    put_hdul("all_zero.fits", fits.HDUList([fits.PrimaryHDU(np.zeros((64, 64), np.float32))]),
             Expected("ok", None, sources=False))
    broken = header.copy()
    broken.update(CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CRVAL1=1e30, CRVAL2=400.0,
                  CD1_1=0.0, CD1_2=0.0, CD2_1=0.0, CD2_2=0.0)
    put_hdul("broken_wcs.fits", fits.HDUList([fits.PrimaryHDU(data, broken)]),
             Expected("ok", None, sources=True, footprint=False))
    put_hdul("int64.fits", fits.HDUList([fits.PrimaryHDU(np.ones((64, 64), np.int64))]), Expected(
        "failed", r"SExtractor failed \(exit 1\): Sorry, I don't know that kind of data\."))
    gz = gzip.compress(raw, mtime=0)
    put("crc_error.fits.gz", _corrupt(gz, len(gz) // 2, 64, 1), Expected(
        "failed", r"broken gzip stream: .+"))
    put("cut.fits.gz", gz[:len(gz) // 2], Expected(
        "incomplete", r"truncated gzip stream \(download not finished\?\)"))
    bz = bz2.compress(raw)
    put("corrupt.fits.bz2", _corrupt(bz, len(bz) // 2, 64, 2), Expected(
        "failed", r"broken bzip2 stream: .+"))
    tiled = folder / "tiled.tmp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data, header, compression_type="GZIP_1",
                                                           tile_shape=(16, nx))]).writeto(tiled)
    tb = tiled.read_bytes()
    tiled.unlink()
    put("bad_tile.fits.fz", _corrupt(tb, len(tb) - 12000, 400, 3), Expected(
        "failed", r"corrupt tile-compressed image: .+"))
    big = np.zeros((1024, 1024), np.float32)
    put_hdul("too_large.fits", fits.HDUList([fits.PrimaryHDU(big)]), Expected("failed", ""))
    out["too_large.fits"] = Expected("failed", rf"too large: {(folder / 'too_large.fits').stat().st_size} "
                                     rf"bytes > max_image_bytes {MAX_IMAGE_BYTES}")
    bomb = folder / "bomb.tmp"
    fits.PrimaryHDU(np.zeros((2048, 1024), np.float32)).writeto(bomb)
    put("bomb.fits.gz", gzip.compress(bomb.read_bytes(), mtime=0), Expected(
        "failed", rf"too large: decompresses to more than max_image_bytes {MAX_IMAGE_BYTES}"))
    bomb.unlink()
    return out


#: Verdicts of the kinds the caller makes itself (symlinks, permissions, vanished files).
LOOP = Expected("failed", r"symlink loop: too many levels of symbolic links")
DANGLING = Expected("failed", r"dangling symlink: .+ -> .+ does not exist")
UNREADABLE = Expected("failed", r"not readable by the daemon's user: Permission denied")
VANISHED = Expected("failed", r"file vanished before it could be read")
GOOD = Expected("ok", None, sources=True, footprint=True)

#: File names that break shells, URL parsers and SExtractor's argument parsing.
AWKWARD_NAMES = ["with space.fits", "quo'te\"s.fits", "semi;colon.fits", "$(touch pwned).fits",
                 "ünïcødé-星.fits", "-leading-dash.fits", "hash#1 and query?x.fits",
                 "percent%20encoded.fits", "2026-01-01T00:00:00.fits", "back\\slash.fits"]
