"""SExtractor's output parameters: the catalog `source-extractor -dp` prints, and key checks.

A *key* is what a user selects: a parameter name, with a size for vector parameters
(``FLUX_APER(3)``, ``VIGNET(15,15)``). Keys are validated against the binary's own list
before any image is touched.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

#: Parameters whose values are vectors (1 axis) or arrays (2 axes), from SExtractor's
#: param.h. A key given with a size is a vector whatever this table says.
VECTOR_AXES: dict[str, int] = {
    **dict.fromkeys((
        "FLUX_APER", "FLUXERR_APER", "MAG_APER", "MAGERR_APER", "FLUX_RADIUS",
        "FLUX_GROWTH", "MAG_GROWTH", "VECTOR_ASSOC", "VECTOR_SOMFIT", "IMAFLAGS_ISO",
        "NIMAFLAGS_ISO", "XPSF_IMAGE", "YPSF_IMAGE", "XPSF_WORLD", "YPSF_WORLD",
        "ALPHAPSF_SKY", "DELTAPSF_SKY", "ALPHAPSF_J2000", "DELTAPSF_J2000",
        "ALPHAPSF_B1950", "DELTAPSF_B1950", "FLUX_PSF", "FLUXERR_PSF", "MAG_PSF",
        "MAGERR_PSF", "PC", "VECTOR_MODEL", "VECTOR_MODELERR", "FLUX_POWER",
        "FLUXERR_POWER", "MAG_POWER", "MAGERR_POWER", "FLUX_GALFIT", "MAG_GALFIT",
    ), 1),
    **dict.fromkeys(("VIGNET", "VIGNET_SHIFT", "VIGNET_DGEOX", "VIGNET_DGEOY",
                     "MATRIX_MODELERR"), 2),
}

_KEY_RE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_]*)\s*(?:\(\s*([0-9\s,]*)\s*\))?\s*$")


@dataclass(frozen=True)
class Parameter:
    """One output parameter of SExtractor, as `-dp` describes it."""

    name: str
    description: str
    unit: str
    vector_axes: int  # 0 for a scalar, 1 for a vector, 2 for a 2-D array (VIGNET)


@dataclass(frozen=True)
class Key:
    """A selected output parameter: its name and, for vectors, its size per axis."""

    name: str
    size: tuple[int, ...] = ()

    @property
    def spec(self) -> str:
        """The key as written in a SExtractor .param file: ``FLUX_APER(3)``."""
        return f"{self.name}({','.join(map(str, self.size))})" if self.size else self.name

    @property
    def is_vector(self) -> bool:
        return bool(self.size)


class UnknownKeyError(ValueError):
    """A selected key that the binary does not know (message has a suggestion)."""


def parse_dp(text: str) -> dict[str, Parameter]:
    """Parse the output of ``source-extractor -dp`` into parameters by name.

    Each line looks like ``#FLUX_APER   Flux vector within ...   [count]``.
    """
    params: dict[str, Parameter] = {}
    for line in text.splitlines():
        line = line.rstrip()
        if not line.startswith("#") or len(line) < 2:
            continue
        body = line[1:]
        name, _, rest = body.partition(" ")
        if not re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
            continue
        rest = rest.strip()
        unit = ""
        m = re.search(r"\[([^\]]*)\]\s*$", rest)
        if m:
            unit = m.group(1)
            rest = rest[: m.start()].rstrip()
        params[name] = Parameter(name, rest, unit, VECTOR_AXES.get(name, 0))
    return params


def parse_key(text: str) -> Key:
    """Parse ``FLUX_APER(3)`` into Key("FLUX_APER", (3,)); raise ValueError if malformed."""
    m = _KEY_RE.match(text)
    if not m:
        raise ValueError(f"malformed catalog key {text!r}: expected NAME or NAME(n) or NAME(n,m)")
    name = m.group(1).upper()
    size: tuple[int, ...] = ()
    if m.group(2) is not None:
        parts = [p.strip() for p in m.group(2).split(",")]
        if not all(p.isdigit() and int(p) > 0 for p in parts) or len(parts) > 2:
            raise ValueError(f"malformed size in catalog key {text!r}: expected (n) or (n,m), n > 0")
        size = tuple(int(p) for p in parts)
    return Key(name, size)


def suggest(name: str, known: list[str], n: int = 3) -> list[str]:
    """Close matches of `name` among `known`, best first."""
    return difflib.get_close_matches(name.upper(), known, n=n, cutoff=0.6)


def validate_keys(texts: list[str] | tuple[str, ...], params: dict[str, Parameter]) -> tuple[Key, ...]:
    """Check every key against `params`; return the parsed keys in order, without duplicates.

    Vector parameters given without a size get size 1 per axis, so their column is a
    list column whatever size the user later picks. Raises UnknownKeyError naming the
    first unknown key and the closest known names ("did you mean ...?").
    """
    keys: list[Key] = []
    seen: set[str] = set()
    for text in texts:
        key = parse_key(text)
        if key.name not in params:
            close = suggest(key.name, list(params))
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise UnknownKeyError(
                f"unknown SExtractor parameter {key.name!r}{hint} "
                f"(`sexstream params` lists all {len(params)})")
        axes = params[key.name].vector_axes or len(key.size)
        if key.size and axes and len(key.size) != axes:
            raise ValueError(f"{key.name} takes {axes} size(s), got {key.spec}")
        if axes and not key.size:
            key = Key(key.name, (1,) * axes)
        if key.name in seen:
            raise ValueError(f"catalog key {key.name} selected twice")
        seen.add(key.name)
        keys.append(key)
    if not keys:
        raise ValueError("no catalog keys selected")
    return tuple(keys)


def search(params: dict[str, Parameter], pattern: str | None = None) -> list[Parameter]:
    """Parameters whose name or description matches `pattern` (case-insensitive regex or text)."""
    if not pattern:
        return list(params.values())
    try:
        rx = re.compile(pattern, re.IGNORECASE)
    except re.error:
        rx = re.compile(re.escape(pattern), re.IGNORECASE)
    return [p for p in params.values() if rx.search(p.name) or rx.search(p.description)]
