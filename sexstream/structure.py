"""The structure of a FITS file: every HDU's structural keywords, validated against the
FITS standard (4.0) before anything uses them, and every HDU's byte span checked
against the file.

The structural keywords (SIMPLE, BITPIX, NAXIS, NAXISn, XTENSION, PCOUNT, GCOUNT,
EXTEND, GROUPS, TFIELDS, and the tile-compression ZIMAGE, ZBITPIX, ZNAXIS, ZNAXISn, ZTILEn,
ZCMPTYPE) are read from the raw 80-byte cards, not through astropy, so that a card of
the wrong type, out of its range, missing, unparsable or given twice with two values is
an `InputError` that names it. A declared size is computed with Python integers and
compared with the file's size and with `max_image_bytes` before any loop over it.
astropy's `Header` of every HDU is kept for the other keys (header keys, WCS), which
callers read defensively (`inputs.lookup`).
"""
from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from astropy.io import fits

from sexstream.errors import InputError
from sexstream.sandbox import one_line

BLOCK = 2880  # bytes in a FITS block
CARD = 80  # bytes in a header card
#: A header this long without its END card is not a FITS header (a real one of 10,000
#: HIERARCH cards is ~0.8 MB).
MAX_HEADER_BYTES = 64 << 20
BITPIX_VALUES = (8, 16, 32, 64, -32, -64)
MAX_NAXIS = 999
#: Tile-compression algorithms of the FITS standard (and the RICE_ONE alias).
ZCMPTYPES = ("RICE_1", "RICE_ONE", "GZIP_1", "GZIP_2", "PLIO_1", "HCOMPRESS_1", "NOCOMPRESS")
_STRUCTURAL = re.compile(r"SIMPLE|BITPIX|NAXIS\d{0,3}|XTENSION|PCOUNT|GCOUNT|EXTEND|GROUPS|TFIELDS"
                         r"|ZIMAGE|ZBITPIX|ZNAXIS\d{0,3}|ZTILE\d{1,3}|ZCMPTYPE")
_INT = re.compile(rb"[+-]?\d+")
_FLOAT = re.compile(rb"[+-]?(\d+\.?\d*|\.\d+)([EeDd][+-]?\d+)?")


@dataclass(frozen=True)
class TileCompression:
    """The image a tile-compressed BINTABLE HDU holds: ZBITPIX, ZNAXISn, ZCMPTYPE."""

    bitpix: int
    shape: tuple[int, ...]  # ZNAXIS1, ZNAXIS2, ... (FITS order)
    algorithm: str

    @property
    def image_bytes(self) -> int:
        """Bytes of the uncompressed image."""
        return abs(self.bitpix) // 8 * math.prod(self.shape)


@dataclass(frozen=True)
class HDUInfo:
    """One HDU as laid out in the file: index, validated structure, data byte span, and
    astropy's header for every other key."""

    index: int
    header: fits.Header
    data_offset: int
    data_bytes: int  # declared, without padding
    xtension: str | None = None  # None for the primary HDU
    bitpix: int = 8
    shape: tuple[int, ...] = ()  # NAXIS1, NAXIS2, ... (FITS order: NAXIS1 varies fastest)
    tiles: TileCompression | None = None

    @property
    def kind(self) -> str:
        """"PRIMARY", or the extension type ("IMAGE", "BINTABLE", ...)."""
        return "PRIMARY" if self.xtension is None else self.xtension

    @property
    def is_image(self) -> bool:
        """An image SExtractor measures: an image HDU with at least 2 axes of data."""
        if self.index > 0 and self.xtension != "IMAGE":
            return False
        return len(self.shape) >= 2 and self.data_bytes > 0

    @property
    def is_tile_compressed(self) -> bool:
        return self.tiles is not None

    def describe(self) -> str:
        """e.g. "HDU 1: BINTABLE NAXIS=2", for reasons that list a file's HDUs."""
        return f"HDU {self.index}: {self.kind} NAXIS={len(self.shape)}"


def card_value(card: bytes) -> bool | int | float | str | None:
    """The value of one card with a value indicator (`= ` in bytes 9-10): a logical, an
    integer, a real, a string, or None when undefined. ValueError when it is none."""
    text = card[10:].lstrip()
    if text.startswith(b"'"):
        out, i = bytearray(), 1
        while True:
            j = text.find(b"'", i)
            if j < 0:
                raise ValueError("string value without its closing quote")
            out += text[i:j]
            if text[j + 1:j + 2] != b"'":
                break
            out += b"'"  # '' is a quote inside the string
            i = j + 2
        return out.decode("ascii", "replace").rstrip()
    text = text.split(b"/", 1)[0].strip()
    if not text:
        return None
    if text in (b"T", b"F"):
        return text == b"T"
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text.replace(b"D", b"E").replace(b"d", b"e"))
    raise ValueError(f"unparsable value {text[:24].decode('ascii', 'replace')!r}")


