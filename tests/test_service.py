"""The daemon operated as a service, end to end (real `sexstream run`, real Spark, real
SExtractor, real Delta tables): `/metrics` scraped and parsed with prometheus_client's
parser after known outcomes, `/readyz` through start-up, a dying stream and a stop, the
JSON log line by line, and conf/sexstream.service's ExecStart and stop signal run as
systemd would run them (without systemd)."""
from __future__ import annotations

import configparser
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cluster import free_port
from conftest import ROOT
from daemon_harness import SEXSTREAM, Daemon, drop
from sexstream import synthetic

pytestmark = pytest.mark.spark

KEYS = "NUMBER,EXT_NUMBER,FLUX_ISO,X_IMAGE,Y_IMAGE"
FAULTY = ROOT / "tests" / "doubles" / "sextractor_faulty"
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(url: str) -> tuple[int, bytes]:
    """(HTTP status, body); status 0 when nothing listens."""
    try:
        with NO_PROXY.open(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except OSError:
        return 0, b""


def metrics(url: str) -> dict[tuple[str, tuple], float]:
    status, body = get(url + "/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


class Readyz:
    """Polls /readyz every 0.1 s from a thread: the (HTTP status, state, reasons) seen, in
    order, each time they change (connection refused: status 0)."""

    def __init__(self, url: str):
        self.url = url
        self.seen: list[tuple[int, str, tuple]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Readyz":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            status, body = get(self.url + "/readyz")
            try:
                r = json.loads(body)
                now = (status, r["state"], tuple(r["reasons"]))
            except ValueError:
                now = (0, "", ())
            if not self.seen or self.seen[-1] != now:
                self.seen.append(now)

    def wait(self, predicate, timeout: float, daemon: Daemon | None = None) -> tuple:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hit = next((s for s in self.seen if predicate(s)), None)
            if hit:
                return hit
            if daemon is not None and daemon.proc.poll() is not None and not any(map(predicate, self.seen)):
                time.sleep(0.3)  # the last answers before it exited
                if not any(map(predicate, self.seen)):
                    raise AssertionError(f"daemon exited; /readyz said {self.seen}\n{daemon.tail()}")
            time.sleep(0.1)
        raise AssertionError(f"timed out; /readyz said {self.seen}")


def status_json(d: Daemon) -> dict:
    out = subprocess.run([*SEXSTREAM, "status", "--sink", str(d.sink), "--checkpoint", str(d.checkpoint), "--json"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def exposures(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("exposures")
    return synthetic.make_night(folder, 3, seed=21, nx=256, ny=256)


def test_metrics_readiness_and_the_json_log_of_a_run_with_known_outcomes(tmp_path, exposures):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    d = Daemon(tmp_path, extra=["--keys", KEYS, "--metrics-port", str(port), "--log-format", "json"],
               stdout=tmp_path / "daemon.jsonl")
    try:
        with Readyz(url) as readyz:
            d.start()
            readyz.wait(lambda s: s[0] == 200, 240, d)
            (tmp_path / "notes.fits").write_text("not an image\n")
            (tmp_path / "cut.fits").write_bytes(exposures[0].read_bytes()[:5000])
            good = [drop(p, d.raw) for p in exposures]
            text, cut = drop(tmp_path / "notes.fits", d.raw), drop(tmp_path / "cut.fits", d.raw)
            images = d.wait_for_paths([*good, text, cut])
            time.sleep(1.5)  # a monitor sample after the commit
            m = metrics(url)
            ready_status, body = get(url + "/readyz")
            assert d.terminate() == 0
        # not ready while starting, then ready
        first_ready = next(i for i, s in enumerate(readyz.seen) if s[0] == 200)
        assert any(s[0] == 503 and s[1] == "starting" for s in readyz.seen[:first_ready]), readyz.seen
        assert any(s[1] == "stopping" or s[1] == "stopped" for s in readyz.seen[first_ready:]), readyz.seen
        assert ready_status == 200, body
    finally:
        d.stop()
    verdicts = images.set_index("path")
    assert verdicts.loc[str(text), "status"] == "failed" and verdicts.loc[str(cut), "status"] == "incomplete"
    assert m["sexstream_images_total", (("status", "ok"),)] == 3
    assert m["sexstream_images_total", (("status", "failed"),)] == 1
    assert m["sexstream_images_total", (("status", "incomplete"),)] == 1
    assert m["sexstream_sources_total", ()] == images.n_sources.sum() > 0
    assert m["sexstream_image_failures_total", (("reason", "not_fits"), ("status", "failed"))] == 1
    assert m["sexstream_image_failures_total", (("reason", "truncated"), ("status", "incomplete"))] == 1
    assert m["sexstream_batches_total", ()] == m["sexstream_batch_duration_seconds_count", ()] >= 1
    assert m["sexstream_arrival_to_commit_seconds_count", ()] == 5  # every measured image
    assert 0 < m["sexstream_arrival_to_commit_seconds_sum", ()] < 5 * 240
    assert m["sexstream_backlog_files", ()] == 0 and m["sexstream_backlog_oldest_seconds", ()] == 0
    assert m["sexstream_ready", ()] == 1
    assert m["sexstream_sink_commits_total", (("table", "images"),)] >= 1
    assert m["sexstream_sink_small_files", (("table", "images"),)] >= 1
    assert 0 <= m["sexstream_last_commit_age_seconds", ()] < 60
    assert m["sexstream_driver_memory_bytes", (("process", "jvm"),)] > 100e6
    assert m["sexstream_driver_memory_bytes", (("process", "python"),)] > 20e6

    lines = (tmp_path / "daemon.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    batches = [r for r in records if r["event"] == "batch"]
    assert sum(b["files"] for b in batches) == 5 and sum(b["ok"] for b in batches) == 3
    assert len(batches) == m["sexstream_batches_total", ()]
    assert sorted(b["batch_id"] for b in batches) == sorted({b["batch_id"] for b in batches})
    failures = {r["path"]: r["reason_class"] for r in records if r["event"] == "failure"}
    assert failures == {str(text): "not_fits", str(cut): "truncated"}
    events = [r["event"] for r in records]
    assert events.count("start") == 1 and events[-1] == "stop" and records[-1]["exit_code"] == 0
    assert events.index("start") < events.index("batch") < events.index("stopping")
    daemon = status_json(d)["daemon"]
    assert (daemon["ready"], daemon["state"], daemon["reasons"]) == (False, "stopped", ["stopped (exit code 0)"])


def test_readyz_goes_not_ready_when_the_stream_dies_and_the_daemon_exits_1(tmp_path, exposures):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    d = Daemon(tmp_path, extra=["--keys", KEYS, "--metrics-port", str(port)])
    try:
        with Readyz(url) as readyz:
            d.start(hooks=["--fail-at", "planned:0"])
            readyz.wait(lambda s: s[0] == 200, 240, d)
            assert status_json(d)["daemon"]["ready"] is True
            drop(exposures[0], d.raw)
            failed = readyz.wait(lambda s: s[1] == "failed", 120)
            assert d.wait_exit(120) == 1
    finally:
        d.stop()
    assert failed[0] == 503
    assert failed[2][0].startswith("failed: the streaming query failed:") and "test hook" in failed[2][0]
    daemon = status_json(d)["daemon"]
    assert daemon["state"] == "failed" and daemon["reasons"] == list(failed[2])


# --- the systemd unit, without systemd ---------------------------------------------

UNIT = ROOT / "conf" / "sexstream.service"


def unit(path: Path = UNIT) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # systemd's keys are case-sensitive
    parser.read(path)
    return parser


def unit_environment(path: Path = UNIT) -> dict[str, str]:
    """The unit's Environment= lines (repeated keys, which configparser would merge)."""
    lines = [line.split("=", 1)[1] for line in path.read_text().splitlines() if line.startswith("Environment=")]
    return dict(pair.split("=", 1) for line in lines for pair in line.split())


def environment_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def exec_argv(command: str, env: dict[str, str]) -> list[str]:
    """ExecStart's words as systemd expands them: ${VAR} is one word, $VAR is split on
    white space (and vanishes when empty)."""
    argv = []
    for word in command.split():
        if m := re.fullmatch(r"\$\{(\w+)\}", word):
            argv.append(env[m.group(1)])
        elif m := re.fullmatch(r"\$(\w+)", word):
            argv += env.get(m.group(1), "").split()
        else:
            argv.append(word)
    return argv


def seconds(value: str) -> float:
    return sum(float(n) * {"min": 60, "s": 1, "h": 3600}[u or "s"] for n, u in re.findall(r"(\d+)(min|s|h)?", value))


def session_processes(sid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                raw = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(raw[raw.rindex(")") + 2:].split()[4]) == sid:
                pids.append(int(entry))
    return pids


def test_the_unit_file_restarts_on_failure_and_stops_with_sigterm_to_the_daemon_alone():
    service = unit()["Service"]
    assert service["ExecStart"].split()[1:2] == ["run"] and "--log-format json" in service["ExecStart"]
    assert service["User"] == "sexstream" and service["EnvironmentFile"] == "/etc/sexstream/sexstream.env"
    assert service["Restart"] == "on-failure" and "2" in service["RestartPreventExitStatus"].split()
    assert service["KillSignal"] == "SIGTERM" and service["KillMode"] == "mixed"
    assert seconds(service["TimeoutStopSec"]) >= 600  # a batch of large frames fits
    env = environment_file(ROOT / "conf" / "sexstream.env")
    words = exec_argv(service["ExecStart"], env)
    assert words[words.index("--raw") + 1] == env["SEXSTREAM_RAW"] and "$SEXSTREAM_ARGS" not in words


def test_the_units_exec_start_stops_on_sigterm_after_committing_the_batch_in_progress(tmp_path, exposures):
    service = unit()["Service"]
    port = free_port()
    env = {**environment_file(ROOT / "conf" / "sexstream.env"),
           "SEXSTREAM_RAW": str(tmp_path / "raw"), "SEXSTREAM_SINK": str(tmp_path / "sink"),
           "SEXSTREAM_CHECKPOINT": str(tmp_path / "checkpoint"), "SEXSTREAM_METRICS_PORT": str(port),
           "SEXSTREAM_ARGS": f"--binary {FAULTY} --keys {KEYS} --trigger 1"}
    argv = exec_argv(service["ExecStart"], env)
    argv[0] = str(Path(sys.executable).parent / "sexstream")  # /opt/sexstream/bin/sexstream, here
    pids = tmp_path / "pids"
    pids.mkdir()
    extra_env = unit_environment()
    assert extra_env.pop("SEXSTREAM_JVM_CACHE") == "/var/lib/sexstream/jvm"  # here: the test run's own
    full_env = {**os.environ, **extra_env, **env, "SEXSTREAM_DOUBLE_SLOW_S": "6",
                "SEXSTREAM_DOUBLE_PIDDIR": str(pids)}
    (tmp_path / "raw").mkdir()
    with open(tmp_path / "stdout.jsonl", "w") as out, open(tmp_path / "stderr.txt", "w") as err:
        proc = subprocess.Popen(argv, env=full_env, cwd=tmp_path, stdout=out, stderr=err, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while get(f"http://127.0.0.1:{port}/readyz")[0] != 200:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "stderr.txt").read_text()
            time.sleep(0.2)
        slow = drop(exposures[1], tmp_path / "raw", "slow_1.fits")
        while not any(pids.iterdir()):  # SExtractor is measuring it: a batch is in progress
            assert time.monotonic() < deadline, (tmp_path / "stdout.jsonl").read_text()[-3000:]
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)  # KillSignal, to the main process only (KillMode=mixed)
        code = proc.wait(timeout=min(seconds(service["TimeoutStopSec"]), 180))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    assert code == 0, (tmp_path / "stderr.txt").read_text()[-3000:]
    records = [json.loads(line) for line in (tmp_path / "stdout.jsonl").read_text().splitlines()]
    (batch,) = [r for r in records if r["event"] == "batch"]
    assert batch["ok"] == 1 and records[-1]["event"] == "stop" and records[-1]["exit_code"] == 0
    assert [r for r in records if r["event"] == "stopping"][0]["time"] < batch["time"]  # SIGTERM came mid-batch
    from sexstream.tables import read_table

    images = read_table(tmp_path / "sink" / "images").to_pandas()
    assert list(images.path) == [str(slow)] and list(images.status) == ["ok"]
    deadline = time.monotonic() + 10
    while session_processes(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert session_processes(proc.pid) == []  # JVM, workers, SExtractor: ended by the daemon itself


def test_a_configuration_error_exits_2_which_the_unit_does_not_restart(tmp_path):
    env = {"SEXSTREAM_RAW": str(tmp_path / "raw"), "SEXSTREAM_SINK": str(tmp_path / "sink"),
           "SEXSTREAM_CHECKPOINT": str(tmp_path / "checkpoint"), "SEXSTREAM_METRICS_PORT": "0",
           "SEXSTREAM_ARGS": "--keys NOT_A_KEY"}
    argv = exec_argv(unit()["Service"]["ExecStart"], env)
    argv[0] = str(Path(sys.executable).parent / "sexstream")
    p = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "NOT_A_KEY" in p.stderr
    assert str(p.returncode) in unit()["Service"]["RestartPreventExitStatus"].split()


def test_the_spark_submit_entry_runs_run_by_default_and_keeps_a_given_master(monkeypatch):
    from streaming.job import job_argv

    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)  # not started by spark-submit
    assert job_argv(["--raw", "r"]) == ["run", "--raw", "r"]
    assert job_argv(["status", "--json"]) == ["status", "--json"]
    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "1")  # would ask the JVM: never for a given master
    assert job_argv(["run", "--master=local[2]"]) == ["run", "--master=local[2]"]
    assert job_argv(["replay", "d", "--master", "local[2]"]) == ["replay", "d", "--master", "local[2]"]
