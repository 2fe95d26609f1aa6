"""`sexstream replay`: the streaming job as a bounded run over backlog folders.

The same query as the daemon with an available-now trigger: it processes every FITS
file present at start, commits batch by batch (exactly once), and exits. Its checkpoint
is derived from the folders and the effective config, so re-running the same command
after a crash or Ctrl-C resumes instead of starting over. Exit status: 0 when every
image is ok, 1 when some image failed or is incomplete, 2 for a usage or configuration
error, 130 when interrupted (run the same command again to resume).
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import logging
import os
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sexstream.cli import add_selection_flags, settings_from_args

log = logging.getLogger("sexstream")

#: File names the replay counts as images (the stream's glob, as a regex).
FITS_NAME = re.compile(r"\.(fits|fit|fts|fz)(\.(gz|bz2|fz))?$", re.IGNORECASE)
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def expand_folders(patterns: list[str]) -> list[str]:
    """Absolute folders named by `patterns` (globs allowed), sorted, without duplicates."""
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


def list_images(folders: list[str]) -> list[str]:
    """Every FITS-named, non-hidden file below `folders` (what the stream will see)."""
    out = []
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
            out += [os.path.join(root, f) for f in files
                    if FITS_NAME.search(f) and not f.startswith((".", "_"))]
    return sorted(out)


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
        f"{images.get('incomplete', 0)} incomplete, {progress.skipped} skipped "
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


def run_replay(args: argparse.Namespace) -> int:
    t0 = process_started()
    from streaming.session import BackgroundSession, end_jvm, stop_session

    settings = settings_from_args(args, sink=args.sink, master=args.master,
                                  files_per_task=args.files_per_task)
    sink_real = os.path.realpath(settings.sink)
    folders = [f for f in expand_folders(args.folders)
               if f != sink_real and not f.startswith(sink_real + os.sep)]
    if not folders:
        raise FileNotFoundError("no backlog folder to replay (the sink itself is never replayed)")
    per_batch = args.max_files_per_batch or args.max_files_per_trigger or settings.max_files_per_trigger
    # each folder is one stream source: share the bound among them
    settings = settings.replace(max_files_per_trigger=max(1, per_batch // len(folders)))
    from streaming.job import GracefulStop

    stop = GracefulStop().install()  # a SIGTERM during start-up stops cleanly too
    # the JVM boots while the driver imports the core, validates the selection, reads the sink
    session = BackgroundSession(settings, "sexstream-replay", ui=args.ui).start()
    try:
        from sexstream import extractor
        from sexstream.ledger import Ledger
        from sexstream.schema import IMAGES, SOURCES
        from streaming.batch import sink_table

        plan = extractor.prepare(settings)
        checkpoint = args.checkpoint or checkpoint_for(settings.sink, folders, plan.config_hash, args.force)
        files = list_images(folders)
        ledger = None if args.force else Ledger.load(sink_table(settings.sink, IMAGES), plan.config_hash)
        already = 0 if ledger is None else len(ledger.known_for(files))
        log.info("replay of %d files in %d folder(s), %d already measured with config %s; checkpoint %s",
                 len(files), len(folders), already, plan.config_hash, checkpoint)
        if ledger is not None:
            ledger.learn_sourced(sink_table(settings.sink, SOURCES), sink_table(settings.sink, IMAGES))
    except BaseException:
        session.abandon()
        raise
    spark = session.result()
    log.debug("Spark session ready after %.2f s (built in %.2f s)", time.monotonic() - t0, session.seconds)
    progress = Progress(total=len(files), every=args.progress_every).start(already)
    timing = Timing(t0)
    try:
        query, runner = start_replay_query(spark, settings, plan, folders, checkpoint, ledger, progress)
        log.debug("query started after %.2f s", time.monotonic() - t0)
        while query.isActive and not stop.event.wait(0.2):
            pass
        if stop.event.is_set():
            from streaming.job import stop_between_batches

            stop_between_batches(query, runner)
            progress.close()
            print(f"replay interrupted ({stop.signal_name}); run the same command again to resume",
                  file=sys.stderr)
            return EXIT_INTERRUPTED
        exc = query.exception()
        if exc is not None:
            raise RuntimeError(f"the replay query failed: {exc}")
        for p in query.recentProgress:
            log.debug("batch %s Spark durations (ms): %s", p.batchId, p.durationMs)
    finally:
        progress.close()
        timing.work_done()
        stop_session(spark)
        end_jvm()
        timing.stopped()
    timing.first_batch, timing.first_image = runner.first_batch_at, runner.first_image_at
    if timing.first_batch is not None:
        log.debug("first batch after %.2f s, first image after %.2f s", timing.first_batch - timing.t0,
                  (timing.first_image or timing.first_batch) - timing.t0)
    statuses = Counter()
    for stats in runner.history:
        statuses["ok"] += stats.ok
        statuses["failed"] += stats.failed
        statuses["incomplete"] += stats.incomplete
    print(summary(progress, timing, statuses), flush=True)
    return EXIT_FAILED if statuses["failed"] or statuses["incomplete"] else EXIT_OK


def start_replay_query(spark, settings, plan, folders, checkpoint, ledger, progress):
    """The available-now query, with the executors' Python workers warming up (in the
    background) while it plans its first batch."""
    from streaming.job import start_query, warm_up_in_background

    warm_up_in_background(spark)
    return start_query(spark, settings, plan, folders, checkpoint=checkpoint, available_now=True,
                       ledger=ledger, on_batch=progress.update, name=None)


def cmd_replay(args: argparse.Namespace) -> int:
    from streaming.job import configure_logging

    configure_logging(args.verbose)
    return run_replay(args)


def register(sub) -> None:
    from streaming.commands import add_spark_flags

    p = sub.add_parser("replay", help="a bounded run over backlog folders (resumable)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", metavar="DIR", help="backlog folders (globs allowed)")
    p.add_argument("--max-files-per-batch", type=int, dest="max_files_per_batch",
                   help="at most this many images per committed batch")
    p.add_argument("--force", action="store_true",
                   help="measure images again even if the sink holds them with this config "
                   "(a fresh checkpoint: an interrupted --force run starts over)")
    p.add_argument("--checkpoint", help="override the derived checkpoint folder")
    p.add_argument("--progress-every", type=float, default=10.0,
                   help="seconds between progress lines when not on a terminal")
    add_spark_flags(p)
    add_selection_flags(p)
    p.set_defaults(func=cmd_replay)
