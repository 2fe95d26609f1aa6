"""The private temp folders of per-image work: one per attempt, named after the process
that made it (`sexstream-<pid>-*`), removed when the attempt ends, and swept when the
process was killed before it could remove its own."""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path

#: Work dirs are `sexstream-<pid>-*` in the temp folder: the pid tells whose they are.
WORKDIR_NAME = re.compile(r"^sexstream-(\d+)-")


def make(tmp_root: str | None) -> Path:
    """A new work dir of this process in `tmp_root` (the default temp folder if None)."""
    return Path(tempfile.mkdtemp(prefix=f"sexstream-{os.getpid()}-", dir=tmp_root))


def remove_of(pid: int, tmp_root: str | None) -> list[str]:
    """Remove the work dirs of process `pid` (one that was just killed); their paths."""
    root = tmp_root or tempfile.gettempdir()
    removed = []
    try:
        names = os.listdir(root)
    except OSError:
        return removed
    prefix = f"sexstream-{pid}-"
    for entry in names:
        if entry.startswith(prefix):
            shutil.rmtree(os.path.join(root, entry), ignore_errors=True)
            removed.append(os.path.join(root, entry))
    return removed


def sweep(tmp_root: str | None, older_than: float, name: re.Pattern = WORKDIR_NAME) -> list[str]:
    """Remove the work dirs that processes which no longer exist left in `tmp_root`
    (the default temp folder if None) when killed mid-image; returns their paths.
    `name` matches such dirs, its first group being the pid of the process that made it.

    Only dirs older than `older_than` seconds go: a pid that looks dead here may be a
    live process of another PID namespace sharing the folder, and no live extraction
    keeps a work dir longer than its timeouts."""
    root = tmp_root or tempfile.gettempdir()
    removed = []
    try:
        names = os.listdir(root)
    except OSError:
        return removed
    now = time.time()
    for entry in names:
        m = name.match(entry)
        if m is None or int(m.group(1)) == os.getpid() or pid_alive(int(m.group(1))):
            continue
        path = os.path.join(root, entry)
        try:
            if now - os.stat(path).st_mtime < older_than:
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
