"""The requeue folder: how a path gets back into the stream after Spark's file source
has listed it (or never could).

Spark's file source lists each path once, with the bytes it had then; it yields no row
for an empty file, a symlink loop or a dangling symlink. Whoever needs a path measured
again (the arrival gate, the start-up reconciliation, `sexstream retry-failed`) writes a
*manifest* into `<checkpoint>/requeue/`: a small JSON-lines file, written under a hidden
name and renamed into place, that the daemon's query reads as a second streaming source.
A requeued path therefore goes through Spark's offsets and the exactly-once commit like
any listed file; the ledger (content hashes already measured) keeps it from being
measured twice unless the manifest line says `force`.

Spark-free: the daemon, the CLI and tests use it without a JVM.
"""
from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path


#: Folder of the manifests inside a checkpoint folder.
REQUEUE_DIR = "requeue"
#: Columns of a manifest line, as the query reads them (mtime in seconds since 1970).
MANIFEST_SCHEMA = "path STRING, length LONG, mtime DOUBLE, force BOOLEAN, why STRING"

def requeue_folder(checkpoint: str | os.PathLike[str]) -> Path:
    """`<checkpoint>/requeue`: where manifests for the daemon of that checkpoint go."""
    return Path(checkpoint) / REQUEUE_DIR


@dataclass(frozen=True)
class Entry:
    """One path to (re)measure. `force` bypasses the ledger (an explicit retry)."""

    path: str
    length: int | None = None
    mtime: float | None = None  # seconds since 1970 (st_mtime)
    force: bool = False
    why: str = ""

    @classmethod
    def of(cls, path: str | os.PathLike[str], *, force: bool = False, why: str = "") -> "Entry":
        """An entry with the file's current size and mtime (None when it cannot be stat'ed)."""
        path = os.path.abspath(path)
        try:
            st = os.stat(path)
        except OSError:
            return cls(path, None, None, force, why)
        return cls(path, st.st_size, st.st_mtime, force, why)


def write_manifest(folder: str | os.PathLike[str], entries: list[Entry], *,
                   max_lines: int = 64) -> list[Path]:
    """Write `entries` as manifests of at most `max_lines` lines into `folder`, each under
    a hidden temporary name first, then renamed (the file source ignores `.*` names, so
    it never sees a half-written manifest). Returns the manifests' paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    step = max(1, int(max_lines))
    for start in range(0, len(entries), step):
        name = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.json"
        tmp = folder / f".{name}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            for e in entries[start:start + step]:
                fh.write(json.dumps({"path": e.path, "length": e.length, "mtime": e.mtime,
                                     "force": e.force, "why": e.why}, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, folder / name)
        out.append(folder / name)
    return out
