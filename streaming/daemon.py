"""The daemon's run loop (`sexstream run`), and a graceful stop for it and replay."""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # imported where used: `GracefulStop` alone must import fast
    from sexstream.engine import Hooks
    from sexstream.settings import Settings
    from streaming.foreach import ForeachBatch

log = logging.getLogger("sexstream")


class GracefulStop:
    """SIGTERM/SIGINT ask the loop to stop after the batch in progress."""

    def __init__(self):
        self.event = threading.Event()
        self.signal_name = None

    def install(self) -> "GracefulStop":
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame):
        if self.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.signal_name = signal.Signals(signum).name
        self.event.set()


def stop_between_batches(query, adapter: ForeachBatch, timeout: float = 3600.0) -> None:
    """Stop `query` once the batch in progress (if any) is committed.

    An available-now query runs all its batches inside one trigger, so the adapter's own
    `busy` flag tells "between batches", not the query's trigger status. Should Spark
    start the next batch in the instant before the stop, that batch is interrupted
    before its commit and simply replayed by the next run."""
    deadline = time.monotonic() + timeout
    while query.isActive and adapter.busy.is_set() and time.monotonic() < deadline:
        time.sleep(0.02)
    query.stop()


def run_daemon(settings: Settings, *, dashboard: bool = False, ui: bool = False,
               stop: GracefulStop | None = None, ready=None, hooks: Sequence[Hooks] = ()) -> int:
    """`sexstream run`: watch settings.raw until SIGTERM/SIGINT; returns an exit code.

    `hooks` (sexstream.engine.Hooks) are called at every phase of every batch. The
    monitor (`streaming.monitor`) serves /metrics, /healthz and /readyz from the start
    (with `settings.metrics_port`, and on the dashboard) and keeps
    `<checkpoint>/health.json` for `sexstream status`."""
    from sexstream import extractor
    from sexstream.arrivals import ArrivalGate
    from sexstream.engine import Engine
    from sexstream.health import error_line
    from sexstream.index import Index
    from sexstream.journal import Journal, journal_folder
    from sexstream.sink import Sink
    from sexstream.upkeep import Upkeep
    from streaming.monitor import Monitor
    from streaming.preflight import check_executors
    from streaming.query import start_query, warm_up_in_background
    from streaming.session import BackgroundSession, end_jvm, stop_session
    from streaming.sources import retire_old_checkpoint

    plan = extractor.prepare(settings)  # unknown keys etc. fail before Spark starts
    stop = (stop or GracefulStop()).install()  # a SIGTERM during start-up stops cleanly too
    monitor = Monitor(settings, info={"config_hash": plan.config_hash}).start()
    health = monitor.health
    # the JVM boots while the driver recovers the sink, starts the watch and reconciles
    session = BackgroundSession(settings, "sexstream-run", ui=ui).start()
    board = gate = upkeep = spark = None
    try:
        health.starting("recovering the sink and starting the arrival gate (the JVM boots meanwhile)")
        sink = Sink(settings.sink)
        engine = Engine(sink, plan, hooks=[*hooks, monitor.metrics], files_per_task=settings.files_per_task).start()
        retire_old_checkpoint(settings.checkpoint)
        gate = ArrivalGate(settings.raw, Journal(journal_folder(settings.checkpoint)), Index(sink.root),
                           plan.config_hash, mode=settings.arrival_mode, quiet=settings.arrival_quiet,
                           stall=settings.arrival_stall, poll_s=settings.arrival_poll or None).start()
        health.starting("building the Spark session")
        spark = session.result()
        stop.install()  # again: the SparkContext installed its own SIGINT handler
        health.starting("checking that every executor can run SExtractor")
        report = check_executors(spark, settings)
        log.info("preflight: %s", report.summary())
        warm_up_in_background(spark)  # the Python workers import the core while the query starts
        health.starting("waiting for the streaming query's first trigger")
        query, adapter = start_query(spark, settings, engine, checkpoint=settings.checkpoint, name="sexstream_run")
        upkeep = Upkeep(settings.sink, every=settings.maintenance_every,
                        retention_hours=settings.retention_hours,
                        log_retention_hours=settings.log_retention_hours).start()
        monitor.attach(query, adapter, engine, upkeep)
        log.info("watching %s -> %s (checkpoint %s, query id %s, trigger %g s)", settings.raw,
                 settings.sink, settings.checkpoint, query.id, settings.trigger, extra={"event": "start", "data": {
                     "raw": settings.raw, "sink": settings.sink, "checkpoint": settings.checkpoint,
                     "query_id": str(query.id), "trigger_s": settings.trigger, "master": settings.master,
                     "config_hash": plan.config_hash, "pid": os.getpid()}})
        if dashboard:
            from sexstream.dashboard.server import Dashboard

            board = Dashboard(settings.sink, settings.dashboard_host, settings.dashboard_port,
                              endpoints=monitor.endpoints).start()
            log.info("dashboard: %s", board.url)
        if ready is not None:
            ready(query)
        seen = None
        while query.isActive and not stop.event.wait(0.5):
            if log.isEnabledFor(logging.DEBUG):
                progress = query.lastProgress
                if progress and progress.get("batchId") != seen:
                    seen = progress.get("batchId")
                    log.debug("batch %s Spark durations (ms): %s", seen, progress.get("durationMs"))
        if stop.event.is_set():
            health.stopping(f"{stop.signal_name or 'stop'}: finishing the batch in progress")
            log.info("%s: finishing the batch in progress, then stopping", stop.signal_name or "stop",
                     extra={"event": "stopping", "data": {"signal": stop.signal_name}})
            stop_between_batches(query, adapter)
        monitor.sample()  # the final numbers (batches, last commit) into the health file
        exc = query.exception()
        if exc is not None:
            error = f"the streaming query failed: {error_line(str(exc))}"
            health.failed(error)
            log.error("the streaming query failed: %s", exc, extra={"event": "stop", "data": {
                "exit_code": 1, "batches": engine.totals.batches, "error": error}})
            return 1
        health.stopped(0)
        log.info("stopped cleanly after %d batch(es)", engine.totals.batches,
                 extra={"event": "stop", "data": {"exit_code": 0, "batches": engine.totals.batches}})
        return 0
    except BaseException as exc:  # the CLI's exit codes: 130 interrupted, 2 usage/config/runtime, else 1
        code = 130 if isinstance(exc, KeyboardInterrupt) else 2 if isinstance(
            exc, (ValueError, FileNotFoundError, RuntimeError)) else 1
        health.failed(f"{type(exc).__name__}: {exc}", exit_code=code)
        raise
    finally:
        if health.state not in ("stopped", "failed"):
            health.stopping("ending the session")
        monitor.detach()
        for part in (gate, upkeep, board):
            if part is not None:
                part.stop()
        if spark is None:
            session.abandon()
        else:
            stop_session(spark)
        end_jvm()  # the daemon's end is the end of all its processes
        monitor.stop()  # last: until here /readyz says why it is not ready


def configure_logging(verbose: bool = False, log_format: str = "text") -> None:
    """The command's log: lines for people on stderr, or JSON lines on stdout."""
    from sexstream.logformat import configure

    configure(verbose, log_format)
