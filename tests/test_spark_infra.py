"""The Spark shell's infrastructure on real Spark: the session, a standalone cluster on
127.0.0.1, and the executors' preflight."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import astropy
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from sexstream.binary import find_binary
from sexstream.settings import load
from spark_fixtures import cluster_spark, local_spark, spark_infra, standalone_cluster  # noqa: F401
from cluster import StandaloneCluster, is_running
from streaming.preflight import PreflightError, check_executors
from streaming.session import build_session, is_loopback_master, session_conf, ship_packages

pytestmark = pytest.mark.spark

MISSING_BINARY = "/nonexistent/bin/source-extractor"


def where_tasks_run(spark: SparkSession, tasks: int = 2) -> list[tuple[str, str, str, str]]:
    """(Python, astropy version, sexstream module file, working folder) of each task."""
    def where(_rows):  # nested, so cloudpickle ships it by value: executors lack this module
        import astropy as executor_astropy
        import sexstream

        yield (sys.executable, executor_astropy.__version__, sexstream.__file__, os.getcwd())

    return spark.sparkContext.parallelize(range(4 * tasks), tasks).mapPartitions(where).collect()


def test_loopback_masters_are_recognised() -> None:
    assert is_loopback_master("local[*]") and is_loopback_master("local")
    assert is_loopback_master("spark://127.0.0.1:7077")
    assert is_loopback_master("spark://localhost:7077,127.0.0.1:7078")
    assert not is_loopback_master("spark://sky-master.example.org:7077")
    assert not is_loopback_master("yarn") and not is_loopback_master("k8s://https://k:6443")
    remote = session_conf(load(master="spark://sky-master.example.org:7077"))
    assert "spark.driver.host" not in remote
    assert remote["spark.pyspark.python"] == sys.executable


class _ShippingContext:
    """What `ship_packages` uses of a SparkContext."""

    def __init__(self) -> None:
        self._python_includes: list[str] = []

    def addPyFile(self, path: str) -> None:  # noqa: N802 (pyspark's name)
        self._python_includes.append(Path(path).name)


def test_shipped_zips_are_named_by_driver_and_those_of_dead_drivers_swept(tmp_path, monkeypatch) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    dead = tmp_path / f"sexstream-ship-{gone}-old"  # a driver killed an hour ago
    young = tmp_path / f"sexstream-ship-{gone}-young"  # maybe another PID namespace's, live
    for d in (dead, young):
        d.mkdir()
    os.utime(dead, (0, 0))
    archive = ship_packages(_ShippingContext())
    assert archive.parent.name.startswith(f"sexstream-ship-{os.getpid()}-")
    assert not dead.exists() and young.exists()
    import zipfile

    names = zipfile.ZipFile(archive).namelist()
    assert "sexstream/extractor.py" in names and "streaming/foreach.py" in names
    assert "sexstream/conf/sexstream.toml" in names  # the packaged defaults travel too


def test_local_session_runs_a_python_udf_with_the_venv(local_spark: SparkSession) -> None:
    conf = local_spark.sparkContext.getConf()
    assert conf.get("spark.driver.host") == "127.0.0.1"
    assert local_spark.conf.get("spark.sql.session.timeZone") == "UTC"
    assert local_spark.sparkContext.uiWebUrl is None  # the UI is off unless asked for
    assert "log4j2.properties" in conf.get("spark.driver.extraJavaOptions")

    @F.udf(StringType())
    def executor_side(_):
        import astropy as executor_astropy

        return f"{sys.executable}|{executor_astropy.__version__}"

    rows = local_spark.range(4).select(executor_side("id").alias("where")).collect()
    assert {r.where for r in rows} == {f"{sys.executable}|{astropy.__version__}"}


def test_preflight_passes_locally(local_spark: SparkSession) -> None:
    settings = load(master="local[2]")
    report = check_executors(local_spark, settings)
    binary = find_binary(settings.binary)
    assert report.ok, report.summary()
    assert report.executor_ids == ("driver",)
    assert report.tasks == 2  # one per core of local[2]
    assert report.driver_version == binary.version == report.executors[0].version
    assert report.executors[0].binary == binary.path
    assert report.executors[0].python == sys.executable


def test_preflight_names_the_host_when_the_binary_is_missing(local_spark: SparkSession) -> None:
    settings = load(master="local[2]").replace(binary=MISSING_BINARY)
    with pytest.raises(PreflightError) as err:
        check_executors(local_spark, settings)
    message = str(err.value)
    assert f"executor driver on host {socket.gethostname()}" in message
    assert f"SExtractor binary '{MISSING_BINARY}' not found" in message


def test_preflight_reports_missing_filter_and_nnw_files(local_spark: SparkSession,
                                                       tmp_path: Path) -> None:
    config = tmp_path / "default.sex"
    config.write_text(load(master="local[2]").config_path.read_text())
    settings = load(master="local[2]").replace(config=str(config))
    report = check_executors(local_spark, settings, raise_on_failure=False)
    problems = report.executors[0].problems
    assert not report.ok
    assert problems == (f"config file {tmp_path / 'default.conv'} is missing",
                        f"config file {tmp_path / 'default.nnw'} is missing")


SYSTEM_PYTHON = Path("/usr/bin/python3")


def _system_python_lacks_sexstream() -> bool:
    """True if the machine's own Python runs pyspark's workers but has no sexstream."""
    if not SYSTEM_PYTHON.exists():
        return False
    probe = subprocess.run([str(SYSTEM_PYTHON), "-I", "-c", "import sys; print(sys.version_info[:2]);"
                            " import importlib.util as u; print(u.find_spec('sexstream'))"],
                           capture_output=True, text=True)
    return probe.stdout.split("\n")[:2] == [str(sys.version_info[:2]), "None"]


@pytest.mark.skipif(not _system_python_lacks_sexstream(),
                    reason=f"needs {SYSTEM_PYTHON} of this Python's version, without sexstream")
def test_preflight_names_an_executor_whose_python_lacks_sexstream(spark_infra) -> None:
    spark_infra.stop_session()
    settings = load(master="local[2]")
    # PYTHONSAFEPATH: the workers' folder is the repo here; keep it off their sys.path.
    spark = build_session(settings, "sexstream-tests-bare-python", extra_conf={
        "spark.pyspark.python": str(SYSTEM_PYTHON), "spark.executorEnv.PYTHONSAFEPATH": "1"})
    try:
        with pytest.raises(PreflightError) as err:
            check_executors(spark, settings)
    finally:
        spark.stop()
    line = str(err.value).splitlines()[1]
    assert line.strip().startswith(f"executor driver on host {socket.gethostname()}")
    assert line.endswith(": cannot import sexstream (ModuleNotFoundError: No module named "
                         "'sexstream'); SExtractor not checked")


def test_preflight_flags_executors_running_another_sextractor_version(spark_infra,
                                                                     tmp_path: Path) -> None:
    # A second SExtractor release cannot be installed here: a stand-in that only answers
    # --version comes first on the executors' PATH, the real one stays on the driver's.
    fake = tmp_path / "bin" / "source-extractor"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'Source Extractor version 2.19.5 (2013-12-14)'\n")
    fake.chmod(0o755)
    spark_infra.stop_session()
    settings = load(master="local[2]")
    spark = build_session(settings, "sexstream-tests-other-version", extra_conf={
        "spark.executorEnv.PATH": f"{fake.parent}:{os.environ['PATH']}"})
    try:
        report = check_executors(spark, settings, raise_on_failure=False)
    finally:
        spark.stop()
    driver_version = find_binary().version
    assert report.driver_version == driver_version != "2.19.5"
    assert report.executors[0].binary == str(fake)
    assert report.executors[0].problems == (
        f"SExtractor 2.19.5 differs from the driver's {driver_version}",)


def test_cluster_runs_tasks_on_both_workers(standalone_cluster: StandaloneCluster,
                                            cluster_spark: SparkSession) -> None:
    assert standalone_cluster.master_url.startswith("spark://127.0.0.1:")
    assert standalone_cluster.status()["aliveworkers"] == 2
    rows = where_tasks_run(cluster_spark)
    # An executor's working folder is <worker work dir>/<app id>/<executor id>.
    workers = {Path(cwd).parent.parent.name for *_, cwd in rows}
    assert workers == {"worker-0", "worker-1"}
    assert {(py, version) for py, version, _, _ in rows} == {(sys.executable, astropy.__version__)}
    # Executors import the packages the driver shipped, not the editable install.
    assert all("sexstream-packages.zip" in module for _, _, module, _ in rows)

    report = check_executors(cluster_spark, load(master=standalone_cluster.master_url),
                             min_executors=2)
    assert report.ok, report.summary()
    assert len(report.executor_ids) == 2  # distinct executors, one per worker
    assert report.hosts == (socket.gethostname(),)


def test_cluster_preflight_names_every_executor_without_the_binary(
        standalone_cluster: StandaloneCluster, cluster_spark: SparkSession) -> None:
    settings = load(master=standalone_cluster.master_url).replace(binary=MISSING_BINARY)
    with pytest.raises(PreflightError) as err:
        check_executors(cluster_spark, settings, min_executors=2)
    lines = str(err.value).splitlines()
    assert lines[0] == "SExtractor cannot run on 2 of 2 executor(s):"
    assert sorted(line.split(" on host ")[0].strip() for line in lines[1:]) == [
        "executor 0", "executor 1"]
    assert all(f"host {socket.gethostname()} (127.0.0.1): SExtractor binary "
               f"'{MISSING_BINARY}' not found" in line for line in lines[1:])


def test_killed_worker_and_stopped_cluster_leave_no_process(
        spark_infra, standalone_cluster: StandaloneCluster, cluster_spark: SparkSession) -> None:
    where_tasks_run(cluster_spark)
    started = set(standalone_cluster.running_pids())
    assert set(standalone_cluster.pids) < started  # executors and Python workers too

    victim = standalone_cluster.worker_pids[1]
    assert standalone_cluster.kill_worker(1) == victim
    assert not is_running(victim)
    assert standalone_cluster.alive_worker_ports() == {standalone_cluster.worker_daemons[0].port}
    # The lost executor's tasks run on the surviving worker.
    rows = where_tasks_run(cluster_spark)
    assert {Path(cwd).parent.parent.name for *_, cwd in rows} == {"worker-0"}

    index = standalone_cluster.start_worker()
    assert index == 2 and len(standalone_cluster.alive_worker_ports()) == 2
    started |= set(standalone_cluster.running_pids())

    spark_infra.stop_session()
    workdir = standalone_cluster.workdir
    standalone_cluster.stop()
    assert [pid for pid in started if is_running(pid)] == []
    assert standalone_cluster.running_pids() == []
    assert not workdir.exists()
