"""Building the SparkSession: embedded `local[*]` by default, or any cluster manager.

`build_session` applies the known traps of running Spark here in one place: executors run this
very Python (`sys.executable`), Spark binds to loopback when the cluster is on this
machine, the driver JVM starts from its class archive when one was recorded
(`streaming.jvmarchive`), the UI is off unless asked for, log4j speaks at WARN through
conf/log4j2.properties, and, on a cluster, the `sexstream` and `streaming` packages are
shipped to the executors as a zip (`SparkContext.addPyFile`).
"""
from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
import zipfile
from pathlib import Path
from typing import Mapping

from pyspark import SparkContext
from pyspark.sql import SparkSession

import sexstream
import sexstream.conf
import streaming
from sexstream.settings import Settings, conf_file
from streaming import jvmarchive
from streaming.jvmarchive import FAST_START_JVM

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]", "ip6-localhost"}
#: The packages every executor must import, shipped when the master is not local.
SHIPPED_PACKAGES = (sexstream, sexstream.conf, streaming)
#: The temp folders of shipped zips: `sexstream-ship-<driver pid>-*`.
SHIP_FOLDER = re.compile(r"^sexstream-ship-(\d+)-")

#: Small-machine defaults; `extra_conf` overrides any of them.
DEFAULT_CONF: dict[str, str] = {
    "spark.sql.shuffle.partitions": "4",
    "spark.sql.sources.parallelPartitionDiscovery.threshold": "100000",
    "spark.sql.session.timeZone": "UTC",
    "spark.python.worker.reuse": "true",
    "spark.ui.showConsoleProgress": "false",
    # local files without Hadoop's .crc side files: the checkpoint's offset and commit logs,
    # on the critical path of every micro-batch, are written in half the time (README,
    # Performance); other file systems are not affected
    "spark.hadoop.fs.file.impl": "org.apache.hadoop.fs.RawLocalFileSystem",
    "spark.hadoop.fs.AbstractFileSystem.file.impl": "org.apache.hadoop.fs.local.RawLocalFs",
}


def is_local_master(master: str) -> bool:
    """True for Spark's in-process masters: local, local[N], local[*], local[N,F]."""
    return master == "local" or master.startswith("local[")


def is_loopback_master(master: str) -> bool:
    """True when every process of the cluster runs on this machine's loopback.

    That is a local master, a local-cluster[...] master, or a spark:// URL (HA lists
    included) whose hosts are all loopback names.
    """
    if is_local_master(master) or master.startswith("local-cluster["):
        return True
    if not master.startswith("spark://"):
        return False
    hosts = []
    for hostport in master[len("spark://"):].split(","):
        match = re.fullmatch(r"(\[[^\]]+\]|[^:]+)(?::\d+)?", hostport.strip())
        hosts.append(match.group(1) if match else hostport)
    return all(h in _LOOPBACK_HOSTS for h in hosts)


def log4j_files(log_format: str = "text") -> str:
    """The log4j2 configuration of the JVMs, as log4j2.configurationFile takes it: our
    log4j2.properties, with log4j2-json.properties layered over it for "json"."""
    files = ["log4j2.properties"] + (["log4j2-json.properties"] if log_format == "json" else [])
    return ",".join(conf_file(name).as_uri() for name in files)


def session_conf(settings: Settings, app_name: str = "sexstream", *, ui: bool = False,
                 extra_conf: Mapping[str, str] | None = None) -> dict[str, str]:
    """The Spark configuration `build_session` uses, as plain strings (for inspection).

    The driver JVM starts from the class archive of `streaming.jvmarchive` when there
    is one for this JVM and Spark."""
    master = settings.master or "local[*]"
    python = sys.executable
    log4j = f"-Dlog4j2.configurationFile={log4j_files(settings.log_format)} {FAST_START_JVM}"
    driver_jvm = f"{log4j} {jvmarchive.java_options(FAST_START_JVM)}".strip()
    conf = dict(DEFAULT_CONF)
    conf.update({
        "spark.master": master,
        "spark.app.name": app_name,
        "spark.pyspark.python": python,
        "spark.pyspark.driver.python": python,
        "spark.ui.enabled": "true" if ui else "false",
        "spark.driver.extraJavaOptions": driver_jvm,
    })
    if is_loopback_master(master):
        conf["spark.driver.host"] = LOOPBACK
        conf["spark.driver.bindAddress"] = LOOPBACK
        # The executors of a cluster on this machine can read the same file.
        conf["spark.executor.extraJavaOptions"] = log4j
        conf["spark.executorEnv.SPARK_LOCAL_IP"] = LOOPBACK
    conf["spark.executorEnv.PYSPARK_PYTHON"] = python
    for key, value in (extra_conf or {}).items():
        if key.endswith("extraJavaOptions") and key in conf and "log4j2.configurationFile" not in value:
            conf[key] = f"{conf[key]} {value}"
        else:
            conf[key] = str(value)
    return conf


