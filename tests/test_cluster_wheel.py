"""README's "Run it on a Spark cluster", run as written: the wheel installed in a fresh
venv, the daemon started by spark-submit on the 2-worker standalone cluster on
127.0.0.1, images measured by the workers' executors, a graceful stop by SIGTERM to the
Python driver, and spark-submit's exit status.

The README's bash block runs through bash itself (it is shell, with $(...) and line
continuations), with its placeholders replaced: the venv, the data folder, the master
and the metrics port. pip installs pyspark's `spark-submit` into a venv's bin; the test's
venv gets its dependencies by a path entry instead, so `spark-submit` comes from the
test run's own venv, which is the same pyspark."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from cluster import StandaloneCluster, free_port
from conftest import ROOT
from daemon_harness import drop, read_table
from sexstream import synthetic
from spark_fixtures import SparkInfra, spark_infra, standalone_cluster  # noqa: F401 (fixtures)
from test_wheel import installed  # noqa: F401 (fixture: the wheel in a fresh venv)

pytestmark = [pytest.mark.spark, pytest.mark.slow]

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def readme_block(anchor: str = "spark-submit --master spark://head:7077") -> str:
    """The README's fenced bash block that holds `anchor`."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    (block,) = [b for b in blocks if anchor in b]
    return block


def get_json(url: str) -> tuple[int, dict]:
    try:
        with NO_PROXY.open(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
    except OSError:
        return 0, {}


def test_the_cluster_section_ingests_images_on_the_standalone_cluster_from_the_installed_wheel(
        installed: Path, standalone_cluster: StandaloneCluster, spark_infra: SparkInfra, tmp_path: Path):
    spark_infra.stop_session()  # a session of this test run would hold the workers' cores
    data = tmp_path / "data"
    (data / "raw").mkdir(parents=True)
    port = free_port()
    script = (readme_block().replace("/opt/sexstream", str(installed)).replace("/shared/sexstream", str(data))
              .replace("spark://head:7077", standalone_cluster.master_url).replace("9464", str(port)))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")}
    env["PATH"] = f"{installed / 'bin'}:{Path(sys.executable).parent}:{env['PATH']}"
    elsewhere = tmp_path / "elsewhere"  # nothing of the checkout on the path
    elsewhere.mkdir()
    frames = synthetic.make_night(tmp_path / "frames", 4, seed=17, nx=256, ny=256)
    with open(tmp_path / "stdout.txt", "w") as out, open(tmp_path / "stderr.txt", "w") as err:
        proc = subprocess.Popen(["bash", "-c", script], cwd=elsewhere, env=env, stdout=out, stderr=err,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def log() -> str:
        return ((tmp_path / "stdout.txt").read_text()[-3000:] + (tmp_path / "stderr.txt").read_text()[-3000:])

    try:
        deadline = time.monotonic() + 300
        while get_json(url + "/readyz")[0] != 200:
            assert proc.poll() is None and time.monotonic() < deadline, log()
            time.sleep(0.5)
        apps = standalone_cluster.status()["activeapps"]
        assert [(a["name"], a["cores"]) for a in apps] == [("sexstream-run", 2)]  # both workers' executors
        paths = [drop(p, data / "raw") for p in frames]
        while True:
            images = read_table(data / "sink", "images")
            if not images.empty and {str(p) for p in paths} <= set(images.path):
                break
            assert proc.poll() is None and time.monotonic() < deadline, log()
            time.sleep(0.5)
        driver = get_json(url + "/healthz")[1]["pid"]  # the Python driver, a child of spark-submit's JVM
        assert driver != proc.pid
        os.kill(driver, signal.SIGTERM)
        code = proc.wait(120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    assert code == 0, log()
    assert sorted(images.path) == sorted(map(str, paths)) and set(images.status) == {"ok"}
    assert read_table(data / "sink", "sources").shape[0] == images.n_sources.sum() > 0
    # spark-submit's JVM hands the Python driver's stderr on to its own stdout
    output = (tmp_path / "stdout.txt").read_text() + (tmp_path / "stderr.txt").read_text()
    assert "stopped cleanly after" in output and " INFO SparkContext" not in output  # sexstream's log4j
    assert re.search(r"preflight: 2 executor\(s\)", output), output[-3000:]
