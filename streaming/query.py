"""The Structured Streaming query: the arrivals journal's stream into the engine, and
the executors' warm-up."""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sexstream.engine import Engine
    from sexstream.settings import Settings

log = logging.getLogger("sexstream")


def start_query(spark, settings: Settings, engine: Engine, *, checkpoint: str, trigger: float | None = None,
                available_now: bool = False, name: str | None = None):
    """Start the query that feeds `engine` from the arrivals journal of `checkpoint`;
    returns (StreamingQuery, ForeachBatch)."""
    from streaming.foreach import ForeachBatch
    from streaming.sources import raw_stream

    Path(settings.sink).mkdir(parents=True, exist_ok=True)
    df = raw_stream(spark, checkpoint, max_files=settings.max_files_per_trigger)
    adapter = ForeachBatch(spark, engine, checkpoint)
    writer = df.writeStream.foreachBatch(adapter).option("checkpointLocation", checkpoint)
    if name:
        writer = writer.queryName(name)
    writer = writer.trigger(availableNow=True) if available_now else writer.trigger(
        processingTime=f"{trigger if trigger is not None else settings.trigger} seconds")
    return writer.start(), adapter


def _import_core(_items):
    import sexstream.engine  # noqa: F401  (the extractor, the parts)
    from sexstream import extractor

    extractor.preload()
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
