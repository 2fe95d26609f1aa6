"""The driver JVM's class archive (streaming/jvmarchive.py): recorded once, used when it
matches, ignored (never an error) when it does not."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streaming import jvmarchive
from streaming.jvmarchive import FAST_START_JVM
from streaming.session import session_conf
from sexstream.settings import load

pytestmark = pytest.mark.spark

#: A driver that starts a local session (extra JVM options from argv[1]), runs a Python
#: job and stops; run in a child process with its own JVM.
DRIVER = """
import sys
from sexstream.settings import load
from streaming.session import build_session, end_jvm, stop_session
extra = {"spark.driver.extraJavaOptions": sys.argv[1]} if sys.argv[1] else None
spark = build_session(load(master="local[1]"), "jvmarchive-test", extra_conf=extra)
print("sum", spark.sparkContext.parallelize(range(10), 2).map(lambda x: x * 2).sum())
stop_session(spark)
end_jvm()
"""


def run_driver(cache: Path, java_options: str = "", *, archive: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, jvmarchive.CACHE_ENV: str(cache)}
    env.pop(jvmarchive.SWITCH_ENV, None)
    if not archive:
        env[jvmarchive.SWITCH_ENV] = "off"
    return subprocess.run([sys.executable, "-c", DRIVER, java_options], capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "jvm-cache"
    monkeypatch.setenv(jvmarchive.CACHE_ENV, str(folder))
    monkeypatch.delenv(jvmarchive.SWITCH_ENV, raising=False)
    return folder


def test_without_an_archive_the_driver_gets_no_cds_option(cache):
    assert jvmarchive.java_options(FAST_START_JVM) == ""
    assert "SharedArchiveFile" not in session_conf(load())["spark.driver.extraJavaOptions"]


def test_the_archive_key_follows_the_jvm_options(cache):
    one, two = jvmarchive.archive_path(FAST_START_JVM), jvmarchive.archive_path(FAST_START_JVM + " -Xss2m")
    assert one.parent == two.parent == cache and one != two


def test_an_unusable_archive_is_ignored_silently(cache):
    path = jvmarchive.archive_path(FAST_START_JVM)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a CDS archive" * 1000)
    assert f"-XX:SharedArchiveFile={path}" in session_conf(load())["spark.driver.extraJavaOptions"]
    proc = run_driver(cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sum 90" in proc.stdout
    assert "cds" not in (proc.stdout + proc.stderr).lower()


def test_a_recorded_archive_serves_spark_classes_to_the_driver(cache, tmp_path):
    cache.mkdir(parents=True)
    stale = cache / "driver-0000000000000000.jsa"  # these jars before a reinstall
    stale.write_bytes(b"old")
    stale.with_suffix(".jars").write_text(str(jvmarchive.spark_jars().resolve()))
    gone = cache / "driver-1111111111111111.jsa"  # a removed venv's
    gone.write_bytes(b"old")
    gone.with_suffix(".jars").write_text(str(tmp_path / "removed-venv" / "jars"))
    other = cache / "driver-2222222222222222.jsa"  # another venv's, still there
    other.write_bytes(b"other")
    other.with_suffix(".jars").write_text(str(tmp_path))
    path = jvmarchive.build(FAST_START_JVM)
    assert path == jvmarchive.archive_path(FAST_START_JVM) and path.stat().st_size > 10 * 2**20
    assert path.with_suffix(".jars").read_text().strip() == str(jvmarchive.spark_jars().resolve())
    assert not stale.exists() and not gone.exists() and other.exists()
    assert not list(cache.glob(".*partial"))
    mtime = path.stat().st_mtime_ns
    assert jvmarchive.build(FAST_START_JVM) == path and path.stat().st_mtime_ns == mtime  # found, kept
    # the driver JVM loads Spark's classes from the archive
    loads = tmp_path / "class-load.log"
    proc = run_driver(cache, f"-Xlog:class+load=info:file={loads}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    shared = [ln for ln in loads.read_text().splitlines()
              if "org.apache.spark.SparkContext " in ln or "org.apache.spark.SparkContext$ " in ln]
    assert shared and all("shared objects file (top)" in ln for ln in shared), shared
    # and without it (switched off), from the jars
    proc = run_driver(cache, f"-Xlog:class+load=info:file={loads}", archive=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "shared objects file (top)" not in loads.read_text()
