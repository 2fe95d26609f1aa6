"""The daemon's monitor: its health, metrics and endpoints, sampled from the streaming
query every second.

`Monitor(settings).start()` begins before Spark does, so `/healthz` and `/readyz` answer
(not ready: "starting: building the Spark session") from the first seconds; `attach`
hands it the query, the foreachBatch adapter and the engine once they exist. Each
sample reads the query (`isActive`, `lastProgress`: when its last trigger ended, and the
journal offset it committed), the adapter's `busy` flag, the arrivals journal's last
sequence number, and the engine's last batch; it updates `sexstream.health.Health`
(which writes `<checkpoint>/health.json` for `sexstream status`) and the metrics'
gauges. The daemon moves the life cycle itself (starting, stopping, stopped, failed);
the monitor promotes "starting" to "running" once the query has made its first
trigger or is in a batch.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING

from sexstream.endpoints import EndpointServer, Endpoints
from sexstream.health import BacklogClock, Bounds, Health, health_file
from sexstream.journal import Journal, journal_folder
from sexstream.metrics import DaemonMetrics
from sexstream.sinkfiles import SinkFiles

if TYPE_CHECKING:
    from sexstream.engine import Engine
    from sexstream.settings import Settings
    from sexstream.upkeep import Upkeep
    from streaming.foreach import ForeachBatch

log = logging.getLogger("sexstream")

#: Seconds between samples.
INTERVAL_S = 1.0


def driver_jvm_pid() -> int | None:
    """The pid of this driver's JVM: the process pyspark launched, or, under spark-submit
    (which started this Python), the parent; None when no JVM runs."""
    from pyspark import SparkContext

    proc = getattr(SparkContext._gateway, "proc", None)
    if proc is not None:
        return proc.pid
    if SparkContext._gateway is not None and os.environ.get("PYSPARK_GATEWAY_PORT"):
        return os.getppid()
    return None


def _epoch(timestamp: str) -> float:
    """Epoch seconds of a progress timestamp ("2026-12-03T22:49:14.416Z")."""
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def _seq(offset) -> int | None:
    """The journal sequence number of a source offset ('{"seq": 12}' or a dict)."""
    try:
        return int((json.loads(offset) if isinstance(offset, str) else offset)["seq"])
    except (TypeError, ValueError, KeyError):
        return None


class Monitor:
    """Health, metrics and (with `settings.metrics_port`) the endpoint server of one daemon."""

    def __init__(self, settings: Settings, *, info: dict[str, str] | None = None, interval: float = INTERVAL_S):
        self.interval = float(interval)
        bounds = Bounds(backlog_age=settings.ready_backlog_age, trigger_age=settings.ready_trigger_age)
        self.health = Health(bounds, health_file(settings.checkpoint))
        self.metrics = DaemonMetrics(SinkFiles(settings.sink), jvm_pid=driver_jvm_pid,
                                     info={"master": settings.master, **(info or {})})
        self.endpoints = Endpoints(self.metrics.registry, self.readiness, self.alive)
        self.server = (EndpointServer(self.endpoints, settings.metrics_host, settings.metrics_port)
                       if settings.metrics_port else None)
        self.journal = Journal(journal_folder(settings.checkpoint))
        self.clock = BacklogClock()
        self._parts: tuple | None = None  # (query, adapter, engine, upkeep), swapped whole
        self._lock = threading.Lock()  # one sample at a time (the thread's, the daemon's last)
        self._sampled_at = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "Monitor":
        if self.server is not None:
            self.server.start()
            log.info("metrics and health: %s/metrics, /healthz, /readyz", self.server.url)
        self._thread = threading.Thread(target=self._run, name="sexstream-monitor", daemon=True)
        self._thread.start()
        return self

    def attach(self, query, adapter: ForeachBatch, engine: Engine, upkeep: Upkeep | None = None) -> None:
        """Sample this query from now on."""
        self._parts = (query, adapter, engine, upkeep)

    def detach(self) -> None:
        """Stop sampling the query (before its session stops: a sample then in flight
        fails and is dropped)."""
        self._parts = None

    def stop(self) -> None:
        """Stop sampling and serving (the daemon's very last step)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.server is not None:
            self.server.stop()

    # -- what the endpoints ask

    def readiness(self) -> dict:
        return self.health.readiness()

    def alive(self) -> dict:
        age = time.time() - self._sampled_at
        return {"alive": age <= self.health.bounds.stale, "state": self.health.state,
                "last_sample_age_s": round(age, 3)}

    # -- sampling

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        """One sample of the stream into the health and the metrics (every second by the
        monitor's thread; once more by the daemon when its query has stopped)."""
        with self._lock:
            now = time.time()
            parts = self._parts
            try:
                if parts is not None:
                    fields = self._sample_stream(now, *parts)
                else:
                    fields = {}
                    self.clock.observe(self.journal.last_seq(), -1, now)  # the oldest arrivals' first sight
            except Exception as exc:  # noqa: BLE001 (the session stopping under it: the next one's job)
                log.debug("monitor: sample failed: %s", exc)
                return
            self.health.sample(**fields)
            self.metrics.sample(self.health.readiness(now))
            self._sampled_at = now

    def _sample_stream(self, now: float, query, adapter: ForeachBatch, engine: Engine,
                       upkeep: Upkeep | None) -> dict:
        active = bool(query.isActive)
        progress = query.lastProgress
        busy = adapter.busy.is_set()
        last_seq = self.journal.last_seq()
        fields: dict = {"query_active": active, "batch_in_progress": busy, "batches": engine.totals.batches}
        committed = None
        if progress is not None:
            fields["last_trigger_at"] = _epoch(progress.timestamp) + (progress.batchDuration or 0) / 1000.0
            committed = _seq(progress.sources[0].endOffset) if progress.sources else None
        if busy:
            fields["last_trigger_at"] = now
        if committed is not None:
            fields["backlog"], fields["backlog_since"] = self.clock.observe(last_seq, committed, now)
        else:
            self.clock.observe(last_seq, -1, now)
        if engine.last is not None and engine.last.committed_at is not None:
            fields["last_commit_at"] = engine.last.committed_at
        if upkeep is not None:
            self.metrics.maintenance_runs(upkeep.runs - upkeep.failures, upkeep.failures)
        if self.health.state == "starting" and active and (progress is not None or busy):
            self.health.running()
        return fields
