"""Which files of a raw-download folder are images to ingest: the one definition.

A raw file is ingested when its name ends with one of `SUFFIXES` (plain, tile- or
stream-compressed FITS, in the cases listed) and no part of its path below the raw
folder is hidden: `.name`, `_name` (unless it holds `=`, a partition folder), or
`name._COPYING_` -- the names Spark's file source never lists, and the names careful
downloaders write before they rename. Temporary names (`*.part`, `*.tmp`) never match.

Spark's file source gets the same rule as a glob (`SPARK_GLOB`); the arrival gate, the
start-up reconciliation and replay use `is_raw_name`/`walk`.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, Iterator

#: File name endings of images, exactly as matched (case-sensitive, as the stream lists).
SUFFIXES = ("fits", "fit", "fts", "fz", "FITS", "FIT", "FTS", "FZ", "fits.gz", "fit.gz", "fts.gz",
            "fits.bz2", "fit.bz2", "fts.bz2", "FITS.gz", "FITS.bz2", "fits.fz")
#: The rule as a `pathGlobFilter` for Spark's file source.
SPARK_GLOB = "*.{" + ",".join(SUFFIXES) + "}"
_NAME = re.compile(r".*\.(" + "|".join(re.escape(s) for s in SUFFIXES) + r")\Z", re.DOTALL)


def hidden(name: str) -> bool:
    """Names Spark's file source never lists: `.*`, `_*` (without `=`), `*._COPYING_`."""
    return name.startswith(".") or (name.startswith("_") and "=" not in name) or name.endswith("._COPYING_")


def is_raw_name(name: str) -> bool:
    """True for a file name that is an image to ingest (not hidden, an image suffix)."""
    return not hidden(name) and _NAME.match(name) is not None


def is_candidate(path: str, raw: str) -> bool:
    """True for a path below the folder `raw` that is an image to ingest: an image name,
    nothing hidden on the way."""
    rel = os.path.relpath(path, raw)
    if rel.startswith(".."):
        return False
    parts = rel.split(os.sep)
    return is_raw_name(parts[-1]) and not any(map(hidden, parts[:-1]))


def walk(folders: Iterable[str | os.PathLike[str]]) -> Iterator[tuple[str, os.stat_result | None]]:
    """Every image below `folders` (files and symlinks, broken ones too), with its stat
    (None when it cannot be stat'ed), in sorted order, one folder at a time: memory
    holds one folder's listing, never the tree's."""
    for folder in folders:
        yield from _walk(os.fspath(folder))


def _walk(folder: str) -> Iterator[tuple[str, os.stat_result | None]]:
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        return
    subfolders = []
    for entry in entries:
        if hidden(entry.name):
            continue
        try:
            is_dir = entry.is_dir()  # a symlink to a folder is a folder, never descended into
        except OSError:
            is_dir = False
        if is_dir:
            if not entry.is_symlink():
                subfolders.append(entry.path)
        elif _NAME.match(entry.name):
            try:
                st = entry.stat()
            except OSError:
                st = None
            yield entry.path, st
    for sub in subfolders:
        yield from _walk(sub)


def list_images(folders: Iterable[str | os.PathLike[str]]) -> list[str]:
    """The paths `walk` yields, as a list (sorted within each folder)."""
    return [path for path, _ in walk(folders)]


def expand_folders(patterns: Iterable[str]) -> list[str]:
    """Absolute folders named by `patterns` (globs allowed), sorted, without duplicates."""
    import glob

    folders = set()
    for pattern in patterns:
        matches = glob.glob(os.path.expanduser(pattern)) if glob.has_magic(pattern) else [pattern]
        for m in matches:
            if not os.path.isdir(m):
                raise FileNotFoundError(f"not a folder: {m}")
            folders.add(os.path.realpath(m))
        if not matches:
            raise FileNotFoundError(f"no folder matches {pattern!r}")
    return sorted(folders)


def stat_or_none(path: str | Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None
