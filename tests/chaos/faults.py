"""The faults a chaos run injects, and the low-level means of injecting them.

Fault kinds (`KILL_KINDS` end the driver like a kill -9, `SIGTERM` asks it to stop):

- `kill9`                  kill -9 of the driver's process group at a random moment
                           (starting up, listing, extracting, writing, committing)
- `kill9_in_sextractor`    kill -9 while a SExtractor run is in progress
- `crash_after_parts`      the driver dies after the tasks wrote their Parquet parts,
                           before any commit (the engine hooks of chaos.driver)
- `crash_between_commits`  ... after the sources commit, before the images commit
- `crash_after_commit`     ... after both commits, before Spark's checkpoint
- `sigterm`                graceful stop at a random moment: the batch in progress ends
- `worker_loss`            a Spark worker (and its executor) killed on the standalone
                           cluster while the daemon runs; a new worker is started later
- `checkpoint_loss`        the checkpoint folder deleted while the daemon is down
- `disk_full`              the sink's file system fills up (see `diskfull`)
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from chaos.driver import HOOK_EXIT  # noqa: F401 (the fault kinds' exit status, for rounds)

#: In the order a schedule takes them: a short run gets the worst moments first.
KILL_KINDS = ("crash_between_commits", "kill9_in_sextractor", "kill9", "crash_after_commit",
              "crash_after_parts")
STOP_KINDS = (*KILL_KINDS, "sigterm")
#: The engine phase (sexstream.engine.PHASES) each crash kind dies at.
HOOKS = {"crash_after_parts": "parts_written", "crash_between_commits": "sources_committed",
         "crash_after_commit": "images_committed"}
EXTRA_KINDS = ("worker_loss", "checkpoint_loss", "disk_full")


@dataclass
class Fault:
    """One injected fault and what came of it.

    `outcome` is "ok" when the daemon reacted as it must (killed, stopped cleanly within
    the bound, ...), else a short description of what went differently.
    """

    round: int
    kind: str
    at_s: float | None = None  # seconds after the daemon's start
    detail: str = ""
    outcome: str = "ok"
    exit_code: int | None = None


def next_batch_id(checkpoint: Path) -> int:
    """The id of the first batch that will read NEW files when a daemon starts on
    `checkpoint`: one past the last planned batch (a planned but uncommitted batch is
    replayed first, with the files it already had)."""
    offsets = Path(checkpoint) / "offsets"
    ids = [int(p.name) for p in offsets.iterdir() if p.name.isdigit()] if offsets.is_dir() else []
    return max(ids) + 1 if ids else 0


def hook_flags(kind: str, batch_id: int) -> list[str]:
    """The driver flags that make it die at `kind`'s phase of batch `batch_id`."""
    return ["--crash-at", f"{HOOKS[kind]}:{batch_id}"]


def delete_checkpoint(checkpoint: Path) -> bool:
    """Remove the checkpoint folder (the daemon must be down); True if there was one."""
    if not Path(checkpoint).exists():
        return False
    shutil.rmtree(checkpoint)
    return True


class Tmpfs:
    """A tmpfs of a given size mounted at `mountpoint` (needs root and `mount`).

    `Tmpfs.unavailable()` says why it cannot be used here (None when it can).
    """

    def __init__(self, mountpoint: Path, size: str):
        self.mountpoint = Path(mountpoint)
        self.size = size
        self.mounted = False

    @staticmethod
    def unavailable(probe_dir: Path) -> str | None:
        """None if a tmpfs can be mounted under `probe_dir`, else the reason why not."""
        if os.geteuid() != 0:
            return "mounting a tmpfs needs root (run as root or skip the disk-full fault)"
        if not shutil.which("mount") or not shutil.which("umount"):
            return "the mount/umount commands are missing"
        probe = Tmpfs(Path(probe_dir) / ".tmpfs-probe", "64k")
        try:
            probe.mount()
        except RuntimeError as exc:
            return f"cannot mount a tmpfs here: {exc}"
        finally:
            probe.umount()
            if probe.mountpoint.is_dir():
                probe.mountpoint.rmdir()
        return None

    def mount(self) -> "Tmpfs":
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self._mount(["-t", "tmpfs", "-o", f"size={self.size},mode=0755", "tmpfs"])
        self.mounted = True
        return self

    def resize(self, size: str) -> None:
        """Grow (or shrink) the mounted file system in place; its files stay."""
        self._mount(["-o", f"remount,size={size}"])
        self.size = size

    def umount(self) -> None:
        if self.mounted or os.path.ismount(self.mountpoint):
            subprocess.run(["umount", str(self.mountpoint)], capture_output=True, text=True)
        self.mounted = False

    def usage(self) -> tuple[int, int]:
        """(bytes used, bytes total) of the file system."""
        st = os.statvfs(self.mountpoint)
        return (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_blocks * st.f_frsize

    def _mount(self, options: list[str]) -> None:
        proc = subprocess.run(["mount", *options, str(self.mountpoint)], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            raise RuntimeError((proc.stderr or proc.stdout).strip() or f"mount exited {proc.returncode}")

    def __enter__(self) -> "Tmpfs":
        return self.mount()

    def __exit__(self, *exc: object) -> None:
        self.umount()
