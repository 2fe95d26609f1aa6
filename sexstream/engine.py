"""The ingest engine: a micro-batch of raw paths -> one idempotent commit per table.

Three steps with plain data between them, the same under Spark, a local process pool
or a plain loop:

1. plan (driver) -- `Engine.plan(batch_id, items)` -> `BatchPlan`: which tables still
   miss the batch (a batch replayed after a crash is skipped where it is committed
   already), what the sink's verdict index says of these paths, and what every task
   needs (`TaskSpec`: the plan, the tables' schemas, the bytes the sink holds);
2. run a task (executors) -- `run_task(spec, index, items)` -> `TaskResult`: every image
   measured (`sexstream.extractor.extract`), one Parquet part per table written straight
   into the table's folder, typed outcomes returned;
3. commit (driver) -- `Engine.commit(plan, results)` -> `BatchStats`: the sources parts
   in one commit, then the images parts in another (the images row is the image's
   verdict, so it comes last), each carrying Transaction(app_id, batch_id). A path
   measured again (new bytes, or forced) supersedes its older rows in the same commits:
   its older sources rows are removed, its older verdicts marked not current. Between
   the two commits the images rows wait in an intent file (`Sink.pending`), so a driver
   that dies there never makes the sources be committed twice.

`Engine.run` does the three with a `TaskRunner` (Spark, a process pool, this process).
When a task fails because its worker died in the middle of an image, the engine measures
the batch again with that image in a task of its own, and quarantines an image that made
its worker die twice (`sexstream.inflight`): one poison file never stops the stream.
`Hooks` are called at every phase; fault injection and metrics plug in there.
"""
from __future__ import annotations

import heapq
import json
import logging
import math
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Iterable, Protocol, Sequence

import pyarrow as pa

import pyarrow.parquet as pq

from sexstream import artifacts, extractor, inflight, parts, sandbox
from sexstream.extractor import Plan
from sexstream.index import mtime_us
from sexstream.parts import PartFile
from sexstream.schema import IMAGES, SOURCES, TABLES, images_table, stamp
from sexstream.sink import Sink
from sexstream.tables import table_path
from sexstream.transaction import Replace

log = logging.getLogger("sexstream")

#: Phases of a batch, in order, as `Hooks.phase` receives them.
PHASES = ("planned", "parts_written", "sources_committed", "images_committed")
#: Tasks per executor core when `files_per_task` is 0 (auto): each task costs Spark
#: ~80 ms of a core; two per core still balance the cores when images differ in size.
TASKS_PER_CORE = 2
#: Verdicts that end an image's processing for its bytes and config: an "incomplete"
#: file is measured again once its bytes change, never again for the same bytes.
FINAL = ("ok", "failed", "incomplete")
#: The reason of a file journaled while its writer still holds it open.
STALLED = ("still being written: its writer has kept it open past the stall bound "
           "(arrival_stall) without closing it; measured once it is closed")


@dataclass(frozen=True)
class Item:
    """One raw path of a micro-batch, as discovered: size (bytes) and mtime when listed;
    `force` measures it even if the sink holds its bytes (an explicit retry); `stalled`
    records it "incomplete" without measuring it (its writer still holds it open)."""

    path: str
    length: int | None = None
    mtime: datetime | None = None
    force: bool = False
    stalled: bool = False


@dataclass(frozen=True)
class TaskSpec:
    """What every task of one batch needs: plain data, pickled once per task."""

    plan: Plan
    sink: str
    batch_id: int
    ingest_time: datetime
    tables: tuple[str, ...]  # the tables still missing this batch
    schemas: dict = field(default_factory=dict)  # table -> serialized Arrow schema or None
    known: dict = field(default_factory=dict)  # path -> the bytes its verdict judged (Verdict.key)
    inflight: str | None = None  # the batch's in-flight marker folder


@dataclass(frozen=True)
class ImageOutcome:
    """What became of one image: status ("ok", "failed", "incomplete" or "skipped"),
    its number of sources, the reason, and when its measurement began (epoch s)."""

    path: str
    status: str
    n_sources: int = 0
    reason: str | None = None
    started: float | None = None


@dataclass(frozen=True)
class TaskResult:
    """One task's outcomes and the part files it wrote, as (table, part) pairs."""

    index: int
    outcomes: tuple[ImageOutcome, ...]
    parts: tuple[tuple[str, PartFile], ...] = ()


