"""The requeue folder: how a path gets back into the stream after Spark's file source
has listed it (or never could), and what the images table already says about a path.

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

import pyarrow as pa
import pyarrow.parquet as pq

from sexstream.ledger import mtime_us

#: Folder of the manifests inside a checkpoint folder.
REQUEUE_DIR = "requeue"
#: Columns of a manifest line, as the query reads them (mtime in seconds since 1970).
MANIFEST_SCHEMA = "path STRING, length LONG, mtime DOUBLE, force BOOLEAN, why STRING"

_VERDICT_COLUMNS = ["path", "status", "reason", "size", "mtime", "ingest_time", "batch_id"]


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


@dataclass(frozen=True)
class Verdict:
    """The newest images row of one path."""

    status: str
    reason: str | None
    size: int | None
    mtime_us: int | None
    order: tuple  # (ingest_time µs, batch_id): newer is greater


class Verdicts:
    """path -> newest images row, read incrementally from the images table's Delta log
    (only part files not read before), for any config: what the table already says."""

    def __init__(self, images_dir: str | os.PathLike[str]):
        self.images_dir = str(images_dir)
        self._latest: dict[str, Verdict] = {}
        self._parts: set[str] = set()
        self._version: int | None = None

    def refresh(self) -> "Verdicts":
        """Learn the rows of parts committed since the last call (cheap when none)."""
        from sexstream.tables import open_table

        table = open_table(self.images_dir)
        if table is None or table.version() == self._version:
            return self
        actions = pa.table(table.get_add_actions(flatten=True))
        for part in actions.column("path").to_pylist() if actions.num_rows else []:
            if part not in self._parts:
                self._learn(pq.read_table(Path(self.images_dir) / part, columns=_VERDICT_COLUMNS))
                self._parts.add(part)
        self._version = table.version()
        return self

    def _learn(self, t: pa.Table) -> None:
        cols = {name: t.column(name).cast(pa.int64()).to_pylist()
                if name in ("mtime", "ingest_time") else t.column(name).to_pylist()
                for name in _VERDICT_COLUMNS}
        for i, path in enumerate(cols["path"]):
            order = (cols["ingest_time"][i] or 0, cols["batch_id"][i] or 0)
            old = self._latest.get(path)
            if old is None or order >= old.order:
                self._latest[path] = Verdict(cols["status"][i], cols["reason"][i], cols["size"][i],
                                             cols["mtime"][i], order)

    def get(self, path: str) -> Verdict | None:
        return self._latest.get(path)

    def items(self) -> list[tuple[str, Verdict]]:
        """(path, newest row) for every path, sorted by path."""
        return sorted(self._latest.items())

    def covers(self, path: str, st: os.stat_result | None) -> bool:
        """True when the newest row of `path` is about the file as it is now: same size
        and mtime (or, for a path that cannot be stat'ed, any row at all)."""
        v = self._latest.get(path)
        if v is None:
            return False
        if st is None:
            return True
        return v.size == st.st_size and v.mtime_us == mtime_us(st.st_mtime)

    def __len__(self) -> int:
        return len(self._latest)
