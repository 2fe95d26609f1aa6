"""Running an external program (SExtractor, PSFEx) on one image's files: in its own
session, killed with the process that runs it, and bounded in time."""
from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sexstream.errors import InputError

STDERR_TAIL = 3  # lines of a program's stderr kept in a failure reason


@dataclass(frozen=True)
class Finished:
    """A program that ran to its end: exit status and stderr (text)."""

    returncode: int
    stderr: str

    @property
    def tail(self) -> str:
        return tail(self.stderr)


def tail(text: str) -> str:
    """The last lines of a program's stderr: its messages ("> Sorry, I don't know that
    kind of data.") without the "> " prefix; progress lines (drawn with ANSI cursor
    moves) are left out."""
    lines = [ln.strip().lstrip(">").strip() for ln in text.replace("\r", "\n").splitlines()
             if "\x1b[" not in ln]
    return " | ".join([ln for ln in lines if ln][-STDERR_TAIL:])


@functools.lru_cache(maxsize=1)
def die_with_parent() -> tuple[str, ...]:
    """The prefix that makes a program die with the process running it (util-linux
    `setpriv --pdeathsig KILL`), or () where there is no setpriv.

    The program runs in its own session (so that a timeout can kill its process group),
    which also keeps it out of the signals that end a Spark worker: without this, a
    kill -9 of the driver or a lost executor leaves it running to its end, or forever
    when it hangs."""
    setpriv = shutil.which("setpriv")
    return (setpriv, "--pdeathsig", "KILL", "--") if setpriv else ()


def run(argv: list[str], cwd: Path, *, timeout: float, name: str, timeout_reason: str | None = None) -> Finished:
    """Run `argv` in `cwd`, stdout discarded; kill its whole process group after
    `timeout` seconds. Raises InputError (transient) for a timeout or a signal."""
    proc = subprocess.Popen([*die_with_parent(), *argv], cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=max(timeout, 0.001))
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise InputError(timeout_reason or f"{name} timed out after {timeout:g} s", transient=True) from None
    except BaseException:
        _kill_group(proc)
        raise
    stderr = err.decode("utf-8", "replace")
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        raise InputError(f"{name} killed by {sig}" + (f": {tail(stderr)}" if tail(stderr) else ""),
                         transient=True)
    return Finished(proc.returncode, stderr)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()
