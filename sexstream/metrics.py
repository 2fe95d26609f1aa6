"""The daemon's Prometheus metrics: a registry fed by the engine's hooks (batches) and by
the monitor's samples (backlog, readiness), plus collectors read at scrape time (the
sink's files, memory, the last commit).

Every label has a small fixed set of values -- `status` (ok, failed, incomplete,
skipped), `reason` (`sexstream.reasons.CLASSES`), `table` (sources, images), `phase`,
`process` -- so the series never grow with history; paths and reasons' text stay in the
images table and the logs. Served as text by `sexstream.endpoints` at `/metrics`.

Latency: `sexstream_arrival_to_commit_seconds` counts, per measured image, from its
file's mtime as journaled (its last write) to the commit of its verdict.
"""
from __future__ import annotations

import importlib.metadata
import logging
import os
import time
from typing import Callable, Iterable

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector,
                               disable_created_metrics)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from sexstream.engine import BatchStats, Hooks
from sexstream.reasons import reason_class
from sexstream.sinkfiles import SMALL_FILE_BYTES, SinkFiles

log = logging.getLogger("sexstream")

#: The statuses an image ends a batch with.
STATUSES = ("ok", "failed", "incomplete", "skipped")
#: Buckets (seconds) of a batch's duration: a few images take under a second, a burst
#: of 64 large frames a minute or more.
BATCH_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
#: Buckets (seconds) of arrival -> commit: about a second when keeping up, up to a day
#: for a backlog found at start-up.
LATENCY_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
                   21600.0, 86400.0)


def version() -> str:
    """The installed sexstream's version ("unknown" when run from a bare checkout)."""
    try:
        return importlib.metadata.version("sexstream")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def resident_bytes(pid: int | None) -> int | None:
    """Resident memory of process `pid` (bytes, from /proc), None if unknown."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class SinkCollector:
    """Scrape-time metrics of the sink (`SinkFiles`, cached) and of the last commit:
    the newest of the sink's commits and of `own_commit()` (this daemon's, epoch s)."""

    def __init__(self, files: SinkFiles, own_commit: Callable[[], float | None] = lambda: None,
                 clock: Callable[[], float] = time.time):
        self.files = files
        self.own_commit = own_commit
        self.clock = clock

    def describe(self) -> list:
        return []  # read at scrape time only (never at registration)

    def collect(self) -> Iterable[Metric]:
        try:
            tables = self.files.tables()
        except Exception as exc:  # noqa: BLE001 (a commit being written, a compaction: next scrape)
            log.debug("metrics: reading the sink's logs failed: %s", exc)
            tables = ()
        commits = CounterMetricFamily("sexstream_sink_commits", "Commits in the table's Delta log "
                                      "(its latest version + 1), every writer's", labels=["table"])
        files = GaugeMetricFamily("sexstream_sink_files", "Live data files of the table", labels=["table"])
        small = GaugeMetricFamily("sexstream_sink_small_files", f"Live data files under {SMALL_FILE_BYTES} "
                                  "bytes (sexstream compact merges them)", labels=["table"])
        size = GaugeMetricFamily("sexstream_sink_bytes", "Bytes of the table's live data files", labels=["table"])
        for t in tables:
            commits.add_metric([t.table], t.commits)
            files.add_metric([t.table], t.files)
            small.add_metric([t.table], t.small_files)
            size.add_metric([t.table], t.bytes)
        yield from (commits, files, small, size)
        times = [t for t in (self.own_commit(), *(t.last_commit_at for t in tables)) if t is not None]
        if times:
            last = max(times)
            yield GaugeMetricFamily("sexstream_last_commit_timestamp_seconds",
                                    "When the newest commit to the sink was made (Unix time)", value=last)
            yield GaugeMetricFamily("sexstream_last_commit_age_seconds",
                                    "Seconds since the newest commit to the sink", value=max(0.0, self.clock() - last))


class MemoryCollector:
    """`sexstream_driver_memory_bytes{process="python"|"jvm"}`: resident memory of the
    driver's Python process and of its JVM (`jvm_pid()`, None when there is none)."""

    def __init__(self, jvm_pid: Callable[[], int | None] = lambda: None):
        self.jvm_pid = jvm_pid

    def describe(self) -> list:
        return []

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily("sexstream_driver_memory_bytes", "Resident memory of the driver's processes",
                                   labels=["process"])
        for name, pid in (("python", os.getpid()), ("jvm", self.jvm_pid())):
            rss = resident_bytes(pid)
            if rss is not None:
                family.add_metric([name], rss)
        yield family


