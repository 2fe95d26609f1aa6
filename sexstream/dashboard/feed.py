"""The dashboard's live view of the sink: images rows and HEALPix source counts.

`SkyFeed` loads both tables once, then a watchdog observer on their `_delta_log`
folders wakes it at each new commit; it reads only that commit's added Parquet files
(`deltalog.DeltaTail`), folds sources into per-image HEALPix counts (raw source rows
are never kept) and pushes an event to every subscriber (the SSE streams).
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer

from sexstream.coverage import (COORD_COLUMNS, DENSITY_ORDER, DensityCounts, filter_of,
                                infer_healpix_order, source_pixels)
from sexstream.deltalog import AddFile, DeltaTail, read_add

log = logging.getLogger(__name__)

#: Images columns the page uses (the others stay on disk).
IMAGE_COLUMNS = ["path", "image_id", "status", "reason", "n_sources", "n_extensions",
                 "footprints", "FILTER", "FILTER1", "BAND", "FILTNAME", "obs_mjd", "mtime",
                 "started", "duration_s", "attempts", "host", "batch_id", "ingest_time", "current"]
SOURCE_COLUMNS = ["image_id", "healpix", "ingest_time", *(c for p in COORD_COLUMNS for c in p)]


def _seconds(value: Any) -> float | None:
    """Unix seconds of a datetime (None stays None)."""
    return None if value is None else value.timestamp()


def image_json(row: dict, rid: int) -> str:
    """One images row as the compact JSON object the page reads (angles to 1e-5 deg)."""
    fps = []
    for ext in row.get("footprints") or ():
        ra, dec = ext.get("ra"), ext.get("dec")
        if ra and dec and None not in ra + dec:
            fps.append([ext.get("ext_number"), [round(x, 5) for x in ra],
                        [round(x, 5) for x in dec]])
    path = row.get("path") or ""
    return json.dumps({
        "rid": rid, "path": path, "file": path.rsplit("/", 1)[-1], "id": row.get("image_id"),
        "status": row.get("status"), "reason": row.get("reason"),
        "n": row.get("n_sources"), "next": row.get("n_extensions"), "filter": filter_of(row),
        "obs_mjd": row.get("obs_mjd"), "t": _seconds(row.get("ingest_time")),
        "mtime": _seconds(row.get("mtime")), "started": _seconds(row.get("started")),
        "dur": row.get("duration_s"), "att": row.get("attempts"), "host": row.get("host"),
        "batch": row.get("batch_id"), "fp": fps,
    }, separators=(",", ":"), allow_nan=False)


class _Wake(FileSystemEventHandler):
    """Watchdog handler: any change in a watched folder wakes the feed."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def on_any_event(self, event: Any) -> None:
        self.event.set()


