"""Finding the SExtractor binary, its version, its parameter list (-dp) and config (-dd)."""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sexstream import params as params_mod
from sexstream.params import Parameter

#: Names Source Extractor goes by: Debian's, upstream's, and some distributions'.
BINARY_NAMES = ("source-extractor", "sex", "sextractor")


class BinaryNotFoundError(RuntimeError):
    """No usable SExtractor binary: a broken installation, reported before any image."""


@dataclass(frozen=True)
class Binary:
    """A SExtractor executable: absolute path and version string (e.g. ``2.25.0``)."""

    path: str
    version: str


def find_binary(configured: str = "") -> Binary:
    """The binary to run: `configured` (a path or a name on PATH) if given, else the
    first of source-extractor, sex, sextractor on PATH. Raises BinaryNotFoundError."""
    if configured:
        found = shutil.which(configured) if "/" not in configured else (
            configured if os.access(configured, os.X_OK) and Path(configured).is_file() else None)
        if not found:
            raise BinaryNotFoundError(f"SExtractor binary {configured!r} not found or not executable")
        return _describe(str(Path(found).resolve()))
    for name in BINARY_NAMES:
        found = shutil.which(name)
        if found:
            return _describe(str(Path(found).resolve()))
    raise BinaryNotFoundError(
        "no SExtractor binary on PATH (looked for " + ", ".join(BINARY_NAMES) + "); "
        "install it (Debian: apt-get install source-extractor) or set sextractor.binary")


def _run(path: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([path, *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


@functools.lru_cache(maxsize=8)
def _describe(path: str) -> Binary:
    proc = _run(path, "--version")
    m = re.search(r"version\s+([0-9][0-9A-Za-z.\-]*)", proc.stdout + proc.stderr)
    if not m:
        raise BinaryNotFoundError(f"{path} does not look like SExtractor: "
                                  f"`{path} --version` printed {proc.stdout.strip()[:120]!r}")
    return Binary(path, m.group(1))


def _cache_file(binary: Binary, what: str) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sexstream"
    tag = re.sub(r"[^A-Za-z0-9.]+", "_", f"{binary.version}-{binary.path}")
    return base / f"{what}-{tag}.txt"


def _cached_output(binary: Binary, flag: str) -> str:
    """Output of `binary flag`, cached on disk per binary version and path."""
    cache = _cache_file(binary, flag.strip("-"))
    try:
        return cache.read_text()
    except OSError:
        pass
    text = _run(binary.path, flag).stdout
    if not text.strip():
        raise BinaryNotFoundError(f"`{binary.path} {flag}` printed nothing")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only home only costs a re-run next time
    return text


@functools.lru_cache(maxsize=8)
def parameters(binary: Binary) -> dict[str, Parameter]:
    """Every output parameter the binary knows (``-dp``), by name."""
    return params_mod.parse_dp(_cached_output(binary, "-dp"))


@functools.lru_cache(maxsize=8)
def config_names(binary: Binary) -> frozenset[str]:
    """Every configuration parameter the binary knows (``-dd``)."""
    names = set()
    for line in _cached_output(binary, "-dd").splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            names.add(line.split()[0].upper())
    return frozenset(names)


def validate_overrides(binary: Binary, overrides: tuple[tuple[str, str], ...]) -> None:
    """Raise ValueError for a config override the binary does not know, with a suggestion."""
    known = config_names(binary)
    for name, value in overrides:
        if name not in known:
            close = params_mod.suggest(name, sorted(known))
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise ValueError(f"unknown SExtractor config parameter {name!r}{hint}")
        if not str(value).strip():
            raise ValueError(f"empty value for SExtractor config parameter {name}")
