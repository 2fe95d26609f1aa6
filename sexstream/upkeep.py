"""The daemon's own maintenance schedule: `sexstream compact` every `maintenance.every`
seconds, in a child process at the lowest CPU priority, so a sink that runs for months
stays readable and its commits cheap without a person (small files merged, sources
clustered, the Delta log cleaned, orphans vacuumed).

The compaction commits optimistically beside the daemon's own commits: a batch commit
that meets one is retried on the new snapshot (`sexstream.transaction.commit`), and a
compaction that meets a batch commit fails and runs again at the next slot.
"""
from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import threading
import time

log = logging.getLogger("sexstream")


class Upkeep:
    """Runs `compact` on `sink` every `every` seconds (never two at once) until stopped."""

    def __init__(self, sink: str, *, every: float, retention_hours: float, first_after: float | None = None,
                 log_retention_hours: float | None = None):
        self.sink = sink
        self.log_retention_hours = log_retention_hours
        self.every = float(every)
        self.retention_hours = float(retention_hours)
        self.first_after = self.every if first_after is None else float(first_after)
        self.runs = 0
        self.failures = 0
        self._stop = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    def argv(self) -> list[str]:
        nice = shutil.which("nice")
        prefix = [nice, "-n", "19"] if nice else []
        logs = [] if self.log_retention_hours is None else ["--log-retention-hours", str(self.log_retention_hours)]
        return [*prefix, sys.executable, "-m", "sexstream.cli", "compact", "--sink", self.sink,
                "--retention-hours", str(self.retention_hours), *logs]

    def start(self) -> "Upkeep":
        if self.every > 0:
            self._thread = threading.Thread(target=self._run, name="sexstream-upkeep", daemon=True)
            self._thread.start()
        return self

    def run_once(self) -> int:
        """One compaction, waited for; its exit status."""
        t0 = time.monotonic()
        self._proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
        out, _ = self._proc.communicate()
        code = self._proc.returncode
        self._proc = None
        self.runs += 1
        if code == 0:
            log.info("maintenance: compacted %s in %.1f s: %s", self.sink, time.monotonic() - t0,
                     "; ".join(line for line in out.splitlines() if line.strip()))
        else:
            self.failures += 1
            log.warning("maintenance: compact of %s exited %d (it runs again in %g s): %s", self.sink, code,
                        self.every, out.strip().splitlines()[-1] if out.strip() else "")
        return code

    def _run(self) -> None:
        wait = self.first_after
        while not self._stop.wait(wait):
            try:
                self.run_once()
            except OSError as exc:
                log.warning("maintenance: cannot run compact: %s", exc)
            wait = self.every

    def stop(self) -> None:
        self._stop.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()  # an interrupted optimize commits nothing
        if self._thread is not None:
            self._thread.join(30)
