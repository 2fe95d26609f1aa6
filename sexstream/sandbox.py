"""Running one piece of per-image work in a forked child process, so that nothing an
image does can take the process that asked for it down or hold it forever.

`call(fn, *args, bound=s)` forks; the child runs `fn(phase, *args)` and sends its
return value back through a pipe. A `Worker` keeps its child for the calls that follow
(the images of one task) and forks a new one only after a child was lost. `phase(text)` lets the work say what it is doing
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
import gc
import os
import select
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, Pipe
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


def _serve(conn: Connection, parent: int, first: tuple) -> None:
    """The child's whole life: answer `first` (fn, args), then every request that comes
    through `conn` until None or the end of the pipe; never returns into the caller's
    code."""
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        _die_with_parent(parent)

        def phase(text: str) -> None:
            conn.send(("phase", text))

        request = first
        while request is not None:
            fn, args = request
            try:
                message = ("value", fn(phase, *args))
            except BaseException as exc:  # noqa: BLE001 (everything becomes the caller's outcome)
                message = ("raised", one_line(exc))
            try:
                conn.send(message)
            except Exception as exc:  # noqa: BLE001 (e.g. a value that cannot be pickled)
                conn.send(("raised", f"result not transferable: {one_line(exc)}"))
            try:
                request = conn.recv()
            except (EOFError, OSError):
                request = None
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


class Worker:
    """A forked child that runs calls one after the other: `call(fn, *args, bound=s)`.

    The child is forked at the first call (which it gets by inheritance: `fn` and `args`
    need not pickle) and kept while calls return or raise; later calls reach it pickled.
    A call that times out or whose child dies ends that child, and the next call forks
    a new one; a child is retired after `max_calls` calls. What a call does cannot reach
    the caller's process, as with a child per call, but the fork, the first touches of
    the caller's memory and the exit are paid once per child, not once per call (about
    20 ms of CPU per call from a Spark worker). A context manager: `close()` ends the
    child."""

    def __init__(self, max_calls: int = 64):
        self.max_calls = max(1, int(max_calls))
        self._pid = 0
        self._conn: Connection | None = None
        self._calls = 0

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _spawn(self, first: tuple) -> None:
        mine, theirs = Pipe()
        parent = os.getpid()
        gc.freeze()  # the child's collections leave the caller's objects (and their pages) alone
        try:
            pid = os.fork()
        except BaseException:
            gc.unfreeze()
            raise
        if pid == 0:
            mine.close()
            _serve(theirs, parent, first)
        gc.unfreeze()
        theirs.close()
        self._pid, self._conn, self._calls = pid, mine, 0

    def _forget(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._pid, self._conn = 0, None

    def _alive(self) -> bool:
        """The child is there to take a request (one that ended while idle is reaped)."""
        if not self._pid:
            return False
        try:
            done, _ = os.waitpid(self._pid, os.WNOHANG)
        except ChildProcessError:
            done = self._pid
        if done:
            self._forget()
            return False
        return True

    def _submit(self, fn: Callable, args: tuple) -> None:
        if self._alive() and self._calls >= self.max_calls:
            self.close()
        if self._alive():
            try:
                self._conn.send((fn, args))
                return
            except Exception:  # noqa: BLE001 (a request that does not pickle, a child gone): a new child
                self.close()
        self._spawn((fn, args))

    def call(self, fn: Callable, *args: Any, bound: float) -> Outcome:
        """Run `fn(phase, *args)` in the child; its `Outcome` within `bound` seconds (plus
        the time to transfer an answer that has started to arrive)."""
        self._submit(fn, args)
        self._calls += 1
        pid, conn = self._pid, self._conn
        deadline = time.monotonic() + bound
        phase, answer = None, None
        try:
            while answer is None:
                left = deadline - time.monotonic()
                if left <= 0 or not conn.poll(left):
                    self._kill()
                    return Outcome("timeout", phase=phase, pid=pid)
                try:
                    kind, payload = conn.recv()
                except (EOFError, OSError):
                    self._forget()
                    return Outcome("died", error=_status(_reap(pid, EXIT_GRACE_S)), phase=phase, pid=pid)
                if kind == "phase":
                    phase = payload
                else:
                    answer = (kind, payload)
        except BaseException:
            self._kill()
            raise
        kind, payload = answer
        if kind == "value":
            return Outcome("value", value=payload, phase=phase, pid=pid)
        return Outcome("raised", error=payload, phase=phase, pid=pid)

    def _kill(self) -> None:
        pid = self._pid
        self._forget()
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _reap(pid, 0.0)

    def close(self) -> None:
        """End the child: asked to exit, killed after `EXIT_GRACE_S`."""
        pid, conn = self._pid, self._conn
        if not pid:
            return
        try:
            conn.send(None)
        except Exception:  # noqa: BLE001 (already gone: reaped below)
            pass
        self._forget()
        _reap(pid, EXIT_GRACE_S)


def call(fn: Callable, *args: Any, bound: float) -> Outcome:
    """Run `fn(phase, *args)` in a child forked for this call alone (see `Worker`)."""
    with Worker(max_calls=1) as worker:
        return worker.call(fn, *args, bound=bound)