class _Cards:
    """The structural cards of one header, with typed, range-checked getters."""

    _MISSING = object()

    def __init__(self, index: int, raw: bytes):
        self.index = index
        self.first = raw[:8].rstrip().decode("ascii", "replace")
        self.cards: dict[str, list[bytes]] = {}
        for start in range(0, len(raw), CARD):
            card = raw[start:start + CARD]
            keyword = card[:8].rstrip().decode("ascii", "replace")
            if keyword == "END":
                break
            if _STRUCTURAL.fullmatch(keyword):
                self.cards.setdefault(keyword, []).append(card)

    def error(self, what: str) -> InputError:
        return InputError(f"invalid FITS header in HDU {self.index}: {what}")

    def __contains__(self, keyword: str) -> bool:
        return keyword in self.cards

    def value(self, keyword: str, default=_MISSING):
        """The card's value: the default when absent; InputError when it has no value
        indicator, cannot be parsed, or is given twice with two values."""
        cards = self.cards.get(keyword)
        if not cards:
            if default is self._MISSING:
                raise self.error(f"{keyword} card is missing")
            return default
        values = []
        for card in cards:
            text = card.rstrip().decode("ascii", "replace")
            if card[8:9] != b"=":
                raise self.error(f"{keyword} card has no value: {text!r}")
            try:
                values.append(card_value(card))
            except ValueError as exc:
                raise self.error(f"{keyword} card is unparsable ({exc}): {text[:40]!r}") from None
        distinct = list(dict.fromkeys(repr(v) for v in values))
        if len(distinct) > 1:
            raise self.error(f"{keyword} is given {len(values)} times with different values "
                             f"({', '.join(distinct)})")
        return values[0]

    def integer(self, keyword: str, low: int, high: int | None = None, default=_MISSING) -> int:
        v = self.value(keyword, default)
        if v is None:
            raise self.error(f"{keyword} has no value")
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.error(f"{keyword} = {v!r} is not an integer")
        if v < low or (high is not None and v > high):
            span = f"{low}-{high}" if high is not None else f">= {low}"
            raise self.error(f"{keyword} = {v} is out of range ({span})")
        return v

    def logical(self, keyword: str, default=_MISSING) -> bool:
        v = self.value(keyword, default)
        if v is None:
            raise self.error(f"{keyword} has no value")
        if not isinstance(v, bool):
            raise self.error(f"{keyword} = {v!r} is not a logical (T or F)")
        return v

    def string(self, keyword: str, default=_MISSING) -> str:
        v = self.value(keyword, default)
        if v is None or (isinstance(v, str) and not v.strip()):
            raise self.error(f"{keyword} has no value")
        if not isinstance(v, str):
            raise self.error(f"{keyword} = {v!r} is not a string")
        return v.strip()

    def bitpix(self, keyword: str) -> int:
        v = self.integer(keyword, -64, 64)
        if v not in BITPIX_VALUES:
            raise self.error(f"{keyword} = {v} is not one of {', '.join(map(str, BITPIX_VALUES))}")
        return v

    def axes(self, prefix: str, low: int = 0) -> tuple[int, ...]:
        n = self.integer(prefix, 0, MAX_NAXIS)
        return tuple(self.integer(f"{prefix}{i}", low) for i in range(1, n + 1))


def _structure(cards: _Cards) -> tuple[str | None, int, tuple[int, ...], int, TileCompression | None]:
    """(xtension, bitpix, shape, data bytes, tile compression) of one header."""
    primary = cards.index == 0
    if primary:
        if cards.first != "SIMPLE":
            raise cards.error(f"the first card is {cards.first!r}, not SIMPLE")
        if not cards.logical("SIMPLE"):
            raise cards.error("SIMPLE = F: the file declares that it does not conform to FITS")
        xtension = None
    else:
        xtension = cards.string("XTENSION")
    bitpix = cards.bitpix("BITPIX")
    shape = cards.axes("NAXIS")
    if "EXTEND" in cards:
        cards.logical("EXTEND")
    groups = primary and cards.logical("GROUPS", False) and bool(shape) and shape[0] == 0
    if primary and not groups:
        pcount, gcount = 0, 1
    else:
        pcount = cards.integer("PCOUNT", 0, default=0)
        gcount = cards.integer("GCOUNT", 0, default=1)
    if xtension == "IMAGE" and (pcount, gcount) != (0, 1):
        raise cards.error(f"an IMAGE extension must have PCOUNT = 0 and GCOUNT = 1, not {pcount} and {gcount}")
    if xtension in ("BINTABLE", "TABLE"):
        if bitpix != 8 or len(shape) != 2 or gcount != 1:
            raise cards.error(f"a {xtension} extension must have BITPIX = 8, NAXIS = 2 and GCOUNT = 1")
        cards.integer("TFIELDS", 0, MAX_NAXIS)
    elements = math.prod(shape[1:] if groups else shape) if shape else 0
    nbytes = abs(bitpix) // 8 * gcount * (pcount + elements)
    tiles = None
    if xtension == "BINTABLE" and cards.logical("ZIMAGE", False):
        algorithm = cards.string("ZCMPTYPE")
        if algorithm not in ZCMPTYPES:
            raise cards.error(f"ZCMPTYPE = {algorithm!r} is not one of {', '.join(ZCMPTYPES)}")
        zshape = cards.axes("ZNAXIS", low=1)
        for i in range(1, len(zshape) + 1):
            cards.integer(f"ZTILE{i}", 1, default=1)
        tiles = TileCompression(cards.bitpix("ZBITPIX"), zshape, algorithm)
    return xtension, bitpix, shape, nbytes, tiles


