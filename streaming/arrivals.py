"""The arrival gate: every FITS file in the raw folder is measured once it is complete,
however it arrives, and `sexstream retry-failed`.

Spark's file source lists each path once, with the bytes it had then, and yields no row
at all for an empty file, a symlink loop or a dangling symlink (measured with pyspark
4.0). A download written in place is listed while partial (recorded "incomplete") and
never listed again. The gate closes those holes on the driver:

- a watchdog observer on the raw folder (recursive) notes writes, creations and
  renames of FITS-named files;
- once a path has been quiet for `arrival_quiet` seconds, it is *requeued* (a manifest
  line in `<checkpoint>/requeue/`, read by the query as a second streaming source)
  unless the images table's newest row for it is already about the file as it is now
  (same size and mtime). A file that arrived by an atomic rename, non-empty and never
  written in place, is one Spark's own listing delivers complete: the gate only checks
  on it after `arrival_grace` seconds, so the common case costs no second look;
- at start-up, `reconcile` requeues every FITS-named file whose newest images row is
  not about its current size and mtime, or that has none (an "incomplete" file completed
  while the daemon was down, an empty file Spark skipped, a file that arrived while the
  daemon was stopped: the latter is also listed by Spark, and the ledger skips the copy).

A requeued path that was already measured with the same bytes and config is skipped by
the tasks (the ledger), so a redundant requeue costs a content hash, never a row.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: registering the subcommand must import fast
    from sexstream.requeue import Entry, Verdicts

log = logging.getLogger("sexstream")

#: How often the gate looks for paths that have become quiet, seconds.
TICK_S = 0.2


def fits_name_regex() -> re.Pattern:
    """The stream's file-name glob (streaming.job.FITS_GLOB) as a regex, so the gate
    watches exactly the names Spark lists."""
    from streaming.job import FITS_GLOB

    alternatives = FITS_GLOB.split("{", 1)[1].rstrip("}").split(",")
    return re.compile(r".*\.(" + "|".join(re.escape(a) for a in alternatives) + r")\Z", re.DOTALL)


def hidden(name: str) -> bool:
    """Names Spark's file source never lists: `.*`, `_*` (without `=`), `*._COPYING_`."""
    return name.startswith(".") or (name.startswith("_") and "=" not in name) or name.endswith("._COPYING_")


def is_candidate(path: str, raw: str, names: re.Pattern) -> bool:
    """A path below `raw` that the stream would list: FITS-named, nothing hidden on the way."""
    rel = os.path.relpath(path, raw)
    parts = rel.split(os.sep)
    return not rel.startswith("..") and names.match(parts[-1]) is not None and not any(map(hidden, parts))


def list_candidates(raw: str) -> list[str]:
    """Every FITS-named file (or symlink, even a broken one) below `raw`, as Spark sees it."""
    names = fits_name_regex()
    out = []
    for root, dirs, files in os.walk(raw):
        dirs[:] = [d for d in dirs if not hidden(d)]
        out += [os.path.join(root, f) for f in files if not hidden(f) and names.match(f)]
    return sorted(out)


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def reconcile(raw: str, verdicts: Verdicts) -> list[Entry]:
    """The files below `raw` whose newest images row is not about them as they are now."""
    from sexstream.requeue import Entry

    entries = []
    for path in list_candidates(raw):
        st = _stat(path)
        if not verdicts.covers(path, st):
            v = verdicts.get(path)
            why = "no images row" if v is None else f"newest row is {v.status} for other bytes"
            entries.append(Entry(path, st.st_size if st else None, st.st_mtime if st else None,
                                 why=why))
    return entries


@dataclass
class _Pending:
    last_event: float  # monotonic seconds
    written: bool  # written in place (modified/closed), not only renamed in


