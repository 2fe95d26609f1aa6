"""The daemon's health: its life cycle, the latest sample of its stream, and the one
rule that says whether it is ready -- for `/healthz`, `/readyz` and `sexstream status`.

A daemon is `starting` (building the Spark session, checking the executors, ... until
its query has made a first trigger), `running`, `stopping` (a signal: finishing the
batch in progress), then `stopped` or `failed`. While running, a monitor samples the
stream every second (`Health.sample`): is the query active, when did Spark last make a
trigger, is a batch in foreachBatch, how many arrivals wait (`BacklogClock`).

`readiness(beat, bounds, now)` is the rule, the same for the HTTP endpoint and for
`sexstream status --json`, which reads the beat the daemon writes to
`<checkpoint>/health.json` at every sample. Ready means: running, the query active, a
trigger within `bounds.trigger_age` seconds (or a batch in progress), and no arrival
waiting longer than `bounds.backlog_age` seconds. A beat read from the file that is
older than `bounds.stale` seconds belongs to a daemon that is gone (killed) or hung.

The backlog's age counts from when the daemon first saw an entry in the arrivals
journal (sampled every second); entries already waiting when it starts count from
its start.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

#: The life cycle, in order.
STATES = ("starting", "running", "stopping", "stopped", "failed")
#: The file a daemon keeps its latest beat in, inside its checkpoint folder.
FILE_NAME = "health.json"


@dataclass(frozen=True)
class Bounds:
    """The readiness bounds, seconds: the oldest arrival may wait `backlog_age`; Spark
    must have made a trigger within `trigger_age` (outside a batch); a beat read from
    the health file is stale (its daemon gone) after `stale`."""

    backlog_age: float = 600.0
    trigger_age: float = 60.0
    stale: float = 15.0


class BacklogClock:
    """How many journal entries wait, and since when the oldest of them does.

    `observe(last_seq, committed_seq, now)` is called once per sample: every time the
    journal's last sequence number grows, the clock notes (seq, now); the oldest entry
    not committed was first seen at the first note above `committed_seq`. Holds at most
    `max_marks` notes (beyond that, the older ones merge: the age errs on the old side).
    """

    def __init__(self, max_marks: int = 4096):
        self.max_marks = max_marks
        self._marks: deque[tuple[int, float]] = deque()
        self._top = -1

    def observe(self, last_seq: int, committed_seq: int, now: float) -> tuple[int, float | None]:
        """(entries waiting, epoch seconds the oldest was first seen or None)."""
        if last_seq > self._top:
            self._marks.append((last_seq, now))
            self._top = last_seq
            if len(self._marks) > self.max_marks:
                first = self._marks.popleft()
                self._marks[0] = (self._marks[0][0], first[1])
        while self._marks and self._marks[0][0] <= committed_seq:
            self._marks.popleft()
        waiting = max(0, last_seq - committed_seq)
        return waiting, (self._marks[0][1] if waiting and self._marks else None)


def error_line(text: str | None, limit: int = 500) -> str | None:
    """One line that says what an error was: for a message that quotes a Python traceback
    (a foreachBatch that raised, as Spark reports it), the exception's own line after
    the traceback ("RuntimeError: ..."); else the message's first line."""
    if not text:
        return text
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.rstrip().endswith("Traceback (most recent call last):"):
            exc = next((x for x in lines[i + 1:] if x.strip() and not x[0].isspace()), None)
            if exc:
                return exc.strip()[:limit]
    return lines[0][:limit]


def readiness(beat: dict, bounds: Bounds, now: float | None = None, *, heartbeat: bool = False) -> dict:
    """Whether the daemon of `beat` (a `Health.beat()`) is ready, and why not.

    Returns {"ready", "state", "reasons": [one line each], "checked_at", ages in
    seconds (None when unknown), "backlog"}. With `heartbeat` (a beat read from the
    health file), a beat older than `bounds.stale` makes it not ready: its daemon is
    gone or hung."""
    now = time.time() if now is None else now
    state = beat.get("state", "starting")
    reasons: list[str] = []

    def age(key: str) -> float | None:
        t = beat.get(key)
        return None if t is None else max(0.0, now - t)

    silent = age("updated_at")
    if heartbeat and state in ("starting", "running", "stopping") and silent is not None and silent > bounds.stale:
        reasons.append(f"no heartbeat for {silent:.0f} s (pid {beat.get('pid')} on {beat.get('host')}): "
                       "the daemon is gone or hung")
    trigger_age, backlog_age = age("last_trigger_at"), age("backlog_since")
    if state == "starting":
        reasons.append(f"starting: {beat.get('step') or 'on its way'}")
    elif state == "stopping":
        reasons.append(f"stopping: {beat.get('step') or 'finishing the batch in progress'}")
    elif state == "stopped":
        reasons.append(f"stopped (exit code {beat.get('exit_code')})")
    elif state == "failed":
        reasons.append(f"failed: {beat.get('error') or 'unknown error'}")
    else:
        if not beat.get("query_active", False):
            reasons.append("the streaming query is not active")
        if not beat.get("batch_in_progress") and trigger_age is not None and trigger_age > bounds.trigger_age:
            reasons.append(f"no trigger for {trigger_age:.0f} s (bound {bounds.trigger_age:g} s)")
        if backlog_age is not None and backlog_age > bounds.backlog_age:
            reasons.append(f"the oldest of {beat.get('backlog')} waiting arrival(s) has waited "
                           f"{backlog_age:.0f} s (bound {bounds.backlog_age:g} s)")
    return {"ready": not reasons, "state": state, "reasons": reasons, "checked_at": now,
            "backlog": beat.get("backlog"), "backlog_oldest_s": backlog_age,
            "last_trigger_age_s": trigger_age, "last_commit_age_s": age("last_commit_at"),
            "pid": beat.get("pid"), "host": beat.get("host")}


