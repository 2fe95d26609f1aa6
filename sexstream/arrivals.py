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

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sexstream import rawfiles
from sexstream.requeue import Entry, write_manifest
from sexstream.verdicts import Verdicts

log = logging.getLogger("sexstream")

#: How often the gate looks for paths that have become quiet, seconds.
TICK_S = 0.2


def reconcile(raw: str, verdicts: Verdicts) -> list[Entry]:
    """The files below `raw` whose newest images row is not about them as they are now."""
    entries = []
    for path, st in rawfiles.walk([raw]):
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

    def __init__(self, raw: str, requeue_dir: str, verdicts: Verdicts, *, quiet: float = 1.0,
                 grace: float = 60.0, max_lines: int = 64):
        self.raw = os.path.abspath(raw)
        self.requeue_dir = str(requeue_dir)
        self.verdicts = verdicts
        self.quiet = float(quiet)
        self.grace = max(float(grace), self.quiet)
        self.max_lines = max_lines
        self.requeued = 0
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._observer = None
        self._thread: threading.Thread | None = None

    def start(self) -> "ArrivalGate":
        """Start watching, then reconcile the folder with the images table (events that
        happen during the reconciliation are not lost: the observer runs first)."""
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
        if not rawfiles.is_candidate(path, self.raw):
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
        now = time.monotonic() if now is None else now
        due = self._due(now)
        if not due:
            return []
        self.verdicts.refresh()
        entries, settled = [], []
        for path, p in due:
            st = rawfiles.stat_or_none(path)
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