class ArrivalGate:
    """Watches `raw`; requeues quiet paths into `requeue_dir` (see the module docstring)."""

    def __init__(self, raw: str, requeue_dir: str, images_dir: str, *, quiet: float = 1.0,
                 grace: float = 60.0, max_lines: int = 64):
        from sexstream.requeue import Verdicts

        self.raw = os.path.abspath(raw)
        self.requeue_dir = str(requeue_dir)
        self.verdicts = Verdicts(images_dir)
        self.quiet = float(quiet)
        self.grace = max(float(grace), self.quiet)
        self.max_lines = max_lines
        self.names = fits_name_regex()
        self.requeued = 0
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._observer = None
        self._thread: threading.Thread | None = None

    def start(self) -> "ArrivalGate":
        """Start watching, then reconcile the folder with the images table (events that
        happen during the reconciliation are not lost: the observer runs first)."""
        from sexstream.requeue import write_manifest

        Path(self.raw).mkdir(parents=True, exist_ok=True)
        self._observer = self._make_observer()
        self._observer.start()
        entries = reconcile(self.raw, self.verdicts.refresh())
        if entries:
            write_manifest(self.requeue_dir, entries, max_lines=self.max_lines)
            self.requeued += len(entries)
            log.info("arrivals: requeued %d file(s) at start-up (%s)", len(entries),
                     ", ".join(sorted({e.why for e in entries})))
        self._thread = threading.Thread(target=self._run, name="sexstream-arrivals", daemon=True)
        self._thread.start()
        return self

    def _make_observer(self):
        from watchdog.events import (FileClosedEvent, FileCreatedEvent, FileDeletedEvent,
                                     FileModifiedEvent, FileMovedEvent, FileSystemEventHandler)
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        gate = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event):
                if event.is_directory:
                    return
                if isinstance(event, FileMovedEvent):
                    gate.note(event.dest_path, written=False)
                elif isinstance(event, FileCreatedEvent):
                    gate.note(event.src_path, written=False)
                elif isinstance(event, (FileModifiedEvent, FileClosedEvent)):
                    gate.note(event.src_path, written=True)
                elif isinstance(event, FileDeletedEvent):
                    gate.forget(event.src_path)

        kinds = [FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileMovedEvent, FileDeletedEvent]
        try:
            observer = Observer()
            observer.schedule(Handler(), self.raw, recursive=True, event_filter=kinds)
        except OSError as exc:  # e.g. the inotify instance limit: poll instead
            log.warning("arrivals: inotify unavailable (%s); polling %s every 2 s", exc, self.raw)
            observer = PollingObserver(timeout=2)
            observer.schedule(Handler(), self.raw, recursive=True)
        return observer

    def note(self, path: str, *, written: bool) -> None:
        """An event on `path`: (re)start its quiet period."""
        path = os.path.abspath(path)
        if not is_candidate(path, self.raw, self.names):
            return
        with self._lock:
            p = self._pending.get(path)
            if p is None:
                self._pending[path] = _Pending(time.monotonic(), written)
            else:
                p.last_event = time.monotonic()
                p.written = p.written or written

    def forget(self, path: str) -> None:
        with self._lock:
            self._pending.pop(os.path.abspath(path), None)

    def _due(self, now: float) -> list[tuple[str, _Pending]]:
        with self._lock:
            return [(path, p) for path, p in self._pending.items() if now - p.last_event >= self.quiet]

    def tick(self, now: float | None = None) -> list[Entry]:
        """Requeue the paths that are due; return their entries."""
        from sexstream.requeue import Entry, write_manifest

        now = time.monotonic() if now is None else now
        due = self._due(now)
        if not due:
            return []
        self.verdicts.refresh()
        entries, settled = [], []
        for path, p in due:
            st = _stat(path)
            if st is None and not os.path.lexists(path):
                self.forget(path)  # deleted: nothing to measure
                continue
            if self.verdicts.covers(path, st):
                settled.append((path, p))
                continue
            atomic = not p.written and st is not None and st.st_size > 0 and self.verdicts.get(path) is None
            if atomic and now - p.last_event < self.grace:
                continue  # Spark's listing delivers it complete; look again after the grace
            why = "written in place" if p.written else "arrived" if atomic else "changed or unlisted"
            entries.append(Entry(path, st.st_size if st else None, st.st_mtime if st else None, why=why))
            settled.append((path, p))
        if entries:  # a failed write leaves the paths pending: the next tick tries again
            write_manifest(self.requeue_dir, entries, max_lines=self.max_lines)
            self.requeued += len(entries)
            log.debug("arrivals: requeued %s", ", ".join(e.path for e in entries))
        for path, p in settled:
            self._drop(path, p)
        return entries

    def _drop(self, path: str, p: _Pending) -> None:
        with self._lock:
            if self._pending.get(path) is p and p.last_event <= time.monotonic() - self.quiet:
                del self._pending[path]

    def _run(self) -> None:
        while not self._stop.wait(TICK_S):
            try:
                self.tick()
            except Exception:  # the gate must never take the daemon down
                log.exception("arrivals: tick failed; retrying")

    def stop(self) -> None:
        self._stop.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(10)
        if self._thread is not None:
            self._thread.join(10)


