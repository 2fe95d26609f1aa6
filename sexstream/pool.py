"""Running the engine's tasks in a pool of local worker processes, without Spark.

`PoolRunner` is a `sexstream.engine.TaskRunner`: tests drive the engine's exactly-once
bookkeeping, arrivals and crash recovery with it (no JVM), and a worker that dies
mid-task shows the engine exactly what a lost Spark worker shows: `TaskFailed`.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from sexstream.engine import Item, TaskFailed, TaskResult, TaskSpec, run_task


class PoolRunner:
    """`workers` forked processes (default: one per core), made again after a death."""

    def __init__(self, workers: int | None = None):
        self.parallelism = max(1, workers or os.cpu_count() or 1)
        self._pool: ProcessPoolExecutor | None = None

    def pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.parallelism, mp_context=multiprocessing.get_context("fork"))
        return self._pool

    def worker_pids(self) -> list[int]:
        """The pids of the pool's live worker processes."""
        return list((self._pool._processes or {}).keys()) if self._pool is not None else []

    def map(self, spec: TaskSpec, groups: list[list[Item]]) -> list[TaskResult]:
        futures = [self.pool().submit(run_task, spec, i, g) for i, g in enumerate(groups)]
        try:
            return [f.result() for f in futures]
        except BrokenProcessPool as exc:
            self.close()
            raise TaskFailed(f"a worker process died: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 (a task that raised fails its batch)
            raise TaskFailed(f"a task raised {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "PoolRunner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
