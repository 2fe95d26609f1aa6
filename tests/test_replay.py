"""`sexstream replay`: bounded, resumable, idempotent runs over backlog folders."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import REAL, real_images
from daemon_harness import SEXSTREAM, Daemon, drop, read_table
from sexstream import synthetic
from sexstream.tables import open_table

pytestmark = pytest.mark.spark

KEYS = "NUMBER,EXT_NUMBER,FLUX_ISO,X_IMAGE,Y_IMAGE,ALPHA_J2000,DELTA_J2000"


@pytest.fixture(scope="module")
def backlog(tmp_path_factory) -> Path:
    """Two nights of generated images plus the real ones, in nested folders."""
    root = tmp_path_factory.mktemp("archive")
    synthetic.make_night(root / "2026-11-01", 5, seed=21, nx=384, ny=768)
    synthetic.make_night(root / "2026-11-02", 5, seed=22, nx=384, ny=768)
    if REAL.is_dir():
        for p in real_images():
            if p.parent.name != "sep":
                shutil.copyfile(p, root / "2026-11-02" / f"real_{p.name}")
    return root


def images_in(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.is_file() and ".fits" in p.name)


def replay(*args: str, check: int | None = 0, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([*SEXSTREAM, "replay", *args, "--keys", KEYS, "--progress-every", "0"],
                          capture_output=True, text=True, timeout=600, **kw)
    if check is not None:
        assert proc.returncode == check, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def assert_one_row_per_file(sink: Path, files: list[str], config_hash: str | None = None) -> pd.DataFrame:
    images = read_table(sink, "images")
    if config_hash:
        images = images[images.config_hash == config_hash]
    assert sorted(images["path"]) == sorted(files)
    sources = read_table(sink, "sources")
    if config_hash:
        sources = sources[sources.config_hash == config_hash]
    assert not sources.duplicated(["path", "EXT_NUMBER", "NUMBER", "config_hash"]).any()
    assert sources.groupby("path").size().sum() == images["n_sources"].sum()
    return images


def test_backlog_replays_once_and_a_second_replay_writes_nothing(backlog, tmp_path):
    sink = tmp_path / "sink"
    first = replay(f"{backlog}/2026-11-*", "--sink", str(sink), "--max-files-per-batch", "8")
    files = images_in(backlog)
    images = assert_one_row_per_file(sink, files)
    assert set(images["status"]) == {"ok"}
    assert "replay summary" in first.stdout and f"{len(files)} ok, 0 failed" in first.stdout
    assert f"replay: {len(files)}/{len(files)} files" in first.stderr
    assert images["batch_id"].nunique() >= 2  # bounded batches
    versions = {t: open_table(sink / t).version() for t in ("sources", "images")}
    again = replay(str(backlog / "2026-11-01"), str(backlog / "2026-11-02"), "--sink", str(sink))
    assert "0 ok, 0 failed" in again.stdout
    assert {t: open_table(sink / t).version() for t in ("sources", "images")} == versions
    # another DETECT_THRESH: a second, distinguishable version of every image
    other = replay(f"{backlog}/2026-11-*", "--sink", str(sink), "--set", "DETECT_THRESH=5")
    assert f"{len(files)} ok" in other.stdout
    both = read_table(sink, "images")
    hashes = both["config_hash"].unique()
    assert len(hashes) == 2
    per_config = {h: both[both.config_hash == h]["n_sources"].sum() for h in hashes}
    strict, loose = sorted(per_config, key=per_config.get)
    assert per_config[strict] < per_config[loose]  # a higher threshold finds fewer sources
    assert_one_row_per_file(sink, files, strict)
    assert_one_row_per_file(sink, files, loose)


def _interrupt_after_first_batch(args: list[str], sig: int, log: Path) -> int:
    with open(log, "w") as fh:
        proc = subprocess.Popen([*SEXSTREAM, "replay", *args, "--keys", KEYS, "--progress-every", "0"],
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while "batch 0:" not in log.read_text() and time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.2)
    if sig == signal.SIGKILL:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        proc.send_signal(sig)
    return proc.wait(120)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "kill9"])
def test_interrupted_replay_resumes_to_the_same_table(backlog, tmp_path, sig):
    sink = tmp_path / "sink"
    args = [str(backlog), "--sink", str(sink), "--max-files-per-batch", "3"]
    rc = _interrupt_after_first_batch(args, sig, tmp_path / "first.log")
    assert rc == (130 if sig == signal.SIGINT else -signal.SIGKILL), (tmp_path / "first.log").read_text()[-2000:]
    if sig == signal.SIGINT:
        assert "run the same command again to resume" in (tmp_path / "first.log").read_text()
    partial = read_table(sink, "images")
    files = images_in(backlog)
    assert 0 < len(partial) < len(files)
    replay(*args)
    assert_one_row_per_file(sink, files)


def test_replay_concurrent_with_the_daemon_loses_nothing(backlog, tmp_path):
    d = Daemon(tmp_path / "daemon", extra=["--keys", KEYS, "--sink", str(tmp_path / "sink")])
    d.sink = tmp_path / "sink"
    live = synthetic.make_night(tmp_path / "live", 6, seed=31, nx=384, ny=768)
    try:
        d.start()
        time.sleep(2)
        dropped = []
        proc = subprocess.Popen([*SEXSTREAM, "replay", str(backlog), "--sink", str(d.sink), "--keys", KEYS,
                                 "--max-files-per-batch", "4", "--progress-every", "0"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for p in live:  # the night goes on while the archive is replayed
            dropped.append(drop(p, d.raw))
            time.sleep(1.0)
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
        d.wait_for_paths(dropped)
        assert d.terminate() == 0
    finally:
        d.stop()
    images = read_table(d.sink, "images")
    files = images_in(backlog) + [str(p) for p in dropped]
    assert sorted(images["path"]) == sorted(files)
    sources = read_table(d.sink, "sources")
    assert not sources.duplicated(["path", "EXT_NUMBER", "NUMBER"]).any()
    assert sources.groupby("path").size().sum() == images["n_sources"].sum()


def tagged_processes(tag: str) -> list[str]:
    """Processes (with their command lines) whose environment carries SEXSTREAM_TEST_TAG=tag:
    the replay and everything it started (the JVM, Python workers, SExtractor)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                if f"SEXSTREAM_TEST_TAG={tag}".encode() not in fh.read().split(b"\0"):
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{pid}: {cmdline[:200]}")
        except OSError:
            continue
    return found


