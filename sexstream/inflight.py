"""In-flight markers: which images a task was measuring when the process running it died.

Before a task measures an image it writes a marker file into the batch's in-flight
folder, and removes it once the image has its outcome. A marker that stays was left
by a worker that died (killed, out of memory, a crash in a library) in the middle of
that image. The engine counts them: an image with a marker is measured again in a task
of its own, and an image that has made its worker die `QUARANTINE_DEATHS` times is
recorded "failed" without being measured again, so a poison file never makes a batch
fail forever.

The folder is `<sink>/_inflight/<app_id>/b<batch_id>-<run_id>`: on the sink's file
system, which every executor writes to anyway; `run_id` is one driver process, so the
markers of a driver that was killed as a whole (its workers with it) never count
against an image. The engine removes a batch's folder once the batch is committed, and
the folders of earlier driver runs when it starts.
"""
from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

import xxhash

from sexstream.extractor import QUARANTINE_DEATHS  # noqa: F401 (the same rule for workers)

#: In-flight folders of other apps older than this are swept (a checkpoint deleted).
STALE_S = 7 * 86400
ROOT = "_inflight"


def _key(path: str) -> str:
    return xxhash.xxh3_64_hexdigest(path.encode())


class Inflight:
    """The in-flight markers of one batch of one driver run."""

    def __init__(self, folder: str | os.PathLike[str]):
        self.folder = Path(folder)

    @classmethod
    def of(cls, sink: str | os.PathLike[str], app_id: str, batch_id: int, run_id: str) -> "Inflight":
        return cls(Path(sink) / ROOT / app_id / f"b{batch_id:08d}-{run_id}")

    def deaths(self, path: str) -> int:
        """How many workers died measuring `path` in this batch."""
        prefix = _key(path) + "-"
        try:
            return sum(1 for name in os.listdir(self.folder) if name.startswith(prefix))
        except FileNotFoundError:
            return 0

    def begin(self, path: str) -> Path:
        """Mark `path` as being measured; returns the marker to `end`."""
        self.folder.mkdir(parents=True, exist_ok=True)
        marker = self.folder / f"{_key(path)}-{uuid.uuid4().hex}"
        marker.write_text(path)
        return marker

    @staticmethod
    def end(marker: Path) -> None:
        marker.unlink(missing_ok=True)

    def suspects(self) -> dict[str, int]:
        """path -> deaths, for every path with a marker left."""
        out: dict[str, int] = {}
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return out
        for name in names:
            try:
                path = (self.folder / name).read_text()
            except OSError:
                continue
            out[path] = out.get(path, 0) + 1
        return out

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def sweep(sink: str | os.PathLike[str], app_id: str, run_id: str) -> None:
    """Remove the in-flight folders of `app_id` left by earlier driver runs, and those of
    other apps untouched for `STALE_S` seconds."""
    root = Path(sink) / ROOT
    try:
        apps = list(root.iterdir())
    except FileNotFoundError:
        return
    now = time.time()
    for app in apps:
        if app.name == app_id:
            for batch in app.iterdir():
                if not batch.name.endswith(f"-{run_id}"):
                    shutil.rmtree(batch, ignore_errors=True)
        else:
            try:
                if now - app.stat().st_mtime > STALE_S:
                    shutil.rmtree(app, ignore_errors=True)
            except OSError:
                pass
