"""The daemon's run loop (`sexstream run`), and a graceful stop for it and replay."""
from __future__ import annotations

import logging
import signal
import sys
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

    `hooks` (sexstream.engine.Hooks) are called at every phase of every batch."""
    from sexstream import extractor
    from sexstream.arrivals import ArrivalGate
    from sexstream.engine import Engine
    from sexstream.index import Index
    from sexstream.journal import Journal, journal_folder
    from sexstream.sink import Sink
    from sexstream.upkeep import Upkeep
    from streaming.preflight import check_executors
    from streaming.query import start_query, warm_up_in_background
    from streaming.session import BackgroundSession, end_jvm, stop_session
    from streaming.sources import retire_old_checkpoint

    plan = extractor.prepare(settings)  # unknown keys etc. fail before Spark starts
    stop = (stop or GracefulStop()).install()  # a SIGTERM during start-up stops cleanly too
    # the JVM boots while the driver recovers the sink, starts the watch and reconciles
    session = BackgroundSession(settings, "sexstream-run", ui=ui).start()
    board = gate = upkeep = spark = None
    try:
        sink = Sink(settings.sink)
        engine = Engine(sink, plan, hooks=hooks, files_per_task=settings.files_per_task).start()
        retire_old_checkpoint(settings.checkpoint)
        gate = ArrivalGate(settings.raw, Journal(journal_folder(settings.checkpoint)), Index(sink.root),
                           plan.config_hash, mode=settings.arrival_mode, quiet=settings.arrival_quiet,
                           stall=settings.arrival_stall, poll_s=settings.arrival_poll or None).start()
        spark = session.result()
        stop.install()  # again: the SparkContext installed its own SIGINT handler
        report = check_executors(spark, settings)
        log.info("preflight: %s", report.summary())
        warm_up_in_background(spark)  # the Python workers import the core while the query starts
        query, adapter = start_query(spark, settings, engine, checkpoint=settings.checkpoint, name="sexstream_run")
        log.info("watching %s -> %s (checkpoint %s, query id %s, trigger %g s)", settings.raw,
                 settings.sink, settings.checkpoint, query.id, settings.trigger)
        upkeep = Upkeep(settings.sink, every=settings.maintenance_every,
                        retention_hours=settings.retention_hours).start()
        if dashboard:
            from sexstream.dashboard.server import Dashboard

            board = Dashboard(settings.sink, settings.dashboard_host, settings.dashboard_port).start()
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
            log.info("%s: finishing the batch in progress, then stopping", stop.signal_name or "stop")
            stop_between_batches(query, adapter)
        exc = query.exception()
        if exc is not None:
            log.error("the streaming query failed: %s", exc)
            return 1
        log.info("stopped cleanly after %d batch(es)", engine.totals.batches)
        return 0
    finally:
        for part in (gate, upkeep, board):
            if part is not None:
                part.stop()
        if spark is None:
            session.abandon()
        else:
            stop_session(spark)
        end_jvm()  # the daemon's end is the end of all its processes


def configure_logging(verbose: bool = False) -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s.%(msecs)03d %(levelname)s %(message)s", datefmt="%Y-%m-%dT%H:%M:%S")
    logging.getLogger("py4j").setLevel(logging.WARNING)
