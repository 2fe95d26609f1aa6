"""A Spark standalone cluster on this machine: one master and N workers on 127.0.0.1.

It runs the Spark that ships inside pip's pyspark (`<pyspark>/bin/spark-class`, which
pip's wheel has although it lacks `sbin/start-master.sh`), so `settings.master =
"spark://127.0.0.1:PORT"` can be tried, tested and broken (`kill_worker`) without a
real cluster. Every JVM is started in its own process group; the cluster records each
one's pid together with the kernel's start time of that pid, so `stop` signals exactly
the processes it started, their children (executors, Python workers) included, and
never a later process that happens to reuse a pid.

Linux only: process trees are read from /proc. This module does not import pyspark.
"""
from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from sexstream.settings import conf_file
from streaming.jvmarchive import FAST_START_JVM

#: The log4j2 configuration of every Spark JVM sexstream starts on this machine.
LOG4J2_PROPERTIES = conf_file("log4j2.properties")
#: Master and worker JVMs only route messages: a quick start beats peak speed.
_DAEMON_JVM_FLAGS = FAST_START_JVM
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def pyspark_home() -> Path:
    """The folder of the installed pyspark package, which is a complete SPARK_HOME."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pyspark is not installed in this Python")
    return Path(list(spec.submodule_search_locations)[0])


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Daemon:
    """One JVM of the cluster.

    `start_time` is the kernel's start time of `pid` (clock ticks since boot, field 22 of
    /proc/PID/stat): a pid is ours only while it carries that start time.
    """

    role: str
    pid: int
    start_time: int
    port: int
    webui_port: int
    log: str


# --- processes, read from /proc ------------------------------------------------------

def _read_stat(pid: int | str) -> tuple[str, int, int, int] | None:
    """(state, ppid, process group, start time) of `pid`, or None if there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # the command name may hold spaces
    return fields[0], int(fields[1]), int(fields[2]), int(fields[19])


