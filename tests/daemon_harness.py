"""Drive a real `sexstream run` daemon process from tests: start, wait, stop, kill -9,
and read back what it committed."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

#: The `sexstream` program (its console script runs streaming.cli:main).
SEXSTREAM = [sys.executable, "-m", "streaming.cli"]
#: The same daemon with the chaos suite's engine hooks (crash points, batch events).
DRIVER = [sys.executable, str(Path(__file__).resolve().parent / "chaos" / "driver.py")]


def drop(src: Path, raw: Path, name: str | None = None) -> Path:
    """Copy `src` into `raw` the way a careful downloader does: temp name, then rename."""
    raw.mkdir(parents=True, exist_ok=True)
    dst = raw / (name or src.name)
    tmp = raw / f".{dst.name}.part"
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    return dst


def read_table(sink: Path, name: str) -> pd.DataFrame:
    from sexstream.tables import open_table, read_table

    if open_table(sink / name) is None:
        return pd.DataFrame()
    return read_table(sink / name).to_pandas()


class Daemon:
    """One `sexstream run` process with its folders; output captured in `log`."""

    def __init__(self, root: Path, *, raw: Path | None = None, extra: list[str] | None = None,
                 env: dict[str, str] | None = None, name: str = "daemon",
                 wrapper: list[str] | None = None, stdout: Path | None = None):
        self.root = root
        self.wrapper = wrapper or []  # argv prefix, e.g. setpriv dropping capabilities
        self.raw = raw or root / "raw"
        self.sink = root / "sink"
        self.checkpoint = root / "checkpoint"
        self.extra = extra or []
        self.env = env or {}
        self.name = name
        self.proc: subprocess.Popen | None = None
        self.runs = 0
        self.log = root / f"{name}.log"
        self.stdout = stdout  # its stdout alone (e.g. --log-format json) instead of into `log`

    def start(self, env: dict[str, str] | None = None, hooks: list[str] | None = None) -> "Daemon":
        """Start `sexstream run`; with `hooks` (e.g. ["--crash-at", "parts_written:0"]) the
        same daemon through the chaos driver (tests/chaos/driver.py)."""
        self.raw.mkdir(parents=True, exist_ok=True)
        self.runs += 1
        program = [*DRIVER, *hooks] if hooks else SEXSTREAM
        argv = [*self.wrapper, *program, "run", "--raw", str(self.raw), "--sink", str(self.sink),
                "--checkpoint", str(self.checkpoint), "--trigger", "1", "--no-seed", *self.extra]
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env, **(env or {})}
        with open(self.log, "a") as fh, open(self.stdout or os.devnull, "a") as out:
            fh.write(f"=== run {self.runs}: {' '.join(argv)}\n")
            fh.flush()
            self.proc = subprocess.Popen(argv, stdout=out if self.stdout else fh,
                                         stderr=fh if self.stdout else subprocess.STDOUT, env=full_env,
                                         cwd=self.root, start_new_session=True)
        return self

    def images(self) -> pd.DataFrame:
        return read_table(self.sink, "images")

    def sources(self) -> pd.DataFrame:
        return read_table(self.sink, "sources")

    def wait_for(self, predicate, timeout: float = 240.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}) while waiting for {what}:\n"
                                     + self.tail())
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}:\n" + self.tail())

    def wait_for_paths(self, paths, timeout: float = 240.0) -> pd.DataFrame:
        want = {str(p) for p in paths}

        def done():
            df = self.images()
            return not df.empty and want <= set(df["path"])

        self.wait_for(done, timeout, f"images rows for {len(want)} files")
        return self.images()

    def wait_exit(self, timeout: float = 120.0) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise AssertionError("daemon did not exit in time:\n" + self.tail())

    def terminate(self, timeout: float = 120.0) -> int:
        """SIGTERM: the daemon finishes its batch and exits; returns its exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill9(self) -> None:
        """kill -9 of the daemon and every process of its session (the JVM, python workers)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(30)

    def stop(self) -> None:
        """End whatever is left (test teardown)."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.terminate(60)
            except AssertionError:
                pass
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # leftovers of the session only
            except ProcessLookupError:
                pass

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return "(no log)"