class SkyFeed:
    """Images rows + per-image HEALPix source counts of one sink, kept up to date.

    Thread-safe: the HTTP threads call `state`, `density` and `subscribe` while the
    feed's own thread applies commits.
    """

    def __init__(self, sink: str | Path, *, density_order: int = DENSITY_ORDER) -> None:
        self.sink = Path(sink).resolve()
        self.images = DeltaTail(self.sink / "images")
        self.sources = DeltaTail(self.sink / "sources")
        self.loading = True
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._subscribers: set[queue.Queue] = set()
        self._observer: Any = None
        self._watched: set[Path] = set()
        self._thread: threading.Thread | None = None
        self._density = DensityCounts(density_order)
        self._healpix_order: int | None = None
        self._has_positions = False
        self._rows: list[str] = []  # images rows as JSON, in commit order
        self._ids: dict[str, int] = {}  # image_id -> dense index into the arrays below
        self._ingest = np.full(1024, np.nan)  # per image: ingest time, Unix seconds
        self._obs = np.full(1024, np.nan)  # per image: obs_mjd, days
        self._n_sources = 0
        self._last_commit: dict[str, float | None] = {"images": None, "sources": None}

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Start the watchdog observer and the thread that loads and follows the tables."""
        self._observer = Observer()
        self._observer.start()
        self._thread = threading.Thread(target=self._run, name="sexstream-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop following; close every subscriber's stream."""
        self._stop.set()
        self._wake.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            for q in self._subscribers:
                q.put(None)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                watching = self._ensure_watches()
                self._catch_up()
                failures = 0
            except Exception:  # a vanished or unreadable file: retry, then start over
                failures += 1
                log.exception("dashboard feed: reading the tables failed (%d)", failures)
                watching = False
                if failures % 3 == 0:
                    self.images.version = self.sources.version = -1  # reload snapshots
            self._wake.wait(timeout=10.0 if watching else 1.0)
            self._wake.clear()

    def _ensure_watches(self) -> bool:
        """Watch the sink, the table folders and their logs as they appear; True when all are."""
        wanted = [self.sink, self.images.path, self.sources.path,
                  self.images.log_dir, self.sources.log_dir]
        for folder in wanted:
            if folder not in self._watched and folder.is_dir():
                self._observer.schedule(_Wake(self._wake), str(folder), recursive=False)
                self._watched.add(folder)
        return len(self._watched) == len(wanted)

    # -- applying commits --------------------------------------------------------------
    def _catch_up(self) -> None:
        for name, tail in (("sources", self.sources), ("images", self.images)):
            if tail.version < 0 or tail.has_gap():
                if tail.exists():
                    self._load(name, tail)
                continue
            commits = tail.poll()
            for commit in commits:
                if commit.rewrites:
                    commits.close()
                    self._load(name, tail)
                    break
                adds = [a for a in commit.adds if a.data_change]
                event = (self._apply_images if name == "images" else self._apply_sources)(adds)
                self._last_commit[name] = commit.visible_at
                event.update(table=name, version=commit.version,
                             visible_ms=round(commit.visible_at * 1000, 1),
                             pushed_ms=round(time.time() * 1000, 1))
                self._publish(event)
        if self.loading:
            self.loading = False
            self._publish({"type": "reset"})

    def _load(self, name: str, tail: DeltaTail) -> None:
        """Read a table from its latest snapshot (at start, or after a rewrite)."""
        adds = tail.snapshot()
        with self._lock:
            if name == "images":
                self._rows = []  # per-image times stay: the new rows overwrite them
            else:
                self._density = DensityCounts(self._density.order)
                self._n_sources = 0
        (self._apply_images if name == "images" else self._apply_sources)(adds)
        pa.default_memory_pool().release_unused()  # the big reads are over: give memory back
        commit_file = tail.log_dir / f"{tail.version:020d}.json"
        self._last_commit[name] = commit_file.stat().st_mtime if commit_file.exists() else None
        if not self.loading:
            self._publish({"type": "reset"})

    def _index(self, image_id: str) -> int:
        """The dense index of an image_id (new ids get the next one)."""
        idx = self._ids.get(image_id)
        if idx is None:
            idx = self._ids[image_id] = len(self._ids)
            if idx >= len(self._ingest):
                grow = np.full(len(self._ingest), np.nan)
                self._ingest = np.concatenate([self._ingest, grow])
                self._obs = np.concatenate([self._obs, grow])
        return idx

    def _apply_images(self, adds: list[AddFile]) -> dict:
        rows_json = []
        for add in adds:
            rows = read_add(add, IMAGE_COLUMNS, self.images.schema).to_pylist()
            with self._lock:
                for row in rows:
                    if row.get("current") is False:
                        continue  # superseded by a newer measurement of the same file
                    idx = self._index(row.get("image_id") or row.get("path") or "")
                    t = _seconds(row.get("ingest_time"))
                    self._ingest[idx] = np.nan if t is None else t
                    self._obs[idx] = np.nan if row.get("obs_mjd") is None else row["obs_mjd"]
                    text = image_json(row, len(self._rows))
                    self._rows.append(text)
                    rows_json.append(text)
        return {"type": "images", "rows_json": rows_json}

    def _apply_sources(self, adds: list[AddFile]) -> dict:
        n = 0
        for add in adds:
            columns = SOURCE_COLUMNS if self._healpix_order is None else SOURCE_COLUMNS[:3]
            table = read_add(add, columns, self.sources.schema, ("image_id",))
            if table.num_rows == 0 or "image_id" not in table.column_names:
                continue
            if "healpix" not in table.column_names or table["healpix"].null_count:
                table = read_add(add, SOURCE_COLUMNS, self.sources.schema, ("image_id",))
            if self._healpix_order is None and "healpix" in table.column_names:
                self._healpix_order = self._infer_order(table)
            pixels = source_pixels(table, self._density.order, self._healpix_order)
            if pixels is None:
                continue
            ids = table["image_id"].combine_chunks()
            ids = ids if pa.types.is_dictionary(ids.type) else pc.dictionary_encode(ids)
            with self._lock:
                lookup = np.array([self._index(x or "") for x in ids.dictionary.to_pylist()],
                                  np.int64)
                index = lookup[np.asarray(ids.indices.fill_null(0), np.int64)]
                if "ingest_time" in table.column_names:
                    t = pc.max(table["ingest_time"]).as_py()
                    unknown = np.isnan(self._ingest[lookup])
                    self._ingest[lookup[unknown]] = _seconds(t) if t else np.nan
                self._density.add(index, pixels)
                self._n_sources += table.num_rows
                self._has_positions = True
            n += table.num_rows
        return {"type": "sources", "rows": n, "total": self._n_sources}

    def _infer_order(self, table: pa.Table) -> int | None:
        names = table.column_names
        coords = next(((a, d) for a, d in COORD_COLUMNS if a in names and d in names), None)
        if coords is None:
            return None
        col = lambda name: np.asarray(pc.fill_null(table[name], np.nan), float)
        pix = np.asarray(pc.fill_null(table["healpix"], -1), np.int64)
        return infer_healpix_order(pix, col(coords[0]), col(coords[1]))

    # -- subscribers and queries -------------------------------------------------------
    def subscribe(self) -> queue.Queue:
        """A queue that receives each event as a JSON string (None when the feed stops)."""
        q: queue.Queue = queue.Queue(maxsize=1000)
        with self._lock:
            self._subscribers.add(q)
        return q

    def unsubscribe(self, q: queue.Queue) -> None:
        """Stop delivering events to `q`."""
        with self._lock:
            self._subscribers.discard(q)

    def _publish(self, event: dict) -> None:
        """Send an event to every subscriber; `rows_json` (JSON strings) is spliced in as-is."""
        rows = event.pop("rows_json", None)
        text = json.dumps(event, separators=(",", ":"))
        if rows is not None:
            text = text[:-1] + ',"rows":[' + ",".join(rows) + "]}"
        with self._lock:
            for q in self._subscribers:
                try:
                    q.put_nowait(text)
                except queue.Full:  # a stalled page: it skips to a full reload
                    while not q.empty():
                        q.get_nowait()
                    q.put_nowait(json.dumps({"type": "reset"}))

    def state(self) -> str:
        """Everything the page needs at (re)load, as a JSON string."""
        with self._lock:
            head = json.dumps({
                "sink": str(self.sink), "loading": self.loading,
                "versions": {"images": self.images.version, "sources": self.sources.version},
                "last_commit": self._last_commit, "sources": self._n_sources,
                "density": self._has_positions, "density_order": self._density.order,
                "server_time": time.time(),
            }, separators=(",", ":"))
            return head[:-1] + ',"images":[' + ",".join(self._rows) + "]}"

    def density(self, order: int, axis: str = "ingest", since: float | None = None) -> str:
        """Source counts per HEALPix cell at `order` for images in the window, as JSON.

        `since` is Unix seconds (axis 'ingest') or an MJD (axis 'obs'); None: everything.
        """
        order = max(0, min(int(order), self._density.order))
        with self._lock:
            n = len(self._ids)
            if since is None:
                mask = None
            else:
                values = self._obs[:n] if axis == "obs" else self._ingest[:n]
                with np.errstate(invalid="ignore"):
                    mask = values >= since
            cells, counts = self._density.counts(mask, order)
        return json.dumps({"order": order, "cells": cells.tolist(), "counts": counts.tolist()},
                          separators=(",", ":"))