class TaskFailed(RuntimeError):
    """A task did not return: its worker died, or it raised. The batch's parts are
    incomplete; nothing of it is committed."""


class TaskRunner(Protocol):
    """Runs the tasks of a batch somewhere and returns every task's result."""

    parallelism: int

    def map(self, spec: TaskSpec, groups: list[list[Item]]) -> list[TaskResult]:
        """`run_task(spec, i, groups[i])` for every group; TaskFailed if one failed."""


@dataclass
class BatchStats:
    """What one batch did, as data (`to_dict`) and as the daemon's log line (`line`)."""

    batch_id: int
    files: int = 0
    ok: int = 0
    failed: int = 0
    incomplete: int = 0
    skipped: int = 0
    sources: int = 0
    seconds: float = 0.0
    lag_s: float | None = None  # from the oldest file's mtime to the commit
    first_image: float | None = None  # epoch seconds when its first image began
    committed_at: float | None = None  # epoch seconds when its images commit returned
    plan_s: float = 0.0  # seconds planning (driver)
    tasks_s: float = 0.0  # seconds measuring (the tasks, as the driver waited for them)
    commit_s: float = 0.0  # seconds committing (driver)
    committed: tuple[str, ...] = ()
    isolated: int = 0  # re-runs after a worker died mid-image
    failures: list = field(default_factory=list)  # (path, status, reason)
    arrivals: tuple[float, ...] = ()  # the measured files' mtimes as journaled (epoch s), for latency

    def line(self) -> str:
        lag = f"{self.lag_s:.1f} s" if self.lag_s is not None else "-"
        extra = f", {self.incomplete} incomplete" if self.incomplete else ""
        extra += f", {self.skipped} skipped" if self.skipped else ""
        return (f"batch {self.batch_id}: {self.files} files, {self.ok} ok, {self.failed} failed{extra}, "
                f"{self.sources} sources, {self.seconds:.2f} s, lag {lag}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["committed"] = list(self.committed)
        d["failures"] = [{"path": p, "status": s, "reason": r} for p, s, r in self.failures]
        del d["arrivals"]  # one number per file: `lag_s` summarizes them
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False)


class Hooks:
    """Called by the engine as batches go; subclass and override what you need.

    `phase(name, batch_id)` runs at each of `PHASES` (on the driver, in order);
    `batch(stats)` once a batch is committed."""

    def phase(self, name: str, batch_id: int) -> None:
        pass

    def batch(self, stats: BatchStats) -> None:
        pass


@dataclass(frozen=True)
class BatchPlan:
    """A planned batch: its items, the spec its tasks get, and the sink's verdicts of
    its paths under this config (what a new measurement supersedes)."""

    batch_id: int
    items: tuple[Item, ...]
    spec: TaskSpec
    prior: dict = field(default_factory=dict)  # path -> Verdict


# --- executor side -------------------------------------------------------------------

def stat_key(path: str) -> str:
    """The identity of a file whose bytes could not be read (unreadable, vanished, a
    broken symlink): its size and mtime, or "stat:-" when it cannot even be stat'ed,
    as `sexstream.index.Verdict.key` spells it."""
    try:
        st = os.stat(path)
    except OSError:
        return "stat:-"
    return f"stat:{st.st_size}:{mtime_us(st.st_mtime)}"


def _already_measured(path: str, known: str) -> bool:
    try:
        return stat_key(path) == known or extractor.content_hash(path) == known
    except OSError:
        return False