def _proc_table() -> dict[int, tuple[str, int, int, int]]:
    """`_read_stat` of every process on the machine, by pid."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _read_stat(entry)) is not None:
            table[int(entry)] = stat
    return table


def is_running(pid: int) -> bool:
    """True if `pid` exists and is not a zombie (a dead process not yet reaped)."""
    stat = _read_stat(pid)
    return stat is not None and stat[0] != "Z"


def process_tree(daemon: Daemon, table: dict[int, tuple[str, int, int, int]] | None = None
                 ) -> set[int]:
    """The live pids that belong to `daemon`: itself, its process group, their children."""
    table = _proc_table() if table is None else table
    leader = table.get(daemon.pid)
    if leader is not None and leader[3] != daemon.start_time:
        return set()  # the pid (and so the group id) now belongs to someone else
    pids = {pid for pid, (state, _, pgrp, start) in table.items()
            if pgrp == daemon.pid and start >= daemon.start_time and state != "Z"}
    if leader is not None and leader[0] != "Z":
        pids.add(daemon.pid)
    frontier = set(pids)
    while frontier:
        children = {pid for pid, (state, ppid, _, _) in table.items()
                    if ppid in frontier and pid not in pids and state != "Z"}
        pids |= children
        frontier = children
    return pids


def _signal_all(pids: set[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _wait_gone(pids: set[int], timeout: float) -> set[int]:
    """Wait until none of `pids` runs any more; return those still running."""
    deadline = time.monotonic() + timeout
    left = {p for p in pids if is_running(p)}
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = {p for p in left if is_running(p)}
    return left


def terminate(pids: set[int], grace: float = 10.0) -> None:
    """SIGTERM `pids`, then SIGKILL whatever still runs after `grace` seconds."""
    _signal_all(pids, signal.SIGTERM)
    left = _wait_gone(pids, grace)
    if left:
        _signal_all(left, signal.SIGKILL)
        _wait_gone(left, 5.0)


# --- the cluster ----------------------------------------------------------------------

class StandaloneCluster:
    """A master and `workers` workers bound to `host`, started by `start()` or `with`.

    Each worker offers `cores_per_worker` cores and `worker_memory` of executor memory
    (Spark's size syntax: "1g", "512m"). Executors' Python is `python` (the venv's by
    default). Logs and the workers' scratch space live in `workdir` (a new temp folder,
    removed by `stop`, if none is given). With `detach=True` the JVMs outlive this
    Python process (the CLI's way): stop them later with `StandaloneCluster.attach`.
    """

    def __init__(self, workers: int = 2, cores_per_worker: int = 1, worker_memory: str = "1g",
                 *, host: str = "127.0.0.1", python: str = sys.executable,
                 workdir: str | Path | None = None, daemon_memory: str = "256m",
                 start_timeout: float = 90.0, detach: bool = False) -> None:
        self.workers = workers
        self.cores_per_worker = cores_per_worker
        self.worker_memory = worker_memory
        self.host = host
        self.python = python
        self.daemon_memory = daemon_memory
        self.start_timeout = start_timeout
        self.detach = detach
        self.workdir: Path | None = Path(workdir) if workdir else None
        self._owns_workdir = workdir is None
        self.master: Daemon | None = None
        self.worker_daemons: list[Daemon] = []
        self._popens: dict[int, subprocess.Popen] = {}
        self._killed: list[Daemon] = []
        self.running = False

    # -- what callers read

    @property
    def master_url(self) -> str:
        """spark://HOST:PORT of the master."""
        return f"spark://{self.host}:{self._started().port}"

    @property
    def web_url(self) -> str:
        """The master's web UI; its JSON status is at `web_url + "/json/"`."""
        return f"http://{self.host}:{self._started().webui_port}"

    @property
    def worker_pids(self) -> list[int]:
        """Pids of every worker started, in start order (killed ones included)."""
        return [d.pid for d in self.worker_daemons]

    @property
    def pids(self) -> list[int]:
        """Pids of the master and of every worker started."""
        return ([self.master.pid] if self.master else []) + self.worker_pids

    def status(self) -> dict[str, Any]:
        """The master's JSON status (keys: url, aliveworkers, cores, workers, activeapps...)."""
        with _NO_PROXY.open(self.web_url + "/json/", timeout=5) as resp:
            return json.load(resp)

    def alive_worker_ports(self) -> set[int]:
        """RPC ports of the workers the master counts as ALIVE."""
        return {w["port"] for w in self.status().get("workers", []) if w.get("state") == "ALIVE"}

    # -- life cycle

    def start(self) -> "StandaloneCluster":
        """Start the master and the workers; return once all workers are ALIVE.

        A stopped cluster can be started again (new ports, new pids).
        """
        if self.running:
            raise RuntimeError("the cluster is already started")
        self.running = True
        self.master, self.worker_daemons, self._killed, self._popens = None, [], [], {}
        if self._owns_workdir:
            self.workdir = None
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="sexstream-spark-"))
        (self.workdir / "conf").mkdir(parents=True, exist_ok=True)
        if not self.detach:
            atexit.register(self.stop)
        try:
            self.master = self._launch("master", [
                "org.apache.spark.deploy.master.Master", "--host", self.host,
                "--port", str(free_port(self.host)), "--webui-port", str(free_port(self.host))])
            self._wait(lambda: self.status().get("status") == "ALIVE", "the master to be ALIVE")
            for _ in range(self.workers):
                self._launch_worker()
            self._wait(self._all_workers_alive, f"{self.workers} workers to register")
        except BaseException:
            self.stop()
            raise
        return self

    def start_worker(self, wait: bool = True) -> int:
        """Start one more worker; return its index in `worker_pids`."""
        daemon = self._launch_worker()
        if wait:
            self._wait(lambda: daemon.port in self.alive_worker_ports(),
                       f"worker {daemon.pid} to register")
        return len(self.worker_daemons) - 1

    def kill_worker(self, index: int, tree: bool = True, wait: bool = True) -> int:
        """SIGKILL worker `index` (a crashed node); return its pid.

        With `tree` its executors and their Python workers die with it; without, they are
        orphaned and exit once they notice their worker is gone. Either way `stop` still
        ends them. With `wait`, return once the master no longer counts it ALIVE.
        """
        daemon = self.worker_daemons[index]
        pids = process_tree(daemon) if tree else ({daemon.pid} if is_running(daemon.pid) else set())
        self._killed.append(daemon)
        _signal_all(pids, signal.SIGKILL)
        self._reap(daemon.pid, 5.0)
        _wait_gone(pids, 5.0)
        if wait:
            self._wait(lambda: daemon.port not in self.alive_worker_ports(),
                       f"the master to notice worker {daemon.pid} is gone")
        return daemon.pid

    def stop(self, grace: float = 10.0) -> None:
        """Stop every process this cluster started (and their children); remove the workdir.

        `pids`, `worker_pids` and `running_pids()` still answer afterwards.
        """
        if not self.detach:
            atexit.unregister(self.stop)
        for _ in range(3):  # a child forked while its parent was being stopped: stop it too
            left = set(self.running_pids())
            if not left:
                break
            terminate(left, grace)
        for pid in list(self._popens):
            self._reap(pid, 1.0)
        if self._owns_workdir and self.workdir is not None and self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.running = False

    def __enter__(self) -> "StandaloneCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- state file, for the CLI

    def state(self) -> dict[str, Any]:
        """Plain data that `attach` turns back into a cluster able to `stop`."""
        return {"master_url": self.master_url, "web_url": self.web_url, "host": self.host,
                "workdir": str(self.workdir), "owns_workdir": self._owns_workdir,
                "master": asdict(self.master) if self.master else None,
                "workers": [asdict(d) for d in self.worker_daemons],
                "killed": [asdict(d) for d in self._killed]}

    @classmethod
    def attach(cls, state: dict[str, Any]) -> "StandaloneCluster":
        """A cluster object for processes started elsewhere, from its `state()`."""
        cluster = cls(workers=len(state["workers"]), host=state["host"],
                      workdir=state["workdir"], detach=True)
        cluster._owns_workdir = bool(state.get("owns_workdir"))
        cluster.master = Daemon(**state["master"]) if state.get("master") else None
        cluster.worker_daemons = [Daemon(**d) for d in state["workers"]]
        cluster._killed = [Daemon(**d) for d in state.get("killed", [])]
        cluster.running = True
        return cluster

    def running_pids(self) -> list[int]:
        """Pids of this cluster's processes that still run, with their children: executors
        and Python workers, also those orphaned by `kill_worker(tree=False)`."""
        table = _proc_table()
        pids: set[int] = set()
        for daemon in self._daemons():
            pids |= process_tree(daemon, table)
        return sorted(pids)

    def _daemons(self) -> list[Daemon]:
        return ([self.master] if self.master else []) + self.worker_daemons

    def _started(self) -> Daemon:
        if self.master is None:
            raise RuntimeError("the cluster is not started")
        return self.master

    # -- internals

    def _launch_worker(self) -> Daemon:
        assert self.master is not None and self.workdir is not None
        index = len(self.worker_daemons)
        work = self.workdir / f"worker-{index}"
        work.mkdir(parents=True, exist_ok=True)
        daemon = self._launch(f"worker-{index}", [
            "org.apache.spark.deploy.worker.Worker", self.master_url, "--host", self.host,
            "--port", str(free_port(self.host)), "--webui-port", str(free_port(self.host)),
            "--cores", str(self.cores_per_worker), "--memory", self.worker_memory,
            "--work-dir", str(work)], extra_env={"SPARK_WORKER_DIR": str(work)})
        self.worker_daemons.append(daemon)
        return daemon

    def _launch(self, role: str, args: list[str], extra_env: dict[str, str] | None = None
                ) -> Daemon:
        assert self.workdir is not None
        home = pyspark_home()
        local = self.workdir / "local"
        local.mkdir(exist_ok=True)
        env = dict(os.environ)
        env.pop("PYSPARK_SUBMIT_ARGS", None)
        env.update({
            "SPARK_HOME": str(home),
            "SPARK_CONF_DIR": str(self.workdir / "conf"),
            "SPARK_LOCAL_IP": self.host,
            "SPARK_LOCAL_DIRS": str(local),
            "PYSPARK_PYTHON": self.python,
            "SPARK_DAEMON_MEMORY": self.daemon_memory,
            "SPARK_DAEMON_JAVA_OPTS": f"-Dlog4j2.configurationFile={LOG4J2_PROPERTIES.as_uri()} "
                                      + _DAEMON_JVM_FLAGS,
            "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false",
        })
        env.update(extra_env or {})
        log = self.workdir / f"{role}.log"
        with open(log, "ab") as out:
            popen = subprocess.Popen([str(home / "bin" / "spark-class"), *args], env=env,
                                     stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                     cwd=self.workdir, start_new_session=True)
        self._popens[popen.pid] = popen
        stat = _read_stat(popen.pid)
        if stat is None:
            raise RuntimeError(f"{role} exited at once: {_tail(log)}")
        port = int(args[args.index("--port") + 1])
        webui = int(args[args.index("--webui-port") + 1])
        return Daemon(role, popen.pid, stat[3], port, webui, str(log))

    def _all_workers_alive(self) -> bool:
        return {d.port for d in self.worker_daemons} <= self.alive_worker_ports()

    def _wait(self, condition: Callable[[], bool], what: str) -> None:
        """Poll `condition` until true; raise, with a log's tail, if a daemon dies first
        or `start_timeout` passes."""
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            dead = [d for d in self._daemons() if d not in self._killed and not is_running(d.pid)]
            if dead:
                raise RuntimeError(f"while waiting for {what}, {dead[0].role} (pid {dead[0].pid})"
                                   f" exited: {_tail(Path(dead[0].log))}")
            try:
                if condition():
                    return
            except OSError:
                pass  # the web UI is not up yet
            time.sleep(0.2)
        log = Path(self.master.log) if self.master else Path("master.log")
        raise TimeoutError(f"timed out after {self.start_timeout:.0f} s waiting for {what}; "
                           f"the master's log ends with:\n{_tail(log)}")

    def _reap(self, pid: int, timeout: float) -> None:
        popen = self._popens.pop(pid, None)
        if popen is not None:
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self._popens[pid] = popen


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {log})"