def sink_registry(files: SinkFiles) -> CollectorRegistry:
    """The registry of a process that reads a sink without ingesting (`sexstream dashboard`):
    the sink's files and last commit, and the process's own resources."""
    disable_created_metrics()  # no `_created` series: they double the count and tell nothing here
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    registry.register(SinkCollector(files))
    registry.register(MemoryCollector())
    return registry


class DaemonMetrics(Hooks):
    """The metrics of one `sexstream run`: an engine hook (`batch`) and the monitor's
    `sample`; `registry` is what `/metrics` serves."""

    def __init__(self, files: SinkFiles, *, jvm_pid: Callable[[], int | None] = lambda: None,
                 info: dict[str, str] | None = None, clock: Callable[[], float] = time.time):
        disable_created_metrics()  # no `_created` series: they double the count and tell nothing here
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.clock = clock
        self.last_commit_at: float | None = None
        ProcessCollector(registry=r)
        Info("sexstream", "The daemon's version and set-up", registry=r).info({"version": version(), **(info or {})})
        self.images = Counter("sexstream_images", "Images given a verdict by this daemon, by status "
                              "(skipped: its bytes were already measured with this config)", ["status"], registry=r)
        for status in STATUSES:
            self.images.labels(status)
        self.sources = Counter("sexstream_sources", "Sources committed by this daemon", registry=r)
        self.batches = Counter("sexstream_batches", "Batches committed by this daemon", registry=r)
        self.batch_seconds = Histogram("sexstream_batch_duration_seconds", "Seconds per batch, from its "
                                       "planning to its images commit", buckets=BATCH_BUCKETS, registry=r)
        self.phase_seconds = Counter("sexstream_batch_phase_seconds", "Seconds the batches spent planning, "
                                     "measuring (tasks) and committing", ["phase"], registry=r)
        for phase in ("plan", "tasks", "commit"):
            self.phase_seconds.labels(phase)
        self.latency = Histogram("sexstream_arrival_to_commit_seconds", "Seconds from a measured file's mtime "
                                 "(its last write, as journaled) to the commit of its verdict",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.failures = Counter("sexstream_image_failures", "Failed and incomplete images by reason class",
                                ["status", "reason"], registry=r)
        self.backlog = Gauge("sexstream_backlog_files", "Arrivals journaled and not yet committed", registry=r)
        self.backlog_age = Gauge("sexstream_backlog_oldest_seconds", "Seconds the oldest waiting arrival has "
                                 "waited since the daemon saw it journaled (0 when none waits)", registry=r)
        self.trigger_age = Gauge("sexstream_last_trigger_age_seconds", "Seconds since Spark's last trigger "
                                 "ended (0 during a batch)", registry=r)
        self.ready = Gauge("sexstream_ready", "1 when the daemon is ready (GET /readyz says why not)", registry=r)
        self.maintenance = Counter("sexstream_maintenance_runs", "Scheduled compactions of the sink, by result",
                                   ["result"], registry=r)
        for result in ("ok", "failed"):
            self.maintenance.labels(result)
        self._maintenance = {"ok": 0, "failed": 0}
        r.register(SinkCollector(files, lambda: self.last_commit_at, clock))
        r.register(MemoryCollector(jvm_pid))

    # -- the engine's hook (driver, after each committed batch)

    def batch(self, stats: BatchStats) -> None:
        self.batches.inc()
        for status in STATUSES:
            n = getattr(stats, status)
            if n:
                self.images.labels(status).inc(n)
        self.sources.inc(stats.sources)
        self.batch_seconds.observe(stats.seconds)
        self.phase_seconds.labels("plan").inc(stats.plan_s)
        self.phase_seconds.labels("tasks").inc(stats.tasks_s)
        self.phase_seconds.labels("commit").inc(stats.commit_s)
        for _path, status, reason in stats.failures:
            self.failures.labels(status, reason_class(reason)).inc()
        committed = stats.committed_at if stats.committed_at is not None else self.clock()
        for mtime in stats.arrivals:
            self.latency.observe(max(0.0, committed - mtime))
        self.last_commit_at = committed

    # -- the monitor's samples

    def sample(self, readiness: dict) -> None:
        """Set the gauges from a `sexstream.health.readiness` result."""
        self.ready.set(1 if readiness["ready"] else 0)
        self.backlog.set(readiness["backlog"] if readiness["backlog"] is not None else float("nan"))
        self.backlog_age.set(readiness["backlog_oldest_s"] or 0.0)
        age = readiness["last_trigger_age_s"]
        self.trigger_age.set(age if age is not None else float("nan"))

    def maintenance_runs(self, ok: int, failed: int) -> None:
        """Bring the maintenance counters up to the upkeep's own totals."""
        for result, total in (("ok", ok), ("failed", failed)):
            if total > self._maintenance[result]:
                self.maintenance.labels(result).inc(total - self._maintenance[result])
                self._maintenance[result] = total
