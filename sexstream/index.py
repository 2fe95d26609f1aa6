"""The sink's verdict index: the newest verdict of every (path, config), on disk.

The images table is the truth; this is a derived index of it, so that "what does the
sink say about this file?" costs a lookup, never a read of the table, and the driver's
memory and start-up do not grow with the history. It is an SQLite file,
`<sink>/_index/verdicts.sqlite`, holding one row per (path, config_hash): the newest
verdict by the rule of `sexstream.tables.latest_images` (ingest_time, then batch_id, then
started). `sync` applies the images table's new commits (only the files they add); a
gap in the log (clean-up ran while nobody synced) makes it rebuild from a snapshot,
streamed file by file. The index lives inside the sink folder: a sink deleted takes its
index with it.

Several processes may share it (the daemon, a replay, `status`): SQLite's WAL mode and
a busy timeout serialize the writers; every sync applies whole commits in one
transaction, idempotently.
"""
from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable

import pyarrow as pa

from sexstream.deltalog import AddFile, DeltaTail, read_add

FOLDER = "_index"
FILE = "verdicts.sqlite"
#: Columns of the images table the index keeps.
COLUMNS = ["path", "config_hash", "status", "reason", "size", "mtime", "content_hash", "image_id",
           "n_sources", "ingest_time", "batch_id", "started"]
#: Lookups are cut into queries of at most this many paths.
CHUNK = 500
_SCHEMA = """
CREATE TABLE IF NOT EXISTS verdict (
    path TEXT NOT NULL, config_hash TEXT NOT NULL, status TEXT, reason TEXT, size INTEGER,
    mtime_us INTEGER, content_hash TEXT, image_id TEXT, n_sources INTEGER,
    ingest_us INTEGER NOT NULL, batch_id INTEGER NOT NULL, started_us INTEGER NOT NULL,
    PRIMARY KEY (path, config_hash)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""
_UPSERT = """
INSERT INTO verdict VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (path, config_hash) DO UPDATE SET
    status = excluded.status, reason = excluded.reason, size = excluded.size,
    mtime_us = excluded.mtime_us, content_hash = excluded.content_hash,
    image_id = excluded.image_id, n_sources = excluded.n_sources, ingest_us = excluded.ingest_us,
    batch_id = excluded.batch_id, started_us = excluded.started_us
WHERE (excluded.ingest_us, excluded.batch_id, excluded.started_us)
      >= (verdict.ingest_us, verdict.batch_id, verdict.started_us)
"""
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def mtime_us(st_mtime: float) -> int:
    """st_mtime as the images table stores it: microseconds since 1970, rounded the way
    `datetime.fromtimestamp` rounds it."""
    return (datetime.fromtimestamp(st_mtime, timezone.utc) - _EPOCH) // timedelta(microseconds=1)


_FIELDS = "path, config_hash, status, reason, size, mtime_us, content_hash, image_id, n_sources, " \
          "ingest_us, batch_id, started_us"


@dataclass(frozen=True)
class Verdict:
    """The newest images row of one (path, config)."""

    path: str
    config_hash: str
    status: str
    reason: str | None
    size: int | None
    mtime_us: int | None
    content_hash: str | None
    image_id: str | None
    n_sources: int
    order: tuple  # (ingest_time µs, batch_id, started µs): newer is greater

    def about(self, st: os.stat_result | None) -> bool:
        """True when this verdict is about the file as it is now (same size and mtime),
        or the file cannot be stat'ed (the verdict said so)."""
        return st is None or (self.size == st.st_size and self.mtime_us == mtime_us(st.st_mtime))

    @property
    def key(self) -> str:
        """What identifies the bytes it judged: their content hash, or for a file whose
        bytes could not be read, its size and mtime ("stat:SIZE:MTIME")."""
        if self.content_hash:
            return self.content_hash
        return "stat:-" if self.size is None else f"stat:{self.size}:{self.mtime_us}"


def _verdict(row) -> Verdict:
    return Verdict(*row[:8], row[8] or 0, tuple(row[9:12]))