def _run_item(spec: TaskSpec, item: Item, markers: inflight.Inflight | None, worker: sandbox.Worker,
              records: list, sources: list, outcomes: list) -> None:
    """One item of a task: skipped, recorded unmeasured, or measured by `worker`'s child;
    its record, sources and outcome appended to the task's lists."""
    known = spec.known.get(item.path)
    if known and _already_measured(item.path, known):
        outcomes.append(ImageOutcome(item.path, "skipped", 0, "already measured with this config"))
        return
    deaths = markers.deaths(item.path) if markers is not None else 0
    if item.stalled:
        result = extractor.unmeasured(item.path, spec.plan, "incomplete", STALLED)
    elif deaths >= inflight.QUARANTINE_DEATHS:
        result = extractor.unmeasured(item.path, spec.plan, "failed",
                                      f"quarantined: the worker measuring it died {deaths} times")
    else:
        marker = markers.begin(item.path) if markers is not None else None
        result = extractor.extract(item.path, spec.plan, worker=worker)
        if marker is not None:
            markers.end(marker)
    if result.artifacts:  # the image's PSF model, kept in the sink; its row names it
        result.record.update(artifacts.store(spec.sink, result.record, result.artifacts))
    r = result.record
    records.append(r)
    if result.sources is not None and result.sources.num_rows:
        sources.append(stamp(result.sources, spec.batch_id, spec.ingest_time))
    outcomes.append(ImageOutcome(item.path, r["status"], r["n_sources"], r["reason"],
                                 r["started"].timestamp()))


def run_task(spec: TaskSpec, index: int, items: Iterable[Item]) -> TaskResult:
    """Measure `items`, write one Parquet part per table still missing the batch, and
    return the outcomes and parts. Never raises for an image (see `extract`)."""
    schemas = {t: (pa.ipc.read_schema(pa.py_buffer(b)) if b else None) for t, b in spec.schemas.items()}
    markers = inflight.Inflight(spec.inflight) if spec.inflight else None
    records, sources, outcomes = [], [], []
    with sandbox.Worker() as worker:  # one measuring child for the task's images
        for item in items:
            _run_item(spec, item, markers, worker, records, sources, outcomes)
    written = []

    tag = f"t{index:05d}"
    if SOURCES in spec.tables and sources:
        table = parts.concat(sources, schemas.get(SOURCES))
        written.append((SOURCES, parts.write_part(table_path(spec.sink, SOURCES), table,
                                                  batch_id=spec.batch_id, task_tag=tag)))
    if IMAGES in spec.tables and records:
        table = parts.conform(images_table(records, spec.plan.fitskeys, spec.batch_id, spec.ingest_time),
                              schemas.get(IMAGES))
        written.append((IMAGES, parts.write_part(table_path(spec.sink, IMAGES), table,
                                                 batch_id=spec.batch_id, task_tag=tag)))
    return TaskResult(index, tuple(outcomes), tuple((t, p) for t, p in written if p is not None))


def _rows(table_dir: str, files: list[PartFile]) -> pa.Table:
    """The rows of `files`, parts written into `table_dir`, as one table."""
    tables = [pq.read_table(os.path.join(table_dir, f.path)) for f in files]
    return parts.concat(tables) if tables else pa.table({})


class SerialRunner:
    """Runs every task in this process, one after the other (tests, tiny runs)."""

    parallelism = 1

    def map(self, spec: TaskSpec, groups: list[list[Item]]) -> list[TaskResult]:
        return [run_task(spec, i, g) for i, g in enumerate(groups)]


# --- driver side ---------------------------------------------------------------------

@dataclass
class Totals:
    """Running totals over the batches an engine committed (constant size)."""

    batches: int = 0
    ok: int = 0
    failed: int = 0
    incomplete: int = 0
    skipped: int = 0
    sources: int = 0

    def add(self, stats: BatchStats) -> None:
        self.batches += 1
        for name in ("ok", "failed", "incomplete", "skipped", "sources"):
            setattr(self, name, getattr(self, name) + getattr(stats, name))


