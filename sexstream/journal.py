"""The arrivals journal: an append-only log of the raw files to measure, the daemon's
stream source.

Whoever learns that a file is ready -- the arrival gate (an inotify event, a poll), the
start-up reconciliation, `sexstream retry-failed`, a replay's listing -- appends an
`Entry` to the journal of the query's checkpoint (`<checkpoint>/arrivals/`). Every entry
gets the next sequence number; the query's offsets are sequence numbers, so Spark's
offset log plus the Delta app transaction keep exactly-once, and a replayed batch reads
the same entries again.

The journal is a folder of segments `<first seq>.jsonl`, one JSON object per line, each
line written whole, flushed and fsync'ed under an exclusive lock (several processes may
append: the daemon and `retry-failed`). A line cut by a crash is ignored by readers and
removed by the next append. `retire(seq)` removes the segments whose entries are all
committed, so the journal holds what is not yet committed, never history.
"""
from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator

#: A new segment is started once the newest holds this many entries.
SEGMENT_ENTRIES = 4096
FOLDER = "arrivals"
_LOCK = ".lock"
#: Bytes read from a segment's end to find its last sequence number.
_TAIL = 1 << 16


@dataclass(frozen=True)
class Entry:
    """One raw file to measure. `size`/`mtime` (bytes, seconds since 1970) as it was
    seen; `force` measures it even if the sink holds its bytes (an explicit retry);
    `stalled` records it "incomplete" without measuring it (a writer still holds it open
    past the stall bound); `why` says who journaled it."""

    path: str
    size: int | None = None
    mtime: float | None = None
    force: bool = False
    stalled: bool = False
    why: str = ""
    seq: int = 0

    @classmethod
    def of(cls, path: str | os.PathLike[str], *, force: bool = False, why: str = "",
           stalled: bool = False) -> "Entry":
        """An entry with the file's current size and mtime (None when it cannot be stat'ed)."""
        path = os.path.abspath(path)
        try:
            st = os.stat(path)
        except OSError:
            return cls(path, None, None, force, stalled, why)
        return cls(path, st.st_size, st.st_mtime, force, stalled, why)


def journal_folder(checkpoint: str | os.PathLike[str]) -> Path:
    """`<checkpoint>/arrivals`: the journal of the daemon of that checkpoint."""
    return Path(checkpoint) / FOLDER


class Journal:
    """The journal in `folder` (created on the first append)."""

    def __init__(self, folder: str | os.PathLike[str]):
        self.folder = Path(folder)
        self._cursor: tuple[Path, int, int] | None = None  # (segment, byte offset, last seq)

    # -- segments

    def segments(self) -> list[tuple[int, Path]]:
        """(first seq, path) of every segment, in order."""
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            stem, dot, ext = name.partition(".")
            if ext == "jsonl" and stem.isdigit():
                out.append((int(stem), self.folder / name))
        return sorted(out)

    @staticmethod
    def _lines(data: bytes) -> Iterator[dict]:
        """The complete entries of a segment's bytes (a cut last line is skipped)."""
        for line in data.split(b"\n")[:-1] if not data.endswith(b"\n") else data.split(b"\n"):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue

    def _last_seq(self, segment: Path, first: int) -> int:
        """The last complete sequence number in `segment` (first - 1 when empty)."""
        with open(segment, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - _TAIL))
            data = fh.read()
        last = first - 1
        for d in self._lines(data):
            last = max(last, int(d.get("seq", last)))
        return last

    def last_seq(self) -> int:
        """The sequence number of the newest complete entry; 0 for an empty journal."""
        segments = self.segments()
        for first, path in reversed(segments):
            last = self._last_seq(path, first)
            if last >= first:
                return last
        return segments[0][0] - 1 if segments else 0

    # -- writing

    @contextmanager
    def _locked(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / _LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def append(self, entries: Iterable[Entry]) -> list[Entry]:
        """Append `entries` (their `seq` is assigned here); returns them as written."""
        entries = list(entries)
        if not entries:
            return []
        with self._locked():
            segments = self.segments()
            last = self.last_seq()
            if segments:
                first, path = segments[-1]
                _drop_cut_line(path)
                if last - first + 1 >= SEGMENT_ENTRIES:
                    path = self.folder / f"{last + 1:012d}.jsonl"
            else:
                path = self.folder / f"{last + 1:012d}.jsonl"
            written = [Entry(**{**asdict(e), "seq": last + 1 + i}) for i, e in enumerate(entries)]
            data = "".join(json.dumps(asdict(e), ensure_ascii=False) + "\n" for e in written)
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        return written

    # -- reading

    def read(self, start: int, end: int) -> list[Entry]:
        """The entries with start < seq <= end, in order."""
        out = []
        segments = self.segments()
        for i, (first, path) in enumerate(segments):
            nxt = segments[i + 1][0] if i + 1 < len(segments) else None
            if first > end or (nxt is not None and nxt <= start + 1):
                continue
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            for d in self._lines(data):
                if start < d.get("seq", -1) <= end:
                    out.append(Entry(**d))
        return out

    def retire(self, committed: int) -> int:
        """Remove the segments whose entries all have seq <= `committed`; how many."""
        segments = self.segments()
        removed = 0
        for i, (first, path) in enumerate(segments[:-1]):  # the newest stays: appends go there
            if segments[i + 1][0] - 1 <= committed:
                path.unlink(missing_ok=True)
                removed += 1
        return removed


def _drop_cut_line(path: Path) -> None:
    """Truncate a segment after its last complete line (a crash cut the one after)."""
    with open(path, "rb+") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if size == 0:
            return
        fh.seek(max(0, size - _TAIL))
        data = fh.read()
        if data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n")
        fh.truncate(size - len(data) + cut + 1 if cut >= 0 else max(0, size - len(data)))
