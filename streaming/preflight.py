"""Before the first image: can every executor run SExtractor the way the driver would?

`check_executors` runs one tiny Spark job with a task on every executor core. Each task
reports its host, whether `import sexstream` works there, which SExtractor binary
`sexstream.binary.find_binary` finds and its version, and whether the config files are
readable. A host that cannot extract is a broken installation, so it is an exception
(`PreflightError`) naming each executor, its host and what is wrong, raised before any
image is touched, rather than a night of images recorded as failed.
"""
from __future__ import annotations

import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator

from pyspark import cloudpickle
from pyspark.sql import SparkSession

from sexstream.binary import BinaryNotFoundError, find_binary
from sexstream.extractor import named_files
from sexstream.settings import Settings


class PreflightError(RuntimeError):
    """Some executor cannot run SExtractor as configured; the message names each one."""


@dataclass(frozen=True)
class ExecutorReport:
    """What one executor (or, in local mode, the driver's task slots) found.

    `host` is Spark's name for the executor's address, `hostname` the machine's own
    name, `problems` empty when the executor is fit to extract.
    """

    executor_id: str
    host: str
    hostname: str
    python: str
    binary: str | None
    version: str | None
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when nothing is wrong on this executor."""
        return not self.problems

    def describe(self) -> str:
        """One line: "executor 1 on host vm: problem; problem"."""
        where = f"executor {self.executor_id} on host {self.hostname}"
        if self.host and self.host != self.hostname:
            where += f" ({self.host})"
        return f"{where}: " + ("; ".join(self.problems) if self.problems else "ok")


@dataclass(frozen=True)
class PreflightReport:
    """The executors that answered, and the driver's own SExtractor for comparison."""

    driver_hostname: str
    driver_binary: str | None
    driver_version: str | None
    executors: tuple[ExecutorReport, ...]
    tasks: int
    seconds: float
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """True when every executor is fit to extract."""
        return all(e.ok for e in self.executors)

    @property
    def hosts(self) -> tuple[str, ...]:
        """The distinct hostnames of the executors, sorted."""
        return tuple(sorted({e.hostname for e in self.executors}))

    @property
    def executor_ids(self) -> tuple[str, ...]:
        """The ids of the executors that ran a task, sorted."""
        return tuple(sorted({e.executor_id for e in self.executors}))

    def summary(self) -> str:
        """A few human lines: one per executor, then any notes."""
        head = (f"preflight: {len(self.executors)} executor(s) on {len(self.hosts)} host(s), "
                f"{self.tasks} task(s) in {self.seconds:.1f} s; driver SExtractor "
                f"{self.driver_version or 'absent'}")
        return "\n".join([head, *("  " + e.describe() for e in self.executors),
                          *("  note: " + n for n in self.notes)])


#: Files every SExtractor run reads, as the config names them (the others only for
#: some selections: WEIGHT_IMAGE with a weight type, PSF_NAME for PSF keys, ...).
ALWAYS_READ = ("FILTER_NAME", "STARNNW_NAME")


def config_files(settings: Settings) -> tuple[str, ...]:
    """The files SExtractor reads besides the image: the config, the filter and neural
    network files it names (resolved against its folder, as `extractor.prepare` does),
    and every file a `--set` override names."""
    config = settings.config_path.resolve()
    named = named_files(config, settings.overrides, names=ALWAYS_READ, existing_only=False)
    return (str(config), *dict.fromkeys(path for _, path in named))


def _probe_partition(rows: Iterator[int], binary: str, files: tuple[str, ...]
                     ) -> Iterator[dict[str, Any]]:
    """Runs on an executor (pickled by value: it must work even where sexstream is absent)."""
    import os

    from pyspark import TaskContext

    for _ in rows:
        pass
    ctx = TaskContext.get()
    out: dict[str, Any] = {
        "task_id": ctx.taskAttemptId() if ctx else -1, "stage": ctx.stageId() if ctx else -1,
        "hostname": socket.gethostname(), "python": sys.executable, "problems": [],
        "binary": None, "version": None}
    try:
        from sexstream import binary as binary_mod
    except Exception as exc:  # noqa: BLE001 - any import failure is the finding
        out["problems"].append(f"cannot import sexstream ({type(exc).__name__}: {exc}); "
                               f"SExtractor not checked")
    else:
        try:
            found = binary_mod.find_binary(binary)
            out["binary"], out["version"] = found.path, found.version
        except Exception as exc:  # noqa: BLE001 - not found, not SExtractor, hung
            out["problems"].append(str(exc) or type(exc).__name__)
    for path in files:
        if not os.path.isfile(path):
            out["problems"].append(f"config file {path} is missing")
        elif not os.access(path, os.R_OK):
            out["problems"].append(f"config file {path} is not readable")
    yield out


def _executors(spark: SparkSession) -> list[tuple[str, str, int]]:
    """(id, host, cores) of the active executors; the driver only in local mode."""
    summaries = spark.sparkContext._jsc.sc().statusStore().executorList(True)
    found = []
    for i in range(summaries.size()):
        s = summaries.apply(i)
        found.append((s.id(), s.hostPort().rsplit(":", 1)[0], int(s.totalCores())))
    local = spark.sparkContext.master.startswith("local")
    return sorted(e for e in found if (e[0] == "driver") == local and e[2] > 0)


def wait_for_executors(spark: SparkSession, count: int = 1, timeout: float = 60.0,
                       settle: float = 0.0) -> list[tuple[str, str, int]]:
    """Wait until `count` executors are registered; return (id, host, cores) of each.

    A cluster's executors register a few seconds after the session starts, not all at
    once: with `settle` > 0, also wait until no new one has come for `settle` seconds.
    """
    deadline = time.monotonic() + timeout
    found = _executors(spark)
    changed = time.monotonic()
    while True:
        now = time.monotonic()
        if len(found) >= count and now - changed >= settle:
            return found
        if now > deadline:
            if len(found) >= count:
                return found
            raise PreflightError(f"only {len(found)} of {count} executor(s) registered within "
                                 f"{timeout:.0f} s (master {spark.sparkContext.master})")
        time.sleep(0.2)
        again = _executors(spark)
        if again != found:
            found, changed = again, time.monotonic()


