"""The newest verdict of every path in the images table, whatever its config: what the
table already says about a file (the arrival gate, the start-up reconciliation and
`sexstream retry-failed` ask it).

Newest means the rule of `sexstream.tables.latest_images`: the latest `ingest_time`
(the driver's commit clock, comparable across the daemon and replays), then the highest
`batch_id`, then the latest `started`. Read incrementally: a snapshot once, then only
the files of new commits (`sexstream.deltalog.DeltaTail`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pyarrow as pa

from sexstream.deltalog import AddFile, DeltaTail, read_add

#: Columns of the images table a verdict is made of.
COLUMNS = ["path", "status", "reason", "size", "mtime", "ingest_time", "batch_id", "started"]
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def mtime_us(st_mtime: float) -> int:
    """st_mtime as the images table stores it: microseconds since 1970, rounded the way
    `datetime.fromtimestamp` rounds it."""
    return (datetime.fromtimestamp(st_mtime, timezone.utc) - _EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True)
class Verdict:
    """The newest images row of one path."""

    status: str
    reason: str | None
    size: int | None
    mtime_us: int | None
    order: tuple  # (ingest_time µs, batch_id, started µs): newer is greater


class Verdicts:
    """path -> newest images row, for any config."""

    def __init__(self, images_dir: str | os.PathLike[str]):
        self.tail = DeltaTail(images_dir)
        self._latest: dict[str, Verdict] = {}

    def refresh(self) -> "Verdicts":
        """Learn the rows committed since the last call (cheap when none)."""
        if self.tail.version < 0:
            if not self.tail.exists():
                return self
            self._learn_files(self.tail.snapshot())
            return self
        if self.tail.has_gap():  # log clean-up ran meanwhile: start over
            self.tail.version = -1
            return self.refresh()
        for commit in self.tail.poll():
            self._learn_files([a for a in commit.adds if a.data_change])
        return self

    def _learn_files(self, adds: list[AddFile]) -> None:
        for add in adds:
            self._learn(read_add(add, COLUMNS))

    def _learn(self, t: pa.Table) -> None:
        if "path" not in t.column_names:
            return
        cols = {}
        for name in COLUMNS:
            if name not in t.column_names:
                cols[name] = [None] * t.num_rows
            elif name in ("mtime", "ingest_time", "started"):
                cols[name] = t.column(name).cast(pa.int64()).to_pylist()
            else:
                cols[name] = t.column(name).to_pylist()
        for i, path in enumerate(cols["path"]):
            order = (cols["ingest_time"][i] or 0, cols["batch_id"][i] or 0, cols["started"][i] or 0)
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