def test_replay_ends_with_all_its_processes_and_reports_its_phases(backlog, tmp_path):
    tag = f"replay-{os.getpid()}-{time.monotonic_ns()}"
    env = {**os.environ, "SEXSTREAM_TEST_TAG": tag}
    out = tmp_path / "replay.out"
    with open(out, "w") as fh:  # a file, not a pipe: the command's end is not the pipe's
        rc = subprocess.run([*SEXSTREAM, "replay", str(backlog / "2026-11-01"), "--sink", str(tmp_path / "sink"),
                             "--keys", KEYS], stdout=fh, stderr=subprocess.STDOUT, env=env, timeout=600).returncode
    # the driver JVM is ended and waited for: nothing of the run outlives the command
    assert tagged_processes(tag) == []
    assert rc == 0, out.read_text()[-3000:]
    text = out.read_text()
    summary = text[text.index("replay summary"):]
    assert "5 ok, 0 failed" in summary
    assert "since the process started: Spark start-up" in summary
    assert "(until the first image is measured), work" in summary and "Spark stop" in summary


def test_a_usage_error_exits_2_and_its_half_started_jvm_ends_too(backlog, tmp_path):
    """The JVM boots in the background while the selection is validated: an unknown key
    is still reported at once, and the JVM that was starting ends by itself."""
    tag = f"usage-{os.getpid()}-{time.monotonic_ns()}"
    proc = subprocess.run([*SEXSTREAM, "replay", str(backlog / "2026-11-01"), "--sink", str(tmp_path / "sink"),
                           "--keys", "NUMBER,FLUX_AUTOO"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "SEXSTREAM_TEST_TAG": tag})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "FLUX_AUTOO" in proc.stderr and "FLUX_AUTO" in proc.stderr  # "did you mean"
    deadline = time.monotonic() + 120
    while tagged_processes(tag) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert tagged_processes(tag) == []
    assert not (tmp_path / "sink" / "images").exists()