def _task_placement(spark: SparkSession, stage: int, task_ids: set[int], timeout: float = 10.0
                    ) -> dict[int, tuple[str, str]]:
    """task id -> (executor id, host), from Spark's status store (filled asynchronously)."""
    store = spark.sparkContext._jsc.sc().statusStore()
    deadline = time.monotonic() + timeout
    placement: dict[int, tuple[str, str]] = {}
    while True:
        for attempt in range(4):
            try:
                tasks = store.taskList(stage, attempt, 1 << 20)
            except Exception:  # noqa: BLE001 - no such stage attempt
                break
            for i in range(tasks.size()):
                t = tasks.apply(i)
                placement[int(t.taskId())] = (str(t.executorId()), str(t.host()))
        if task_ids <= placement.keys() or time.monotonic() > deadline:
            return placement
        time.sleep(0.1)


def _run_probes(spark: SparkSession, tasks: int, binary: str, files: tuple[str, ...]
                ) -> list[dict[str, Any]]:
    """One job of `tasks` probe tasks; each result gains `executor_id` and `host`."""
    module = sys.modules[__name__]
    sc = spark.sparkContext
    sc.setJobDescription("sexstream preflight")
    cloudpickle.register_pickle_by_value(module)
    try:
        rdd = sc.parallelize(range(tasks * 4), tasks).mapPartitions(
            lambda rows: _probe_partition(rows, binary, files))
        results = rdd.collect()
    finally:
        cloudpickle.unregister_pickle_by_value(module)
        sc.setJobDescription(None)
    placement = _task_placement(spark, results[0]["stage"], {r["task_id"] for r in results})
    for r in results:
        r["executor_id"], r["host"] = placement.get(r["task_id"], ("?", "?"))
    return results


def check_executors(spark: SparkSession, settings: Settings, *, min_executors: int = 1,
                    timeout: float = 60.0, settle: float | None = None,
                    raise_on_failure: bool = True) -> PreflightReport:
    """Check that every executor can run SExtractor as `settings` asks.

    Waits for `min_executors` to register and, on a cluster, until no new executor has
    come for `settle` seconds (default 2; 0 in local mode, which has one executor, the
    driver). Then it runs one task per executor core (again, up to twice, if the
    scheduler left an executor without one). Every executor must import sexstream, find
    the binary (`settings.binary`, else source-extractor, sex or sextractor on PATH),
    read the config files, and run the driver's SExtractor version (or, if the driver
    has none, the version most executors run). Raises PreflightError naming each failing
    executor and host, unless `raise_on_failure` is false.
    """
    started = time.monotonic()
    if settle is None:
        settle = 0.0 if spark.sparkContext.master.startswith("local") else 2.0
    executors = wait_for_executors(spark, min_executors, timeout, settle)
    files = config_files(settings)
    try:
        driver = find_binary(settings.binary)
    except BinaryNotFoundError:
        driver = None
    tasks = max(1, sum(cores for _, _, cores in executors))
    results: list[dict[str, Any]] = []
    notes: list[str] = []
    for _ in range(3):
        results += _run_probes(spark, tasks, settings.binary, files)
        unseen = {e[0] for e in executors} - {r["executor_id"] for r in results}
        if not unseen:
            break
    else:
        notes.append(f"executor(s) {', '.join(sorted(unseen))} got no task in 3 tries")
    reference = driver.version if driver else None
    versions = Counter(r["version"] for r in results if r["version"])
    if reference is None and versions:
        reference = versions.most_common(1)[0][0]
        notes.append(f"the driver has no SExtractor; executors compared with {reference}")
    reports = _merge(results, reference, driver is not None)
    report = PreflightReport(driver_hostname=socket.gethostname(),
                             driver_binary=driver.path if driver else None,
                             driver_version=driver.version if driver else None,
                             executors=reports, tasks=len(results),
                             seconds=time.monotonic() - started, notes=tuple(notes))
    if raise_on_failure and not report.ok:
        bad = [e for e in report.executors if not e.ok]
        raise PreflightError(f"SExtractor cannot run on {len(bad)} of {len(report.executors)} "
                             "executor(s):\n" + "\n".join("  " + e.describe() for e in bad))
    return report


def _merge(results: list[dict[str, Any]], reference: str | None, driver_has_it: bool
           ) -> tuple[ExecutorReport, ...]:
    """One report per executor from its tasks' results (problems de-duplicated)."""
    by_executor: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_executor.setdefault(r["executor_id"], []).append(r)
    reports = []
    for executor_id, rs in sorted(by_executor.items(), key=lambda kv: _id_order(kv[0])):
        problems = list(dict.fromkeys(p for r in rs for p in r["problems"]))
        version = next((r["version"] for r in rs if r["version"]), None)
        if version and reference and version != reference:
            whose = "the driver's" if driver_has_it else "most executors'"
            problems.append(f"SExtractor {version} differs from {whose} {reference}")
        first = rs[0]
        reports.append(ExecutorReport(executor_id=executor_id, host=first["host"],
                                      hostname=first["hostname"], python=first["python"],
                                      binary=first["binary"], version=version,
                                      problems=tuple(problems)))
    return tuple(reports)


def _id_order(executor_id: str) -> tuple[int, str]:
    return (int(executor_id), "") if executor_id.isdigit() else (1 << 30, executor_id)
