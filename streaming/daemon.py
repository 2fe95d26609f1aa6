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
    from sexstream.sink import Sink
    from streaming import jvmarchive
    from streaming.preflight import check_executors
    from streaming.session import build_session, end_jvm, stop_session
    from streaming.query import start_query, warm_up
    from streaming.sources import requeue_source

    plan = extractor.prepare(settings)  # unknown keys etc. fail before Spark starts
    stop = (stop or GracefulStop()).install()  # a SIGTERM during start-up stops cleanly too
    jvmarchive.hint_if_missing(jvmarchive.FAST_START_JVM)
    spark = build_session(settings, "sexstream-run", ui=ui)
    stop.install()  # again: the SparkContext installed its own SIGINT handler
    board = gate = None
    try:
        report = check_executors(spark, settings)
        warm_up(spark)
        log.info("preflight: %s", report.summary())
        sink = Sink(settings.sink)
        ledger = sink.ledger(plan.config_hash)
        if ledger.sourced:
            log.warning("%d image(s) have sources rows but no images row (a driver died between a "
                        "batch's two commits): they get their images row, their sources are not "
                        "committed again", len(ledger.sourced))
        engine = Engine(sink, plan, ledger=ledger, hooks=hooks, files_per_task=settings.files_per_task)
        requeue = requeue_source(settings.checkpoint)
        if requeue is not None:
            gate = ArrivalGate(settings.raw, requeue, sink.verdicts(), quiet=settings.arrival_quiet,
                               grace=settings.arrival_grace, max_lines=settings.max_files_per_trigger).start()
        query, adapter = start_query(spark, settings, engine, [settings.raw], checkpoint=settings.checkpoint,
                                     name="sexstream_run", requeue=requeue)
        log.info("watching %s -> %s (checkpoint %s, query id %s, trigger %g s)", settings.raw,
                 settings.sink, settings.checkpoint, query.id, settings.trigger)
        if dashboard:
            from sexstream.dashboard.server import Dashboard

            board = Dashboard(settings.sink, settings.dashboard_host, settings.dashboard_port).start()
            log.info("dashboard: %s", board.url)
        if ready is not None:
            ready(query)
        while query.isActive and not stop.event.wait(0.5):
            pass
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
        if gate is not None:
            gate.stop()
        if board is not None:
            board.stop()
        stop_session(spark)
        end_jvm()  # the daemon's end is the end of all its processes


def configure_logging(verbose: bool = False) -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s.%(msecs)03d %(levelname)s %(message)s", datefmt="%Y-%m-%dT%H:%M:%S")
    logging.getLogger("py4j").setLevel(logging.WARNING)