class Health:
    """One daemon's health, shared by its threads: the main loop moves the state, the
    monitor samples the stream, HTTP handlers read `readiness`. With `file`, every
    change and sample is also written there (atomically) for `sexstream status`."""

    def __init__(self, bounds: Bounds = Bounds(), file: str | os.PathLike[str] | None = None):
        self.bounds = bounds
        self.file = Path(file) if file is not None else None
        self._lock = threading.Lock()
        now = time.time()
        self._beat: dict = {"state": "starting", "step": "on its way", "pid": os.getpid(),
                            "host": socket.gethostname(), "started_at": now, "updated_at": now,
                            "query_active": None, "batch_in_progress": False, "last_trigger_at": None,
                            "last_commit_at": None, "backlog": None, "backlog_since": None,
                            "batches": 0, "error": None, "exit_code": None}

    # -- the life cycle (the daemon's main thread)

    def starting(self, step: str) -> None:
        """Still starting: `step` says what it is doing ("building the Spark session")."""
        self._update(state="starting", step=step)

    def running(self) -> None:
        self._update(state="running", step=None)

    def stopping(self, step: str) -> None:
        self._update(state="stopping", step=step)

    def stopped(self, exit_code: int = 0) -> None:
        self._update(state="stopped", step=None, exit_code=exit_code, query_active=False)

    def failed(self, error: str, exit_code: int = 1) -> None:
        self._update(state="failed", step=None, error=error_line(error), exit_code=exit_code, query_active=False)

    @property
    def state(self) -> str:
        with self._lock:
            return self._beat["state"]

    # -- samples (the monitor's thread)

    def sample(self, **fields) -> None:
        """Record a sample of the stream: any of query_active, batch_in_progress,
        last_trigger_at, last_commit_at (epoch s), backlog, backlog_since, batches."""
        unknown = set(fields) - set(self._beat)
        if unknown:
            raise TypeError(f"unknown health fields: {sorted(unknown)}")
        self._update(**fields)

    def beat(self) -> dict:
        """A copy of the latest state and sample."""
        with self._lock:
            return dict(self._beat)

    def readiness(self, now: float | None = None) -> dict:
        return readiness(self.beat(), self.bounds, now)

    def _update(self, **fields) -> None:
        with self._lock:  # written under the lock: the file never goes back in time
            self._beat.update(fields, updated_at=time.time())
            if self.file is not None:
                write_beat(self.file, self._beat, self.bounds)


def write_beat(path: Path, beat: dict, bounds: Bounds) -> None:
    """Write `beat` and `bounds` to `path` atomically (a reader never sees half a file)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps({**beat, "bounds": asdict(bounds)}))
        os.replace(tmp, path)
    except OSError:
        pass  # a full or read-only disk must not take the daemon down; status then says stale


def health_file(checkpoint: str | os.PathLike[str]) -> Path:
    """`<checkpoint>/health.json`: the beat of the daemon running with that checkpoint."""
    return Path(checkpoint) / FILE_NAME


def daemon_readiness(checkpoint: str | os.PathLike[str], now: float | None = None) -> dict:
    """The readiness of the daemon of `checkpoint`, from its health file (the same rule
    as its `/readyz`, plus the heartbeat's age); state "unknown" when none ran there."""
    path = health_file(checkpoint)
    try:
        beat = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"ready": False, "state": "unknown", "checkpoint": str(checkpoint),
                "reasons": [f"no daemon has run with checkpoint {checkpoint} (no {path.name})"]}
    bounds = Bounds(**{k: v for k, v in (beat.pop("bounds", None) or {}).items() if k in Bounds.__annotations__})
    out = readiness(beat, bounds, now, heartbeat=True)
    out["checkpoint"] = str(checkpoint)
    out["started_at"] = beat.get("started_at")
    out["updated_at"] = beat.get("updated_at")
    return out
