"""One `sexstream run` process under test: start, SIGTERM, kill -9, its log and its memory.

The daemon runs in its own session (process group), so `kill9` can end the driver the
way a crashed machine would: every process of that group at once (the driver Python,
its JVM). What the group does not hold -- pyspark's worker daemons (their own group,
ended by the JVM's death) and SExtractor runs (their own session) -- is watched: any
that is still alive a few seconds later is reported as an orphan, then ended by pid
(with the kernel start time checked, so a recycled pid is never signalled).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from cluster import Daemon as Process
from cluster import _proc_table, _read_stat, is_running, process_tree

#: The daemon with the suite's engine hooks (crash points, batch events).
DRIVER = [sys.executable, str(Path(__file__).resolve().parent / "driver.py")]


@dataclass(frozen=True)
class BatchLine:
    """One committed batch, from the daemon's batch events (`sexstream.engine.BatchStats`)."""

    batch_id: int
    files: int
    ok: int
    failed: int
    sources: int
    seconds: float
    lag_s: float | None
    committed_at: float | None = None  # epoch seconds
    plan_s: float | None = None  # the batch's phases (seconds), for benchmarks
    tasks_s: float | None = None
    commit_s: float | None = None


def read_batches(path: Path) -> list[BatchLine]:
    """The batch events of a daemon (JSON lines), in order; [] before the first one."""
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill -9 mid-write
        out.append(BatchLine(d["batch_id"], d["files"], d["ok"], d["failed"], d["sources"],
                             d["seconds"], d["lag_s"], d.get("committed_at"), d.get("plan_s"),
                             d.get("tasks_s"), d.get("commit_s")))
    return out


def rss_kib(pid: int) -> int | None:
    """Resident set size of `pid` in KiB (VmRSS of /proc/PID/status), None if gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class DaemonProcess:
    """A `sexstream run` on `raw` -> `sink` with `checkpoint`, plus `flags`.

    Output of every start is appended to `log`; `run_logs` holds each start's slice.
    """

    def __init__(self, root: Path, *, raw: Path, sink: Path, checkpoint: Path,
                 flags: list[str], env: dict[str, str] | None = None):
        self.root = Path(root)
        self.raw, self.sink, self.checkpoint = Path(raw), Path(sink), Path(checkpoint)
        self.flags = list(flags)
        self.env = dict(env or {})
        self.log = self.root / "daemon.log"
        self.events = self.root / "batches.jsonl"
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.runs = 0
        self._log_offset = 0
        self.orphans: list[tuple[int, str]] = []  # (pid, command) that outlived the driver
        #: More processes that run the driver's tasks (a standalone cluster's executors).
        self.executor_pids: Callable[[], Iterable[int]] = lambda: ()

    # -- life cycle

    def start(self, hooks: list[str] | None = None) -> "DaemonProcess":
        """Start the daemon (hooks: driver flags for this run only, e.g. --crash-at)."""
        if self.running:
            raise RuntimeError("the daemon is already running")
        self.runs += 1
        argv = [*DRIVER, "--events", str(self.events), *(hooks or []), "run", "--raw", str(self.raw),
                "--sink", str(self.sink), "--checkpoint", str(self.checkpoint), "--no-seed", *self.flags]
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self._log_offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "a") as fh:
            fh.write(f"=== run {self.runs}: {' '.join(argv)}\n")
            fh.flush()
            self.proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=full_env,
                                         cwd=self.root, start_new_session=True,
                                         stdin=subprocess.DEVNULL)
        self.started_at = time.monotonic()
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def uptime(self) -> float:
        return time.monotonic() - self.started_at

    def wait_exit(self, timeout: float) -> int | None:
        """The exit code, or None if still running after `timeout` seconds."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def sigterm(self, timeout: float = 180.0) -> int | None:
        """SIGTERM to the driver only (as `kill PID` or systemd would); its exit code,
        or None if it did not exit within `timeout` seconds (then it is killed). What the
        driver started and left running is recorded in `orphans` and ended."""
        assert self.proc is not None
        before = self.tree()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.wait_exit(timeout)
        if code is None:
            self.kill9()
        else:
            self._reap(before, 10.0)
        return code

    def kill9(self, grace: float = 10.0) -> list[tuple[int, str]]:
        """kill -9 of the driver's process group; return the processes it started that
        outlived it by `grace` seconds (orphans), after ending them by pid."""
        if self.proc is None:
            return []
        before = self.tree()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(60)
        return self._reap(before, grace)

    def tree(self) -> dict[int, tuple[int, str]]:
        """pid -> (start time, command) of the driver and every live descendant."""
        if not self.running:
            return {}
        stat = _read_stat(self.pid)
        if stat is None:
            return {}
        table = _proc_table()
        pids = process_tree(Process("driver", self.pid, stat[3], 0, 0, ""), table)
        return {pid: (table[pid][3], command_line(pid)) for pid in pids if pid in table}

    def _reap(self, before: dict[int, tuple[int, str]], grace: float) -> list[tuple[int, str]]:
        deadline = time.monotonic() + grace
        alive = {}
        while True:
            alive = {pid: v for pid, v in before.items() if _same_process(pid, v[0])}
            if not alive or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        for pid, (start, _) in alive.items():
            if _same_process(pid, start):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        left = [(pid, cmd) for pid, (_, cmd) in alive.items()]
        self.orphans += left
        return left

    def stop(self) -> None:
        """End whatever is left (teardown): SIGTERM, then kill -9."""
        if self.running:
            if self.sigterm(60) is None:
                return
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    # -- what it said

    def text(self) -> str:
        """The whole log (every run)."""
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def run_text(self) -> str:
        """The log of the current (or last) run only."""
        try:
            with open(self.log, "rb") as fh:
                fh.seek(self._log_offset)
                return fh.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.run_text().splitlines()[-n:])

    def watching(self) -> bool:
        """True once the current run's query has started."""
        return "INFO watching " in self.run_text()

    def verdicts(self) -> set[str]:
        """Paths that have at least one images row in the sink (read through the log)."""
        from sexstream.tables import read_table

        got = read_table(self.sink / "images", columns=["path"])
        return set(got["path"].to_pylist()) if "path" in got.column_names else set()

    def wait_verdicts(self, paths, timeout: float, poll: float = 1.0) -> bool:
        """Wait until every one of `paths` has an images row; False if the daemon exits
        or `timeout` seconds pass first."""
        want = {str(p) for p in paths}
        deadline = time.monotonic() + timeout
        while self.running and time.monotonic() < deadline:
            if want <= self.verdicts():
                return True
            time.sleep(poll)
        return want <= self.verdicts()

    def batches(self) -> list[BatchLine]:
        """The committed batches of every run."""
        return read_batches(self.events)

    def extracting(self, marker: str = "") -> bool:
        """True while a SExtractor run (the real binary or a double) descends from the
        driver or from `executor_pids`; with `marker`, only one whose raw file's name
        contains it."""
        for pid in {*self.tree(), *self.executor_pids()}:
            args = argv_of(pid)
            if pid != self.pid and is_sextractor(args) and marker in image_of(args):
                return True
        return False