class Engine:
    """Plans, runs and commits the batches of one app (a streaming query: `app_id` is its
    id, persisted in its checkpoint) into `sink` with `plan`.

    `hooks`, and `files_per_task` (0: auto, up to `TASKS_PER_CORE` tasks per core, of
    about equal bytes). The engine recovers the images commits that a driver which died
    between a batch's two commits left pending (`Sink.recover`) before its first batch."""

    def __init__(self, sink: Sink, plan: Plan, *, app_id: str | None = None,
                 hooks: Sequence[Hooks] = (), files_per_task: int = 0):
        self.sink = sink
        self.extraction_plan = plan
        self.app_id = app_id
        self.hooks = list(hooks)
        self.files_per_task = max(0, int(files_per_task))
        self.run_id = uuid.uuid4().hex[:12]  # this driver process, for in-flight markers
        self.totals = Totals()
        self.last: BatchStats | None = None
        self._started = False

    def start(self) -> "Engine":
        """Recover pending images commits and bring the verdict index up to date (done
        before the first batch anyway)."""
        if not self._started:
            self.sink.recover()
            self.sink.sync()
            self._started = True
        return self

    def _phase(self, name: str, batch_id: int) -> None:
        for hook in self.hooks:
            hook.phase(name, batch_id)

    def _require_app(self) -> str:
        if not self.app_id:
            raise RuntimeError("the engine has no app_id (the streaming query's id) yet")
        if not self._started:
            self.start()
            inflight.sweep(self.sink.root, self.app_id, self.run_id)
        return self.app_id

    def slices(self, n: int, parallelism: int) -> int:
        """Tasks for a batch of `n` images: `files_per_task` images each, or with 0
        (auto) up to `TASKS_PER_CORE` tasks per core."""
        if self.files_per_task:
            return max(1, math.ceil(n / self.files_per_task))
        return max(1, min(n, TASKS_PER_CORE * max(1, parallelism)))

    def groups(self, items: Sequence[Item], parallelism: int, alone: set[str] = frozenset()) -> list[list[Item]]:
        """`items` cut into task-sized groups of about equal bytes (the largest first, each
        to the lightest group: SExtractor's time grows with the pixels), the heaviest group
        first; each path of `alone` gets a group of its own."""
        solo = [[i] for i in items if i.path in alone]
        rest = [i for i in items if i.path not in alone]
        if not rest:
            return solo
        k = self.slices(len(rest), parallelism)
        if self.files_per_task:  # a fixed count per task, as asked
            size = math.ceil(len(rest) / k)
            return solo + [rest[j:j + size] for j in range(0, len(rest), size)]
        loads = [(0, g) for g in range(k)]  # (bytes, group) as a heap
        out: list[list[Item]] = [[] for _ in range(k)]
        for item in sorted(rest, key=lambda i: -(i.length or 0)):
            load, g = heapq.heappop(loads)
            out[g].append(item)
            heapq.heappush(loads, (load + max(item.length or 0, 1), g))
        weight = {g: load for load, g in loads}
        return solo + [out[g] for g in sorted(range(k), key=lambda g: -weight[g]) if out[g]]

    def plan(self, batch_id: int, items: Sequence[Item]) -> BatchPlan | None:
        """The batch's plan; None when there is nothing to do (no item, or every table
        already holds the batch)."""
        app_id = self._require_app()
        pending = tuple(t for t in TABLES if not self.sink.holds(t, app_id, batch_id))
        if not pending:
            log.info("batch %d: already committed to both tables (replayed after a restart); skipped",
                     batch_id)
            return None
        if not items:
            return None
        prior = self.sink.verdicts([i.path for i in items], self.extraction_plan.config_hash)
        spec = TaskSpec(
            plan=self.extraction_plan, sink=self.sink.root, batch_id=batch_id,
            ingest_time=datetime.now(timezone.utc), tables=pending,
            schemas={t: self.sink.schema_bytes(t) for t in pending},
            known={i.path: prior[i.path].key for i in items
                   if not i.force and not i.stalled and i.path in prior and prior[i.path].status in FINAL},
            inflight=str(inflight.Inflight.of(self.sink.root, app_id, batch_id, self.run_id).folder))
        self._phase("planned", batch_id)
        return BatchPlan(batch_id, tuple(items), spec, prior)

    def measure(self, bplan: BatchPlan, runner: TaskRunner) -> tuple[list[TaskResult], int]:
        """Run the batch's tasks; after a worker died mid-image, again, with every image
        that has an in-flight marker in a task of its own. Returns the results and the
        number of re-runs. Raises TaskFailed when a failure is not an image's doing."""
        markers = inflight.Inflight(bplan.spec.inflight)
        alone: set[str] = set()
        seen: dict[str, int] = {}
        for rerun in range(2 * len(bplan.items) + 1):
            groups = self.groups(bplan.items, runner.parallelism, alone)
            try:
                return runner.map(bplan.spec, groups), rerun
            except TaskFailed as exc:
                deaths = markers.suspects()
                new = {p for p, n in deaths.items() if n > seen.get(p, 0)}
                if not new:
                    raise
                log.warning("batch %d: a worker died while measuring %s (%s); measuring the batch "
                            "again, %s in a task of its own", bplan.batch_id, ", ".join(sorted(new)),
                            str(exc).splitlines()[0][:200] if str(exc) else "task failed",
                            "it" if len(new) == 1 else "each")
                seen = deaths
                alone |= set(deaths)
        raise TaskFailed(f"batch {bplan.batch_id}: workers kept dying")

    def commit(self, bplan: BatchPlan, results: list[TaskResult], *, started: float | None = None,
               isolated: int = 0, timings: tuple[float, float] = (0.0, 0.0)) -> BatchStats:
        """Commit the batch's parts (sources, then images) and return its stats.
        `timings`: the seconds spent planning and measuring, for the stats."""
        t0 = started if started is not None else time.time()
        t_commit = time.time()
        app_id = self._require_app()
        batch_id = bplan.batch_id
        stats = BatchStats(batch_id, files=len(bplan.items), isolated=isolated, plan_s=timings[0],
                           tasks_s=timings[1])
        by_table: dict[str, list[PartFile]] = {t: [] for t in TABLES}
        for result in results:
            for table, part in result.parts:
                by_table[table].append(part)
            for o in result.outcomes:
                if o.started is not None:
                    stats.first_image = min(o.started, stats.first_image or o.started)
                stats.sources += o.n_sources
                if o.status in ("ok", "skipped", "failed", "incomplete"):
                    setattr(stats, o.status, getattr(stats, o.status) + 1)
                if o.status in ("failed", "incomplete"):
                    stats.failures.append((o.path, o.status, o.reason))
        self._phase("parts_written", batch_id)
        config = self.extraction_plan.config_hash
        measured = {o.path for r in results for o in r.outcomes if o.status != "skipped"}
        again = frozenset(p for p in measured if p in bplan.prior)
        with_rows = frozenset(p for p in again if bplan.prior[p].n_sources > 0)
        replaces = {SOURCES: Replace(with_rows, config, "delete") if with_rows else None,
                    IMAGES: Replace(again, config, "uncurrent") if again else None}
        committed = []
        if IMAGES in bplan.spec.tables and SOURCES in bplan.spec.tables:
            self.sink.pending(app_id, batch_id, _rows(self.sink.images, by_table[IMAGES]), replaces[IMAGES])
        for t in (SOURCES, IMAGES):  # images last: its row is the image's verdict
            if t in bplan.spec.tables and self.sink.commit(t, by_table[t], app_id=app_id, batch_id=batch_id,
                                                           replace=replaces[t]) is not None:
                committed.append(t)
            self._phase(f"{t}_committed", batch_id)
        stats.committed_at = time.time()
        stats.commit_s = stats.committed_at - t_commit
        self.sink.done(app_id, batch_id)
        inflight.Inflight(bplan.spec.inflight).clear()
        self.sink.sync()
        now = time.time()
        stats.committed = tuple(committed)
        stats.seconds = now - t0
        mtimes = [i.mtime.timestamp() for i in bplan.items if i.mtime is not None]
        stats.lag_s = now - min(mtimes) if mtimes else None
        stats.arrivals = tuple(i.mtime.timestamp() for i in bplan.items if i.mtime is not None and i.path in measured)
        self.totals.add(stats)
        self.last = stats
        log.info(stats.line(), extra={"event": "batch", "data": stats})  # `data`: for sexstream.logformat's JSON
        log.debug("batch %d: plan %.3f s, tasks %.3f s, commit %.3f s", batch_id, stats.plan_s, stats.tasks_s,
                  stats.commit_s)
        for path, status, reason in stats.failures:
            log.info("  %s %s: %s", status, path, reason, extra={"event": "failure", "data": {
                "batch_id": batch_id, "path": path, "status": status, "reason": reason}})
        for hook in self.hooks:
            hook.batch(stats)
        return stats

    def run(self, batch_id: int, items: Sequence[Item], runner: TaskRunner) -> BatchStats | None:
        """Plan, measure and commit one batch; None when there was nothing to do."""
        t0 = time.time()
        bplan = self.plan(batch_id, items)
        if bplan is None:
            return None
        t1 = time.time()
        results, reruns = self.measure(bplan, runner)
        return self.commit(bplan, results, started=t0, isolated=reruns, timings=(t1 - t0, time.time() - t1))