class Index:
    """The verdict index of the sink folder `sink` (its file is created on first use)."""

    def __init__(self, sink: str | os.PathLike[str]):
        self.sink = Path(sink)
        self.path = self.sink / FOLDER / FILE
        self._db: sqlite3.Connection | None = None

    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _meta(self, key: str) -> str | None:
        row = self.db().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    # -- keeping up with the images table

    def sync(self, images_dir: str | os.PathLike[str]) -> int:
        """Apply the images table's commits the index has not seen; how many (a rebuild
        counts as one)."""
        tail = DeltaTail(images_dir)
        if not tail.exists():
            return 0
        applied = self._meta("version")
        if applied is None:
            return self._rebuild(tail)
        tail.version = int(applied)
        if tail.has_gap():
            return self._rebuild(tail)
        n = 0
        for commit in tail.poll():
            self._apply([a for a in commit.adds if a.data_change], commit.version)
            n += 1
        return n

    def _rebuild(self, tail: DeltaTail) -> int:
        adds = tail.snapshot()
        db = self.db()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM verdict")
            for add in adds:
                self._upsert(read_add(add, COLUMNS))
            self._set(version=tail.version)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return 1

    def _apply(self, adds: list[AddFile], version: int) -> None:
        db = self.db()
        db.execute("BEGIN IMMEDIATE")
        try:
            applied = self._meta("version")
            if applied is not None and int(applied) >= version:  # another process was faster
                db.execute("COMMIT")
                return
            for add in adds:
                self._upsert(read_add(add, COLUMNS))
            self._set(version=version)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _set(self, **values) -> None:
        self.db().executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                              [(k, None if v is None else str(v)) for k, v in values.items()])

    def _upsert(self, t: pa.Table) -> None:
        if "path" not in t.column_names or t.num_rows == 0:
            return
        cols = {}
        for name in COLUMNS:
            if name not in t.column_names:
                cols[name] = [None] * t.num_rows
            elif name in ("mtime", "ingest_time", "started"):
                cols[name] = t.column(name).cast(pa.int64()).to_pylist()
            else:
                cols[name] = t.column(name).to_pylist()
        rows = zip(cols["path"], cols["config_hash"], cols["status"], cols["reason"], cols["size"],
                   cols["mtime"], cols["content_hash"], cols["image_id"], cols["n_sources"],
                   [v or 0 for v in cols["ingest_time"]], [v or 0 for v in cols["batch_id"]],
                   [v or 0 for v in cols["started"]])
        self.db().executemany(_UPSERT, [(r[0], r[1] or "", *r[2:]) for r in rows if r[0] is not None])

    # -- asking

    def lookup(self, paths: Iterable[str], config_hash: str) -> dict[str, Verdict]:
        """The verdicts of `paths` under `config_hash` (paths without one are absent)."""
        paths = list(dict.fromkeys(paths))
        out: dict[str, Verdict] = {}
        for i in range(0, len(paths), CHUNK):
            chunk = paths[i:i + CHUNK]
            marks = ",".join("?" * len(chunk))
            for row in self.db().execute(
                    f"SELECT {_FIELDS} FROM verdict WHERE config_hash = ? AND path IN ({marks})",
                    (config_hash, *chunk)):
                out[row[0]] = _verdict(row)
        return out

    def get(self, path: str, config_hash: str) -> Verdict | None:
        return self.lookup([path], config_hash).get(path)

    def newest(self, paths: Iterable[str]) -> dict[str, Verdict]:
        """The newest verdict of each of `paths` under any config."""
        out: dict[str, Verdict] = {}
        paths = list(dict.fromkeys(paths))
        for i in range(0, len(paths), CHUNK):
            chunk = paths[i:i + CHUNK]
            marks = ",".join("?" * len(chunk))
            for row in self.db().execute(f"SELECT {_FIELDS} FROM verdict WHERE path IN ({marks})", chunk):
                v = _verdict(row)
                if v.path not in out or v.order >= out[v.path].order:
                    out[v.path] = v
        return out

    def with_status(self, statuses: Iterable[str]) -> Iterable[Verdict]:
        """Every (path, config) verdict with one of `statuses`, by path."""
        statuses = list(statuses)
        marks = ",".join("?" * len(statuses))
        for row in self.db().execute(
                f"SELECT {_FIELDS} FROM verdict WHERE status IN ({marks}) ORDER BY path", statuses):
            yield _verdict(row)

    def __len__(self) -> int:
        return self.db().execute("SELECT count(*) FROM verdict").fetchone()[0]