def build_session(settings: Settings, app_name: str = "sexstream", *, ui: bool = False,
                  extra_conf: Mapping[str, str] | None = None) -> SparkSession:
    """Start (or join) the SparkSession for `settings.master`.

    The JVM inherits this process's environment, so PYSPARK_PYTHON,
    PYSPARK_DRIVER_PYTHON (and SPARK_LOCAL_IP for a cluster on this machine) are set in
    `os.environ` before it starts; a loopback SPARK_LOCAL_IP is removed for a remote
    master, whose executors could not reach a driver bound to 127.0.0.1. A SparkContext
    already running with another master is an error: stop it first. Returns the
    session; `session.stop()` ends it.
    """
    conf = session_conf(settings, app_name, ui=ui, extra_conf=extra_conf)
    master = conf["spark.master"]
    active = SparkContext._active_spark_context
    if active is not None and active.master != master:
        raise RuntimeError(f"a SparkContext with master {active.master!r} is running; stop it "
                           f"before building one for {master!r}")
    os.environ["PYSPARK_PYTHON"] = conf["spark.pyspark.python"]
    os.environ["PYSPARK_DRIVER_PYTHON"] = conf["spark.pyspark.driver.python"]
    if is_loopback_master(master):
        os.environ["SPARK_LOCAL_IP"] = LOOPBACK
    elif os.environ.get("SPARK_LOCAL_IP") in _LOOPBACK_HOSTS:
        log.warning("master %s is remote: ignoring SPARK_LOCAL_IP=%s", master,
                    os.environ.pop("SPARK_LOCAL_IP"))
    # pyspark 4.x warns on every session that pandas 3 is not fully supported yet.
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas",
                            category=FutureWarning)
    spark = SparkSession.builder.config(map=conf).getOrCreate()
    # under spark-submit the JVM started before our log4j2 file was named: quiet it here
    spark.sparkContext.setLogLevel("WARN")
    if not is_local_master(master):
        ship_packages(spark.sparkContext)
    return spark


class BackgroundSession:
    """`build_session` in a daemon thread: the JVM boots on one core while the
    driver prepares its run on the other. `result()` waits for the session; `abandon()`
    (an error before it was needed) stops it as soon as it is up.

    Built outside the main thread, the SparkContext leaves SIGINT to the caller's handler."""

    def __init__(self, settings: Settings, app_name: str = "sexstream", **kwargs):
        self._args = (settings, app_name)
        self._kwargs = kwargs
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._spark: SparkSession | None = None
        self._error: BaseException | None = None
        self._abandoned = False
        self.seconds: float | None = None  # how long the build took

    def start(self) -> "BackgroundSession":
        jvmarchive.hint_if_missing(FAST_START_JVM)
        threading.Thread(target=self._build, name="sexstream-session", daemon=True).start()
        return self

    def _build(self) -> None:
        t0 = time.monotonic()
        try:
            spark = build_session(*self._args, **self._kwargs)
        except BaseException as exc:  # noqa: BLE001 (handed to result())
            self._error = exc
            self._done.set()
            return
        self.seconds = time.monotonic() - t0
        with self._lock:
            self._spark = spark
            abandoned = self._abandoned
        self._done.set()
        if abandoned:
            stop_session(spark)

    def result(self) -> SparkSession:
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._spark

    def abandon(self) -> None:
        with self._lock:
            self._abandoned = True
            spark, self._spark = self._spark, None
        if spark is not None:
            stop_session(spark)


def stop_session(spark: SparkSession) -> None:
    """`spark.stop()` without its idle second.

    pyspark's accumulator server answers the JVM's updates in a loop that looks for its
    shutdown flag once per second, and `SparkContext.stop()` waits for that loop
    (most of a stop's second). Here the JVM side stops first, then the server
    is told to stop from a daemon thread: it has nothing left to receive, and a process
    that exits meanwhile simply closes its socket."""
    sc = spark.sparkContext
    server = getattr(sc, "_accumulatorServer", None)
    if server is not None:
        sc._accumulatorServer = None
        server.server_shutdown = True  # its loop ends at its next poll
        server.handle_error = lambda *_: None  # the JVM hanging up first is no error here
    spark.stop()
    if server is not None:
        threading.Thread(target=server.shutdown, name="accumulator-server-stop", daemon=True).start()


def end_jvm(timeout: float = 30.0) -> None:
    """End the driver JVM after `stop_session` and wait for it (its shutdown hooks
    remove Spark's temp folders), so that a command's end is the end of
    all its processes. A later session in this process starts a new JVM."""
    gateway = SparkContext._gateway
    proc = getattr(gateway, "proc", None)
    if SparkContext._active_spark_context is not None or proc is None:
        return
    SparkContext._gateway = None
    SparkContext._jvm = None
    try:
        gateway.shutdown()  # py4j's sockets
    except Exception:  # noqa: BLE001 (best effort: the JVM ends on EOF anyway)
        pass
    if proc.stdin is not None:
        proc.stdin.close()  # the gateway server exits on EOF
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log.warning("the driver JVM (pid %d) did not exit within %g s after EOF: killing it", proc.pid, timeout)
        proc.kill()
        proc.wait()


def ship_packages(sc: SparkContext) -> Path | None:
    """Zip the `sexstream` and `streaming` packages and add the zip to `sc`'s Python path.

    Executors put the zip before site-packages, so they run the driver's code even where
    an older sexstream is installed. The driver's own sys.path is left as it was (pyspark
    would put the zip first there too). Returns the zip, or None if already shipped.
    """
    if any(name.startswith("sexstream-packages") for name in (sc._python_includes or [])):
        return None
    from sexstream.workdirs import sweep

    # a driver that was killed (or crashed with os._exit) could not remove its own
    sweep(None, older_than=3600.0, name=SHIP_FOLDER)
    folder = Path(tempfile.mkdtemp(prefix=f"sexstream-ship-{os.getpid()}-"))
    atexit.register(shutil.rmtree, folder, True)
    archive = folder / "sexstream-packages.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        written = set()
        for package in SHIPPED_PACKAGES:
            root = Path(package.__file__).resolve().parent
            name = Path(*package.__name__.split("."))  # a checkout keeps sexstream.conf in conf/
            for path in sorted(root.rglob("*")):
                arcname = name / path.relative_to(root)
                if (path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
                        and arcname not in written):
                    zf.write(path, arcname)
                    written.add(arcname)
    before = list(sys.path)
    sc.addPyFile(str(archive))
    sys.path[:] = before
    return archive
