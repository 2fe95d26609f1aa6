"""Building the SparkSession: embedded `local[*]` by default, or any cluster manager.

`build_session` applies the known traps of DESIGN.md in one place: executors run this
very Python (`sys.executable`), Spark binds to loopback when the cluster is on this
machine, the UI is off unless asked for, log4j speaks at WARN through
conf/log4j2.properties, and, on a cluster, the `sexstream` and `streaming` packages are
shipped to the executors as a zip (`SparkContext.addPyFile`).
"""
from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Mapping

from pyspark import SparkContext
from pyspark.sql import SparkSession

import sexstream
import streaming
from sexstream.settings import Settings
from streaming.cluster import LOG4J2_PROPERTIES

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]", "ip6-localhost"}
#: The packages every executor must import, shipped when the master is not local.
SHIPPED_PACKAGES = (sexstream, streaming)

#: JVM options of the driver (and executors on this machine): the JVM only coordinates
#: here (SExtractor does the work), so C1-only JIT and the serial GC halve its start-up
#: (measured on 2 cores: session 11-16 s -> 6-7 s under load) at no cost to throughput.
FAST_START_JVM = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"

#: Small-machine defaults; `extra_conf` overrides any of them.
DEFAULT_CONF: dict[str, str] = {
    "spark.sql.shuffle.partitions": "4",
    "spark.sql.session.timeZone": "UTC",
    "spark.python.worker.reuse": "true",
    "spark.ui.showConsoleProgress": "false",
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


def session_conf(settings: Settings, app_name: str = "sexstream", *, ui: bool = False,
                 extra_conf: Mapping[str, str] | None = None) -> dict[str, str]:
    """The Spark configuration `build_session` uses, as plain strings (for inspection)."""
    master = settings.master or "local[*]"
    python = sys.executable
    log4j = f"-Dlog4j2.configurationFile={LOG4J2_PROPERTIES.as_uri()} {FAST_START_JVM}"
    conf = dict(DEFAULT_CONF)
    conf.update({
        "spark.master": master,
        "spark.app.name": app_name,
        "spark.pyspark.python": python,
        "spark.pyspark.driver.python": python,
        "spark.ui.enabled": "true" if ui else "false",
        "spark.driver.extraJavaOptions": log4j,
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


def ship_packages(sc: SparkContext) -> Path | None:
    """Zip the `sexstream` and `streaming` packages and add the zip to `sc`'s Python path.

    Executors put the zip before site-packages, so they run the driver's code even where
    an older sexstream is installed. The driver's own sys.path is left as it was (pyspark
    would put the zip first there too). Returns the zip, or None if already shipped.
    """
    if any(name.startswith("sexstream-packages") for name in (sc._python_includes or [])):
        return None
    folder = Path(tempfile.mkdtemp(prefix="sexstream-ship-"))
    atexit.register(shutil.rmtree, folder, True)
    archive = folder / "sexstream-packages.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for package in SHIPPED_PACKAGES:
            root = Path(package.__file__).resolve().parent
            for path in sorted(root.rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                    zf.write(path, Path(root.name) / path.relative_to(root))
    before = list(sys.path)
    sc.addPyFile(str(archive))
    sys.path[:] = before
    return archive