def _has_end(block: bytes) -> bool:
    if b"END" not in block:
        return False
    return any(block[i:i + 8] == b"END     " or block[i:i + CARD].rstrip() == b"END"
               for i in range(0, BLOCK, CARD))


def _read_header(fh, offset: int, size: int, index: int) -> bytes:
    """The header starting at `offset`, whole blocks up to the one with its END card."""
    fh.seek(offset)
    chunks, total = [], 0
    while True:
        block = fh.read(BLOCK)
        if len(block) < BLOCK:
            raise InputError(f"truncated: header of HDU {index} has no END card before the end "
                             f"of the file ({size} bytes)", status="incomplete")
        chunks.append(block)
        total += BLOCK
        if _has_end(block):
            return b"".join(chunks)
        if total >= MAX_HEADER_BYTES:
            raise InputError(f"invalid FITS header in HDU {index}: no END card in its first "
                             f"{MAX_HEADER_BYTES >> 20} MiB")


def _astropy_header(raw: bytes, index: int) -> fits.Header:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fits.Header.fromstring(raw.decode("ascii", "replace"))
    except Exception as exc:  # noqa: BLE001 (astropy raises several kinds for a bad card)
        raise InputError(f"unreadable FITS header in HDU {index}: {one_line(exc)}") from None


def walk_hdus(path: str | os.PathLike[str], max_bytes: int | None = None) -> list[HDUInfo]:
    """Read every header of a FITS file without reading its data, validate each one's
    structure, and check that the file holds all the bytes the headers declare.

    Raises InputError: "incomplete" when the file ends before a declared HDU does (it
    may still be being written); "failed" for an invalid or unreadable header, or when
    an HDU declares more than `max_bytes` bytes of data (or of decompressed image).
    """
    path = Path(path)
    size = path.stat().st_size
    hdus: list[HDUInfo] = []
    offset = 0
    with open(path, "rb") as fh:
        while offset < size:
            index = len(hdus)
            raw = _read_header(fh, offset, size, index)
            cards = _Cards(index, raw)
            if index > 0 and cards.first != "XTENSION":
                if "BITPIX" in cards and "NAXIS" in cards:  # a header, not special records
                    raise cards.error(f"the first card is {cards.first!r}, not XTENSION")
                break  # special records after the last HDU, as FITS allows
            if index == 0 and "SIMPLE" not in cards:
                raise InputError("not a FITS file: no SIMPLE card in the primary header")
            xtension, bitpix, shape, nbytes, tiles = _structure(cards)
            for what, n in (("data", nbytes), ("decompressed image", tiles.image_bytes if tiles else 0)):
                if max_bytes is not None and n > max_bytes:
                    raise InputError(f"too large: HDU {index} declares {n} bytes of {what} > "
                                     f"max_image_bytes {max_bytes}")
            data_offset = offset + len(raw)
            padded = (nbytes + BLOCK - 1) // BLOCK * BLOCK
            if data_offset + nbytes > size:
                raise InputError(f"truncated: header declares {data_offset + padded} bytes, file has {size}",
                                 status="incomplete")
            hdus.append(HDUInfo(index, _astropy_header(raw, index), data_offset, nbytes, xtension,
                                bitpix, shape, tiles))
            offset = data_offset + padded
    if not hdus:
        raise InputError("empty file (0 bytes)" if size == 0 else "not a FITS file: no header")
    return hdus


def check_planes(images: list[HDUInfo]) -> None:
    """InputError for an image HDU with more than 2 non-degenerate axes: SExtractor 2.25
    silently measures only the first plane of a cube, so its catalog would misrepresent
    the file. A 3rd axis of length 1 (NAXIS3 = 1) is a plain image."""
    for h in images:
        if any(n > 1 for n in h.shape[2:]):
            raise InputError(f"{len(h.shape)}-D image in HDU {h.index} ({'x'.join(map(str, h.shape))}): "
                             "SExtractor measures only the first plane of a cube; split the "
                             "planes into 2-D images to measure them")