def checkpoint_sources(checkpoint: str) -> int | None:
    """How many sources the query of `checkpoint` was started with (None: no batch yet).
    Spark refuses to resume a checkpoint with a different number of sources."""
    offsets = Path(checkpoint) / "offsets"
    logs = [p for p in offsets.iterdir() if p.name.isdigit()] if offsets.is_dir() else []
    if not logs:
        return None
    lines = max(logs, key=lambda p: int(p.name)).read_text().splitlines()
    return len(lines) - 2  # "v1", the batch metadata, then one line per source


def requeue_source(checkpoint: str, folders: int = 1) -> str | None:
    """The requeue folder to read as the query's extra source, or None (with a warning)
    for a checkpoint made before the gate existed, which Spark could not resume with it."""
    from sexstream.requeue import requeue_folder

    if checkpoint_sources(checkpoint) == folders:
        log.warning("arrivals: checkpoint %s predates the requeue source: files the listing "
                    "misses are not requeued; start on a new checkpoint to enable it", checkpoint)
        return None
    return str(requeue_folder(checkpoint))


def requeue_stream(spark, folder: str):
    """A streaming DataFrame of (path, length, modificationTime, force) from the manifests
    in `folder`, one manifest per micro-batch; Spark deletes a manifest once the batch
    that read it is committed (cleanSource)."""
    from sexstream.requeue import MANIFEST_SCHEMA

    from pyspark.sql import functions as F

    Path(folder).mkdir(parents=True, exist_ok=True)
    return (spark.readStream.format("json").schema(MANIFEST_SCHEMA)
            .option("maxFilesPerTrigger", "1")
            .option("cleanSource", "delete")
            .load(folder)
            .select("path", "length", F.col("mtime").cast("timestamp").alias("modificationTime"),
                    F.coalesce(F.col("force"), F.lit(False)).alias("force")))


# --- sexstream retry-failed ---------------------------------------------------------

def select_failures(sink: str, *, reason: str | None = None, statuses=("failed",),
                    paths: list[str] | None = None) -> list[tuple[str, str, str]]:
    """(path, status, reason) of every path whose newest images row has one of `statuses`
    and a reason matching the regex `reason` (case-insensitive), still present on disk."""
    from sexstream.requeue import Verdicts

    from sexstream.tables import images_path

    verdicts = Verdicts(images_path(sink)).refresh()
    pattern = re.compile(reason, re.IGNORECASE) if reason else None
    wanted = {os.path.abspath(p) for p in paths} if paths else None
    out = []
    for path, v in verdicts.items():
        if v.status not in statuses or (wanted is not None and path not in wanted):
            continue
        if pattern is not None and not pattern.search(v.reason or ""):
            continue
        if os.path.lexists(path):
            out.append((path, v.status, v.reason or ""))
    return out


def cmd_retry_failed(args: argparse.Namespace) -> int:
    from sexstream.requeue import Entry, requeue_folder, write_manifest

    from sexstream.cli import settings_from_args

    settings = settings_from_args(args, sink=args.sink, checkpoint=args.checkpoint)
    statuses = ("failed", "incomplete") if args.incomplete else ("failed",)
    found = select_failures(settings.sink, reason=args.reason, statuses=statuses, paths=args.paths)
    for path, status, why in found:
        print(f"{'would requeue' if args.dry_run else 'requeue'} [{status}] {path}: {why}")
    if found and not args.dry_run:
        folder = requeue_folder(settings.checkpoint)
        write_manifest(folder, [Entry.of(p, force=True, why="retry-failed") for p, _, _ in found],
                       max_lines=settings.max_files_per_trigger)
        print(f"{len(found)} image(s) requeued into {folder}; the daemon of that checkpoint "
              "measures them again (now, or when it next starts)")
    elif not found:
        print("no recorded failure matches")
    return 0


def register(sub) -> None:
    p = sub.add_parser("retry-failed", help="requeue recorded failures after you fixed the cause",
                       description="Requeue every image whose newest images row is 'failed' (and "
                       "matches --reason) into the daemon's checkpoint, flagged to be measured "
                       "again even though its bytes were already measured. The running daemon "
                       "picks them up within a trigger; a stopped one when it starts.")
    p.add_argument("paths", nargs="*", metavar="PATH", help="only these raw files")
    p.add_argument("--sink", help="folder of the Delta tables")
    p.add_argument("--checkpoint", help="the daemon's checkpoint folder (its requeue/ gets the list)")
    p.add_argument("--reason", metavar="PATTERN", help="regex matched on the recorded reason")
    p.add_argument("--incomplete", action="store_true", help="also requeue images recorded incomplete")
    p.add_argument("--dry-run", action="store_true", help="list what would be requeued")
    p.add_argument("--settings", metavar="TOML")
    p.set_defaults(func=cmd_retry_failed)
