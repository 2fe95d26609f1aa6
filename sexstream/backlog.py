"""A replay of backlog folders, Spark-free: its checkpoint, its journal, its progress,
its summary.

`checkpoint_for` derives the replay's checkpoint from its folders and effective config
(the same command resumes); `fill` walks the folders once and journals the images the
sink has no verdict on for this config (all of them with `force`), so a replay of
folders that are mostly done hands Spark only the rest; `Progress` (a
`sexstream.engine.Hooks`) shows files done / total, images/s, sources, failures and ETA;
`Timing` splits the wall time into Spark's start-up, the work and the stop; `summary`
is the closing report.
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sexstream import rawfiles
from sexstream.index import Index
from sexstream.journal import Entry, Journal

#: Exit statuses of `sexstream replay`.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
#: Marks a replay journal whose filling finished (a resumed replay does not refill it).
FILLED = ".filled"
#: Files looked up in the index at a time.
CHUNK = 1000


def fill(journal: Journal, folders: list[str], index: Index, config_hash: str, *,
         force: bool = False) -> tuple[int, int]:
    """Journal the images below `folders` that have no verdict on their current bytes
    under `config_hash` (every image with `force`), unless a previous start of this
    replay already did; returns (images, already measured). Streamed: memory holds one
    chunk of paths, never the listing."""
    resume = (journal.folder / FILLED).exists()
    total = already = 0
    chunk: list[tuple[str, os.stat_result | None]] = []

    def flush() -> None:
        nonlocal already
        known = {} if force else index.lookup([p for p, _ in chunk], config_hash)
        todo = [Entry(p, st.st_size if st else None, st.st_mtime if st else None, force=force, why="backlog")
                for p, st in chunk if p not in known or not known[p].about(st)]
        already += len(chunk) - len(todo)
        if not resume:
            journal.append(todo)
        chunk.clear()

    for path, st in rawfiles.walk(folders):
        total += 1
        chunk.append((path, st))
        if len(chunk) >= CHUNK:
            flush()
    flush()
    if not resume:
        journal.folder.mkdir(parents=True, exist_ok=True)
        (journal.folder / FILLED).touch()
    return total, already


def checkpoint_for(sink: str, folders: list[str], config_hash: str, force: bool) -> str:
    """The replay's checkpoint: one per (folders, effective config) below the sink."""
    key = "\n".join(folders) + "\n" + config_hash + (f"\nforce {time.time_ns()}" if force else "")
    return str(Path(sink) / "_checkpoints" / f"replay-{hashlib.sha256(key.encode()).hexdigest()[:16]}")


@dataclass
class Progress:
    """Files done / total, images/s, sources, failures, ETA: a bar on a terminal,
    plain lines every `every` seconds otherwise."""

    total: int
    done: int = 0
    sources: int = 0
    failures: int = 0
    skipped: int = 0
    every: float = 10.0
    stream: object = sys.stderr
    reasons: Counter = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)
    _bar: object = None
    _last: float = 0.0
    _initial: int = 0

    def start(self, already: int) -> "Progress":
        self.done = self._initial = min(already, self.total)
        if getattr(self.stream, "isatty", lambda: False)():
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, initial=self.done, unit="img", file=self.stream,
                             dynamic_ncols=True, smoothing=0.1)
        return self

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return (self.done - self._initial) / elapsed if elapsed > 0 else 0.0

    def batch(self, stats) -> None:
        """A committed batch (`sexstream.engine.Hooks.batch`)."""
        self.update(stats)

    def phase(self, name: str, batch_id: int) -> None:
        pass

    def update(self, stats) -> None:
        n = stats.ok + stats.failed + stats.incomplete  # skipped ones were counted at start
        self.done += n
        self.sources += stats.sources
        self.failures += stats.failed + stats.incomplete
        self.skipped += stats.skipped
        for _path, status, reason in stats.failures:
            self.reasons[f"{status}: {reason}"] += 1
        if self._bar is not None:
            self._bar.set_postfix(sources=self.sources, failed=self.failures, refresh=False)
            self._bar.update(n)
        elif time.monotonic() - self._last >= self.every or self.done >= self.total:
            self._last = time.monotonic()
            print(self.line(), file=self.stream, flush=True)

    def line(self) -> str:
        rate = self.rate()
        left = max(self.total - self.done, 0)
        eta = f"{left / rate:.0f} s" if rate > 0 else "?"
        return (f"replay: {self.done}/{self.total} files, {rate:.2f} images/s, {self.sources} sources, "
                f"{self.failures} failed, ETA {eta}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def process_started() -> float:
    """This process's start on the `time.monotonic()` clock (Linux /proc), else now."""
    try:
        with open("/proc/self/stat") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        return time.monotonic() - max(uptime - ticks / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError):
        return time.monotonic()


@dataclass
class Timing:
    """The replay's phases on the monotonic clock, from the process's start `t0`:

    - start-up: until the first image is handed to SExtractor (interpreter, imports, the
      JVM, the Spark session, the query's start, the first batch's planning, the Python
      workers' start);
    - work: from there until the last batch is committed;
    - stop: Spark's shutdown, the driver JVM's exit included.
    """

    t0: float
    first_batch: float | None = None
    first_image: float | None = None
    done: float | None = None
    end: float | None = None

    def work_done(self) -> None:
        self.done = time.monotonic()

    def stopped(self) -> None:
        self.end = time.monotonic()

    @property
    def wall(self) -> float:
        return (self.end or time.monotonic()) - self.t0

    @property
    def startup(self) -> float:
        return (self.first_image or self.first_batch or self.done or time.monotonic()) - self.t0

    @property
    def work(self) -> float:
        return max((self.done or time.monotonic()) - self.t0 - self.startup, 0.0)

    @property
    def stop(self) -> float:
        return max((self.end or time.monotonic()) - (self.done or time.monotonic()), 0.0)


def summary(progress: Progress, timing: Timing, images: dict) -> str:
    """The closing report: images ok / failed by reason, sources, wall time, images/s."""
    processed = progress.done - progress._initial - progress.skipped
    lines = [
        "replay summary",
        f"  images      {images.get('ok', 0)} ok, {images.get('failed', 0)} failed, "
        f"{images.get('incomplete', 0)} incomplete, {progress.skipped + progress._initial} skipped "
        f"(already measured with this config)",
        f"  sources     {progress.sources}",
        f"  wall time   {timing.wall:.2f} s since the process started: Spark start-up "
        f"{timing.startup:.2f} s (until the first image is measured), work {timing.work:.2f} s, "
        f"Spark stop {timing.stop:.2f} s",
        f"  throughput  {processed / max(timing.work, 1e-9):.2f} images/s",
    ]
    if progress.reasons:
        lines.append("  failures by reason:")
        lines += [f"    {n:5d}  {reason}" for reason, n in progress.reasons.most_common()]
    return "\n".join(lines)