def argv_of(pid: int) -> list[str]:
    """The command line of `pid`, as a list ([] if it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [a.decode("utf-8", "replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        return []


def command_line(pid: int) -> str:
    return " ".join(argv_of(pid))


def is_sextractor(args: list[str]) -> bool:
    """A SExtractor run: the binary itself, or a test double (a Python script)."""
    if not args:
        return False
    if os.path.basename(args[0]) in ("source-extractor", "sex", "sextractor"):
        return True
    return len(args) > 1 and os.path.basename(args[1]).startswith("sextractor_")


def image_of(args: list[str]) -> str:
    """The raw file a SExtractor run measures (its image argument is a symlink to it)."""
    for a in args[1:]:
        if a.endswith(".fits") and not a.startswith("-"):
            return os.path.realpath(a)
    return ""


def _same_process(pid: int, start: int) -> bool:
    stat = _read_stat(pid)
    return stat is not None and stat[3] == start and is_running(pid)


def reap_pidfiles(piddir: Path) -> list[tuple[int, str]]:
    """End the SExtractor double runs recorded in `piddir` that still run (pid and start
    time must both match); return their (pid, command). The files are removed."""
    ended = []
    if not piddir.is_dir():
        return ended
    for entry in piddir.iterdir():
        try:
            pid, start = (int(x) for x in entry.read_text().split())
        except (OSError, ValueError):
            continue
        if _same_process(pid, start):
            cmd = command_line(pid)
            try:
                os.kill(pid, signal.SIGKILL)
                ended.append((pid, cmd))
            except ProcessLookupError:
                pass
        entry.unlink(missing_ok=True)
    return ended


class RssSampler(threading.Thread):
    """Samples the resident memory of the driver (its Python and its JVM) every
    `interval` seconds: `samples` is a list of (monotonic time, python KiB, jvm KiB)."""

    def __init__(self, daemon: DaemonProcess, interval: float = 0.5):
        super().__init__(name="rss-sampler", daemon=True)
        self.daemon_proc = daemon
        self.interval = interval
        self.samples: list[tuple[float, int, int]] = []
        self._halt = threading.Event()

    def jvm_pid(self) -> int | None:
        for pid, (_, cmd) in self.daemon_proc.tree().items():
            if pid != self.daemon_proc.pid and "java" in cmd.split(" ")[0]:
                return pid
        return None

    def run(self) -> None:
        jvm = None
        while not self._halt.wait(self.interval):
            if not self.daemon_proc.running:
                continue
            jvm = jvm or self.jvm_pid()
            py = rss_kib(self.daemon_proc.pid)
            jv = rss_kib(jvm) if jvm else None
            if py is not None:
                self.samples.append((time.monotonic(), py, jv or 0))

    def stop(self) -> None:
        self._halt.set()
        self.join(5)
