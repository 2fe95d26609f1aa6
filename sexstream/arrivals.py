"""The arrival gate: every image in the raw folder is journaled for measurement once its
writer is done with it, however it arrives, at a cost that does not grow with the tree.

Discovery is driven by arrivals, not by listing (`sexstream.journal` is the query's
source). Two ways to learn that a file is ready, chosen per raw folder (`mode`):

- events (local file systems): a watchdog observer (inotify, recursive). A file renamed
  into place (`mv`, rsync, a careful downloader), or linked, is ready at once (0.1 s to
  see that no write follows). A file written in place is ready when its writer closes
  it (IN_CLOSE_WRITE), however long it stalls in between -- a preallocating download
  that pauses after its header is never measured half-written. One created empty and
  left so is ready after `quiet` seconds. A file still open for writing `stall`
  seconds after its last write is journaled `stalled`: recorded "incomplete" without
  being measured, and measured once its writer closes it.
- poll (network file systems, where a file written by another host raises no inotify
  event: NFS, Lustre, GPFS, CIFS, FUSE): a file is ready once its size and mtime have
  not changed for `quiet` seconds. A writer that stalls longer than `quiet` defeats
  this: raise `arrival_quiet` above your downloads' longest pause, or have them write a
  temporary name and rename.

Events can be missed (a queue overflow, a remote writer, the daemon was down), so a
poller also runs in events mode, less often: it looks only into folders changed within
`active_s` (a folder's mtime moves when a file is created or renamed in it), so its cost
follows tonight's files, never the archive's. At start-up, `reconcile` walks the tree
once, streamed, and journals every image whose verdict in the sink (the index, for this
config) is not about its bytes as they are now.

A file already measured with the same bytes and config is never journaled again: the
gate asks the sink's verdict index first.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sexstream import rawfiles
from sexstream.index import Index
from sexstream.journal import Entry, Journal

log = logging.getLogger("sexstream")

#: How often the gate looks for paths that are due, seconds.
TICK_S = 0.05
#: A file that appeared with content and no write (renamed in from outside the watched
#: tree, or a hard link) is ready this long after, unless a write shows up meanwhile.
SETTLE_S = 0.1
#: How long watchdog holds an IN_MOVED_FROM to pair it with its IN_MOVED_TO. Its default
#: (0.5 s) delays every rename that way, even one paired at once (its queue sleeps on the
#: held event); the kernel hands both halves of a rename over in one read, so a short wait pairs
#: them as well (20 ms).
MOVE_PAIRING_S = 0.02
#: File system types whose files can change without an inotify event on this host.
NETWORK_FS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "ceph", "glusterfs",
              "9p", "afs", "panfs", "pvfs2", "ocfs2", "gfs2", "fuse")


def filesystem_type(path: str | os.PathLike[str]) -> str:
    """The type of the file system `path` is on (from /proc/self/mountinfo), "" if unknown."""
    target = os.path.realpath(path)
    best, kind = "", ""
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                left, _, right = line.partition(" - ")
                point = left.split()[4].replace("\\040", " ")
                if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
                    best, kind = point, right.split()[0]
    except (OSError, IndexError):
        return ""
    return kind


def choose_mode(raw: str, mode: str) -> str:
    """"events" or "poll" for the folder `raw` (`mode` "auto" decides by its file system)."""
    if mode in ("events", "poll"):
        return mode
    kind = filesystem_type(raw)
    return "poll" if kind.split(".")[0] in NETWORK_FS else "events"


@dataclass
class _Pending:
    first: float  # monotonic seconds of the first event
    last: float  # ... of the last one
    written: bool = False  # written in place since it was last journaled
    closed: bool = False  # its writer closed it after the last write
    moved: bool = False  # renamed into place
    polled: bool = False  # seen changed by the poller: ready once quiet


class ArrivalGate:
    """Watches `raw` and journals its images into `journal` once they are ready."""

    def __init__(self, raw: str, journal: Journal, index: Index, config_hash: str, *, mode: str = "auto",
                 quiet: float = 1.0, stall: float = 600.0, poll_s: float | None = None,
                 active_s: float = 6 * 3600.0):
        self.raw = os.path.abspath(raw)
        self.journal = journal
        self.index = index
        self.config_hash = config_hash
        self.mode = choose_mode(self.raw, mode)
        self.quiet = float(quiet)
        self.stall = max(float(stall), self.quiet)
        self.poll_s = float(poll_s) if poll_s is not None else (10.0 if self.mode == "events" else 2.0)
        self.active_s = float(active_s)
        self.journaled = 0
        self._pending: dict[str, _Pending] = {}
        self._sent: dict[str, tuple[int, int]] = {}  # path -> (size, mtime_ns) journaled, not yet known
        self._seen: dict[str, dict[str, tuple[int, int]]] = {}  # poller: folder -> name -> (size, mtime_ns)
        self._lock = threading.Lock()
        self._ticking = threading.Lock()
        self._stop = threading.Event()
        self._observer = None
        self._threads: list[threading.Thread] = []

    # -- life cycle

    def start(self, reconcile_first: bool = True) -> "ArrivalGate":
        """Start watching (events mode), then reconcile the tree in the background (events
        during the reconciliation are not lost: the watch runs first)."""
        Path(self.raw).mkdir(parents=True, exist_ok=True)
        if self.mode == "events":
            self._observer = self._make_observer()
            self._observer.start()
        log.info("arrivals: %s mode for %s (%s)", self.mode, self.raw,
                 filesystem_type(self.raw) or "unknown file system")
        self._spawn(self._run, "sexstream-arrivals")
        self._spawn(self._poll_loop, "sexstream-arrivals-poll")
        if reconcile_first:
            self._spawn(self._reconcile_once, "sexstream-reconcile")
        return self

    def _spawn(self, target, name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(10)
        for t in self._threads:
            t.join(10)

    def _make_observer(self):
        from watchdog.events import (FileClosedEvent, FileCreatedEvent, FileDeletedEvent, FileModifiedEvent,
                                     FileMovedEvent, FileSystemEventHandler)
        from watchdog.observers import Observer
        from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper

        InotifyMoveEventGrouper.delay = MOVE_PAIRING_S  # watchdog's knob: a class attribute
        gate = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event):
                if event.is_directory:
                    return
                if isinstance(event, FileMovedEvent):
                    gate.note(event.dest_path, "moved")
                elif isinstance(event, FileCreatedEvent):
                    gate.note(event.src_path, "created")
                elif isinstance(event, FileModifiedEvent):
                    gate.note(event.src_path, "written")
                elif isinstance(event, FileClosedEvent):
                    gate.note(event.src_path, "closed")
                elif isinstance(event, FileDeletedEvent):
                    gate.forget(event.src_path)

        kinds = [FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileMovedEvent, FileDeletedEvent]
        observer = Observer()
        try:
            observer.schedule(Handler(), self.raw, recursive=True, event_filter=kinds)
        except OSError as exc:  # e.g. the inotify watch limit: poll instead
            log.warning("arrivals: inotify unavailable (%s); polling %s every 2 s", exc, self.raw)
            self.mode, self.poll_s = "poll", 2.0
            return _NoObserver()
        return observer

    # -- events

    def note(self, path: str, kind: str) -> None:
        """An event on `path`: "created", "written", "closed", "moved", or "polled" (the
        poller saw it change; ignored for a path the watch is already following)."""
        path = os.path.abspath(path)
        if not rawfiles.is_candidate(path, self.raw):
            return
        now = time.monotonic()
        with self._lock:
            p = self._pending.get(path)
            if p is None:
                p = self._pending[path] = _Pending(now, now)
            elif kind == "polled" and not p.polled:
                return  # the watch saw it: its close (or the stall bound) decides
            elif kind != "polled":
                p.polled = False  # an event came: the watch follows it from here
            p.last = now
            if kind == "written":
                p.written, p.closed = True, False
            elif kind == "closed":
                p.closed = True
            elif kind == "moved":
                p.moved, p.written, p.closed = True, False, False
            elif kind == "created":
                p.written, p.closed = False, False
            elif kind == "polled":
                p.polled = True
            at_once = kind in ("moved", "closed") and not p.polled
        if at_once:
            self.tick(only=path)  # renamed in, or closed by its writer: no need to wait for a tick

    def forget(self, path: str) -> None:
        with self._lock:
            self._pending.pop(os.path.abspath(path), None)
            self._sent.pop(os.path.abspath(path), None)

    def _ready(self, path: str, p: _Pending, now: float) -> str | None:
        """Why a pending path is ready now ("arrived", "written", ...), None to wait,
        "stalled" when its writer has held it past the bound."""
        quiet_for = now - p.last
        if self.mode == "poll" or p.polled:
            return "quiet" if quiet_for >= self.quiet else None
        if p.moved and not p.written:
            return "arrived"
        if p.closed:
            return "written"  # its writer closed it after the last write (or a clone)
        if p.written:
            return "stalled" if quiet_for >= self.stall else None
        # created without a write so far: renamed in from outside the watch (watchdog
        # reports that as a creation) or linked -- complete at once; or created empty by
        # a writer whose first write is still to come -- wait for the quiet period
        if quiet_for >= self.quiet:
            return "created"
        if quiet_for >= SETTLE_S:
            st = rawfiles.stat_or_none(path)
            return "arrived" if st is not None and st.st_size > 0 else None
        return None

    def tick(self, now: float | None = None, only: str | None = None) -> list[Entry]:
        """Journal the pending paths that are ready (or just `only`, when given); return
        their entries. Ticks run one at a time (the tick thread, and the watch's thread
        for a path ready at once)."""
        with self._ticking:
            return self._tick(time.monotonic() if now is None else now, only)

    def _tick(self, now: float, only: str | None) -> list[Entry]:
        with self._lock:
            pending = [(only, self._pending[only])] if only in self._pending else [] if only else \
                list(self._pending.items())
            due = [(path, p, why) for path, p in pending if (why := self._ready(path, p, now)) is not None]
        if not due:
            return []
        entries, settled = [], []
        for path, p, why in due:
            st = rawfiles.stat_or_none(path)
            if st is None and not os.path.lexists(path):
                settled.append((path, p))  # deleted: nothing to measure
                continue
            if why != "stalled" and not self._new(path, st):
                settled.append((path, p))
                continue
            entries.append(Entry(path, st.st_size if st else None, st.st_mtime if st else None,
                                 stalled=why == "stalled", why=why))
            settled.append((path, p))
        self._send(entries)
        with self._lock:
            for path, p in settled:
                if self._pending.get(path) is p and p.last <= now:
                    del self._pending[path]
        return entries

    def _new(self, path: str, st: os.stat_result | None) -> bool:
        """True unless the sink (or this gate, since) already has these bytes."""
        if self._already_sent(path, st):
            return False
        v = self.index.get(path, self.config_hash)
        return v is None or not v.about(st)

    def _already_sent(self, path: str, st: os.stat_result | None) -> bool:
        key = None if st is None else (st.st_size, st.st_mtime_ns)
        return path in self._sent and self._sent[path] == key

    def _send(self, entries: list[Entry]) -> None:
        if not entries:
            return
        self.journal.append(entries)
        self.journaled += len(entries)
        with self._lock:
            for e in entries:
                if not e.stalled:
                    st = rawfiles.stat_or_none(e.path)
                    self._sent[e.path] = None if st is None else (st.st_size, st.st_mtime_ns)
        log.debug("arrivals: journaled %s", ", ".join(f"{e.path} ({e.why})" for e in entries))

    def _run(self) -> None:
        while not self._stop.wait(TICK_S):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 (the gate must never take the daemon down)
                log.exception("arrivals: tick failed; retrying")

    # -- the poller: recently changed folders only

    def poll(self) -> int:
        """One pass over the folders changed within `active_s`: files new or changed since
        the last pass become pending (ready after `quiet`). Returns how many."""
        horizon = time.time() - self.active_s
        found = 0
        active = set()
        for folder in self._active_folders(horizon):
            active.add(folder)
            seen = self._seen.get(folder)
            now_seen: dict[str, tuple[int, int]] = {}
            try:
                with os.scandir(folder) as it:
                    for entry in it:
                        if not rawfiles.is_raw_name(entry.name) or entry.is_dir():
                            continue
                        try:
                            st = entry.stat()
                        except OSError:
                            continue
                        now_seen[entry.name] = (st.st_size, st.st_mtime_ns)
                        if seen is not None and seen.get(entry.name) != now_seen[entry.name]:
                            self.note(entry.path, "polled")
                            found += 1
            except OSError:
                continue
            self._seen[folder] = now_seen
        for folder in set(self._seen) - active:  # gone quiet: forget it
            del self._seen[folder]
        return found

    def _active_folders(self, horizon: float) -> list[str]:
        """The raw folder and every folder below it changed since `horizon` (epoch s)
        whose parents all were too: a new file or rename moves its folder's mtime."""
        out, stack = [], [self.raw]
        while stack:
            folder = stack.pop()
            out.append(folder)
            try:
                with os.scandir(folder) as it:
                    for entry in it:
                        if rawfiles.hidden(entry.name):
                            continue
                        try:
                            if entry.is_dir(follow_symlinks=False) and entry.stat().st_mtime >= horizon:
                                stack.append(entry.path)
                        except OSError:
                            continue
            except OSError:
                continue
        return out

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll()
            except Exception:  # noqa: BLE001
                log.exception("arrivals: poll failed; retrying")

    # -- start-up

    def reconcile(self) -> int:
        """Journal every image below `raw` whose verdict for this config is not about its
        bytes as they are now (or that has none), one folder at a time; files written
        within the last `quiet` seconds are left to the watch. Returns how many."""
        n, batch = 0, []
        young = time.time() - max(self.quiet, 1.0)
        for path, st in rawfiles.walk([self.raw]):
            if self._stop.is_set():
                break
            if st is not None and st.st_mtime > young:
                self.note(path, "polled")  # maybe still being written: ready once quiet
                continue
            batch.append((path, st))
            if len(batch) >= 1000:
                n += self._reconcile(batch)
                batch = []
        return n + self._reconcile(batch)

    def _reconcile(self, batch: list[tuple[str, os.stat_result | None]]) -> int:
        known = self.index.lookup([p for p, _ in batch], self.config_hash)
        entries = [Entry(p, st.st_size if st else None, st.st_mtime if st else None,
                         why="no verdict" if p not in known else f"{known[p].status} for other bytes")
                   for p, st in batch if (p not in known or not known[p].about(st))
                   and not self._already_sent(p, st)]
        self._send(entries)
        return len(entries)

    def _reconcile_once(self) -> None:
        t0 = time.monotonic()
        try:
            n = self.reconcile()
        except Exception:  # noqa: BLE001
            log.exception("arrivals: the start-up reconciliation failed")
            return
        log.info("arrivals: start-up reconciliation journaled %d file(s) in %.1f s", n, time.monotonic() - t0)


class _NoObserver:
    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def join(self, timeout: float | None = None) -> None:
        pass
