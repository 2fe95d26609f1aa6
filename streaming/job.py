"""The Structured Streaming query over raw directories, and the daemon's run loop.

Usable as `sexstream run ...` or `spark-submit streaming/job.py ...` (same flags).
"""
from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: `GracefulStop` alone must import fast
    from sexstream.extractor import Plan
    from sexstream.ledger import Ledger
    from sexstream.settings import Settings
    from streaming.batch import BatchRunner

log = logging.getLogger("sexstream")

#: binaryFile needs an explicit schema for a stream; `content` is never selected, so
#: Spark never reads the pixels.
FILE_SCHEMA = "path STRING, modificationTime TIMESTAMP, length LONG, content BINARY"
#: Names of FITS images, plain or compressed. Spark's file source already skips hidden
#: names (`.*`, `_*`); temporary names (`*.tmp`, `*.part`, `*_COPYING_`) never match.
FITS_GLOB = ("*.{fits,fit,fts,fz,FITS,FIT,FTS,FZ,fits.gz,fit.gz,fts.gz,fits.bz2,fit.bz2,fts.bz2,"
             "FITS.gz,FITS.bz2,fits.fz}")


def file_stream(spark, folder: str, *, max_files: int, latest_first: bool = False):
    """A streaming DataFrame of (path, length, modificationTime) for new FITS files below
    `folder` (recursive); at most `max_files` per micro-batch."""
    return (spark.readStream.format("binaryFile").schema(FILE_SCHEMA)
            .option("recursiveFileLookup", "true")
            .option("pathGlobFilter", FITS_GLOB)
            .option("maxFilesPerTrigger", str(max_files))
            .option("latestFirst", str(latest_first).lower())
            .load(folder)
            .select("path", "length", "modificationTime"))


def start_query(spark, settings: Settings, plan: Plan, folders: list[str], *, checkpoint: str,
                trigger: float | None = None, available_now: bool = False, ledger: Ledger | None = None,
                on_batch=None, name: str | None = None, requeue: str | None = None):
    """Start the query that feeds `BatchRunner`; returns (StreamingQuery, runner).

    `requeue`: a folder of manifests (streaming.arrivals) read as a second source."""
    Path(settings.sink).mkdir(parents=True, exist_ok=True)
    df = None
    for folder in folders:
        Path(folder).mkdir(parents=True, exist_ok=True)
        s = file_stream(spark, folder, max_files=settings.max_files_per_trigger)
        df = s if df is None else df.union(s)
    if requeue:
        from pyspark.sql import functions as F

        from streaming.arrivals import requeue_stream

        df = df.withColumn("force", F.lit(False)).unionByName(requeue_stream(spark, requeue))
    from streaming.batch import BatchRunner

    runner = BatchRunner(spark, plan, settings.sink, checkpoint,
                         files_per_task=settings.files_per_task, ledger=ledger, on_batch=on_batch)
    writer = df.writeStream.foreachBatch(runner).option("checkpointLocation", checkpoint)
    if name:
        writer = writer.queryName(name)
    writer = writer.trigger(availableNow=True) if available_now else writer.trigger(
        processingTime=f"{trigger if trigger is not None else settings.trigger} seconds")
    return writer.start(), runner


def _import_core(_items):
    import astropy.wcs  # noqa: F401  (footprints)
    import astropy_healpix  # noqa: F401

    import streaming.batch  # noqa: F401  (the extractor, the sink)

    yield 1


def warm_up(spark) -> None:
    """Start one Python worker per executor core and import the core there, so that the
    first micro-batch pays no interpreter start-up (workers are reused between jobs)."""
    sc = spark.sparkContext
    slots = max(1, sc.defaultParallelism)
    t0 = time.monotonic()
    sc.parallelize(range(slots), slots).mapPartitions(_import_core).count()
    log.debug("%d Python worker(s) warm in %.2f s", slots, time.monotonic() - t0)


def warm_up_in_background(spark) -> threading.Thread:
    """`warm_up` in a daemon thread, overlapped with the query's start. A session that
    stops first (an empty replay) cancels it: that is logged, not raised."""
    def run():
        try:
            warm_up(spark)
        except Exception as exc:  # noqa: BLE001 (a cancelled warm-up changes nothing)
            log.debug("warm-up not finished: %s", str(exc).splitlines()[0] if str(exc) else exc)

    thread = threading.Thread(target=run, name="sexstream-warm-up", daemon=True)
    thread.start()
    return thread


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


def stop_between_batches(query, runner: BatchRunner, timeout: float = 3600.0) -> None:
    """Stop `query` once the batch in progress (if any) is committed.

    An available-now query runs all its batches inside one trigger, so the runner's own
    `busy` flag tells "between batches", not the query's trigger status. Should Spark
    start the next batch in the instant before the stop, that batch is interrupted
    before its commit and simply replayed by the next run."""
    deadline = time.monotonic() + timeout
    while query.isActive and runner.busy.is_set() and time.monotonic() < deadline:
        time.sleep(0.02)
    query.stop()


def run_daemon(settings: Settings, *, dashboard: bool = False, ui: bool = False,
               stop: GracefulStop | None = None, ready=None) -> int:
    """`sexstream run`: watch settings.raw until SIGTERM/SIGINT; returns an exit code."""
    from sexstream import extractor
    from sexstream.ledger import Ledger
    from sexstream.schema import IMAGES, SOURCES
    from streaming.arrivals import ArrivalGate, requeue_source
    from streaming.batch import sink_table
    from streaming import jvmarchive
    from streaming.preflight import check_executors
    from streaming.session import FAST_START_JVM, build_session, end_jvm, stop_session

    plan = extractor.prepare(settings)  # unknown keys etc. fail before Spark starts
    stop = (stop or GracefulStop()).install()  # a SIGTERM during start-up stops cleanly too
    jvmarchive.hint_if_missing(FAST_START_JVM)
    spark = build_session(settings, "sexstream-run", ui=ui)
    stop.install()  # again: the SparkContext installed its own SIGINT handler
    board = gate = None
    try:
        report = check_executors(spark, settings)
        warm_up(spark)
        log.info("preflight: %s", report.summary() if hasattr(report, "summary") else report)
        ledger = Ledger.load(sink_table(settings.sink, IMAGES), plan.config_hash)
        if ledger.learn_sourced(sink_table(settings.sink, SOURCES), sink_table(settings.sink, IMAGES)):
            log.warning("%d image(s) have sources rows but no images row (a driver died between a "
                        "batch's two commits): they get their images row, their sources are not "
                        "committed again", len(ledger.sourced))
        requeue = requeue_source(settings.checkpoint)
        if requeue is not None:
            gate = ArrivalGate(settings.raw, requeue, sink_table(settings.sink, IMAGES),
                               quiet=settings.arrival_quiet, grace=settings.arrival_grace,
                               max_lines=settings.max_files_per_trigger).start()
        query, runner = start_query(spark, settings, plan, [settings.raw], checkpoint=settings.checkpoint,
                                    ledger=ledger, name="sexstream_run", requeue=requeue)
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
            stop_between_batches(query, runner)
        exc = query.exception()
        if exc is not None:
            log.error("the streaming query failed: %s", exc)
            return 1
        log.info("stopped cleanly after %d batch(es)", len(runner.history))
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


if __name__ == "__main__":  # spark-submit streaming/job.py run ...
    from sexstream.cli import main

    sys.exit(main(sys.argv[1:] if len(sys.argv) > 1 and not sys.argv[1].startswith("-")
                  else ["run", *sys.argv[1:]]))
