"""The foreachBatch adapter: hands a micro-batch's rows to the engine and runs the
engine's task step as Spark tasks.

`ForeachBatch` is the function a query calls with (DataFrame, batch_id): it reads the
rows (`streaming.sources.items_of`) and calls `Engine.run` with a `SparkRunner`, which
parallelizes the engine's task groups (one Spark partition each) and collects their
results. Everything else -- what to measure, the commits, the exactly-once protocol --
is the engine's (`sexstream.engine`).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

from sexstream.engine import Engine, Item, TaskFailed, TaskResult, TaskSpec, run_task
from streaming.sources import batch_items, items_of

log = logging.getLogger("sexstream")


class SparkRunner:
    """Runs the engine's task groups as the tasks of one Spark job."""

    def __init__(self, spark):
        self.spark = spark

    @property
    def parallelism(self) -> int:
        return self.spark.sparkContext.defaultParallelism

    def map(self, spec: TaskSpec, groups: list[list[Item]]) -> list[TaskResult]:
        sc = self.spark.sparkContext
        try:
            return (sc.parallelize(list(enumerate(groups)), len(groups))
                    .map(lambda group: run_task(spec, group[0], group[1]))
                    .collect())
        except Exception as exc:  # noqa: BLE001 (Py4JJavaError: a task's worker died or it raised)
            raise TaskFailed(str(exc)) from exc


class ForeachBatch:
    """The foreachBatch function of the query of `checkpoint`: callable as (df, batch_id).

    The engine's app_id is the query's id, persisted in the checkpoint (a new checkpoint,
    a new id). `busy` is set while a batch is in foreachBatch; `first_batch_at` and
    `first_image_at` (time.monotonic()) time the start-up of a replay."""

    def __init__(self, spark, engine: Engine, checkpoint: str):
        self.engine = engine
        self.runner = SparkRunner(spark)
        self.checkpoint = checkpoint
        self.busy = threading.Event()
        self.first_batch_at: float | None = None
        self.first_image_at: float | None = None

    def query_id(self) -> str:
        with open(Path(self.checkpoint) / "metadata") as fh:
            return json.loads(fh.readline())["id"]

    def __call__(self, df, batch_id: int) -> None:
        log.debug("batch %d: in foreachBatch", batch_id)
        if self.first_batch_at is None:
            self.first_batch_at = time.monotonic()
        self.busy.set()
        try:
            if self.engine.app_id is None:
                self.engine.app_id = self.query_id()
            items = batch_items(self.checkpoint, batch_id)
            stats = self.engine.run(batch_id, items_of(df) if items is None else items, self.runner)
            if stats is not None and stats.first_image is not None and self.first_image_at is None:
                self.first_image_at = time.monotonic() - max(time.time() - stats.first_image, 0.0)
        finally:
            self.busy.clear()
