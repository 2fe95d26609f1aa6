"""Running one piece of per-image work in a forked child process, so that nothing an
image does can take the process that asked for it down or hold it forever.

`call(fn, *args, bound=s)` forks; the child runs `fn(phase, *args)` and sends its
return value back through a pipe. `phase(text)` lets the work say what it is doing
("reading the headers", "running SExtractor"), so that a child cut at the bound is
described by where it was stuck. Whatever happens, the caller gets an `Outcome`:

- ``value``: the function returned (its value, pickled through the pipe);
- ``raised``: it raised; the exception's type and first line;
- ``timeout``: no answer within `bound` seconds: the child is killed (SIGKILL);
- ``died``: the child ended without an answer (killed by a signal, e.g. SIGKILL from
  the kernel's OOM killer, or a crash in a C library).

The child dies with its parent (PR_SET_PDEATHSIG), so a killed Spark worker leaves no
measurement running. Linux (fork and prctl); the work must not need the caller's threads.
"""
from __future__ import annotations

import ctypes
import os
import select
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Callable

PR_SET_PDEATHSIG = 1
#: Seconds a child that has answered gets to exit before it is killed.
EXIT_GRACE_S = 5.0


@dataclass(frozen=True)
class Outcome:
    """How a sandboxed call ended: `kind` is "value", "raised", "timeout" or "died"."""

    kind: str
    value: Any = None
    error: str | None = None  # "raised": "TypeError: ..."; "died": "killed by SIGKILL"
    phase: str | None = None  # the last phase the child reported
    pid: int = 0  # the child's pid (its work dirs are named after it)

    @property
    def ok(self) -> bool:
        return self.kind == "value"


def one_line(exc: BaseException) -> str:
    """`TypeError: message` with the message's first non-blank line only."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _die_with_parent(parent: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # no prctl: the child may outlive a killed parent, bounded by its own work
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _child(conn: Connection, parent: int, fn: Callable, args: tuple) -> None:
    """The child's whole life; never returns into the caller's code."""
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        _die_with_parent(parent)

        def phase(text: str) -> None:
            conn.send(("phase", text))

        try:
            message = ("value", fn(phase, *args))
        except BaseException as exc:  # noqa: BLE001 (everything becomes the caller's outcome)
            message = ("raised", one_line(exc))
        try:
            conn.send(message)
        except Exception as exc:  # noqa: BLE001 (e.g. a value that cannot be pickled)
            conn.send(("raised", f"result not transferable: {one_line(exc)}"))
        conn.close()
    finally:
        os._exit(0)


def _status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"killed by signal {sig}"
    return f"exited with status {os.WEXITSTATUS(status)} without an answer"


def _reap(pid: int, kill_after: float) -> int:
    """Wait for the child, killing it after `kill_after` seconds; its wait status."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    try:
        deadline = time.monotonic() + kill_after
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status
            left = deadline - time.monotonic()
            if left <= 0:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                return os.waitpid(pid, 0)[1]
            if fd is not None:
                select.select([fd], [], [], left)  # readable once the child has exited
            else:
                time.sleep(min(left, 0.002))
    finally:
        if fd is not None:
            os.close(fd)


def call(fn: Callable, *args: Any, bound: float) -> Outcome:
    """Run `fn(phase, *args)` in a forked child; its `Outcome` within `bound` seconds
    (plus the time to transfer an answer that has started to arrive)."""
    read_fd, write_fd = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(Connection(write_fd, readable=False), parent, fn, args)
    os.close(write_fd)
    conn = Connection(read_fd, writable=False)
    deadline = time.monotonic() + bound
    phase, answer = None, None
    try:
        while answer is None:
            left = deadline - time.monotonic()
            if left <= 0 or not conn.poll(left):
                os.kill(pid, signal.SIGKILL)
                _reap(pid, 0.0)
                return Outcome("timeout", phase=phase, pid=pid)
            try:
                kind, payload = conn.recv()
            except (EOFError, OSError):
                return Outcome("died", error=_status(_reap(pid, EXIT_GRACE_S)), phase=phase, pid=pid)
            if kind == "phase":
                phase = payload
            else:
                answer = (kind, payload)
    except BaseException:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _reap(pid, 0.0)
        raise
    finally:
        conn.close()
    _reap(pid, EXIT_GRACE_S)
    kind, payload = answer
    if kind == "value":
        return Outcome("value", value=payload, phase=phase, pid=pid)
    return Outcome("raised", error=payload, phase=phase, pid=pid)
