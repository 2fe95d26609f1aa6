"""The arrivals of a chaos run: what is dropped into the raw folder, and so the truth.

Every arrival is planned from a seed (its kind, its name, the seed of its pixels), so one
seed always plans the same stream. Kinds, and the verdict the images table must hold
for each (`EXPECTED`):

- `good`       a generated exposure: status ok, sources equal to a direct run
- `slow`       the same, but the faulty SExtractor double sleeps first (a window for
               a kill -9 "inside SExtractor"): ok
- `crash`      the double segfaults: failed, reason names SIGSEGV (retried first: a
               signal is a transient failure)
- `exit`       the double exits 1 with an error: failed, reason "exit 1"
- `hang`       the double never answers: failed, reason "timed out" (after --timeout)
- `text`       a text file named .fits: failed, "not a FITS file"
- `truncated`  a FITS file cut in its data (a download that died): incomplete
- `prealloc`   written in place by a preallocating downloader: the file has its full
               size at once (zeros), then its header and 40 % of the data, a 2.5 s stall,
               the rest: ok, sources of the final bytes only
- `overwrite`  a good image renamed into place, overwritten in place 1-4 s later by an
               image of another field (a reprocessed frame): ok, sources of the final
               bytes only, the older verdict kept but not current

Files are written the careful way (a hidden temporary name, then one rename), except
`prealloc` and the second version of `overwrite`, written in place on purpose;
`truncated` is a complete rename of a cut file.
`crash`, `exit`, `hang` and `slow` need the daemon to run `tests/doubles/sextractor_faulty`.
"""
from __future__ import annotations

import io
import os
import queue
import random
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from sexstream import synthetic

KINDS = ("good", "slow", "crash", "exit", "hang", "text", "truncated", "prealloc", "overwrite")
#: kind -> (status, a fragment the reason must contain; None: no reason).
EXPECTED: dict[str, tuple[str, str | None]] = {
    "good": ("ok", None), "slow": ("ok", None), "crash": ("failed", "SIGSEGV"),
    "exit": ("failed", "exit 1"), "hang": ("failed", "timed out"),
    "text": ("failed", "not a FITS file"), "truncated": ("incomplete", "truncated"),
    "prealloc": ("ok", None), "overwrite": ("ok", None),
}
#: Relative weights of the kinds in a planned stream.
DEFAULT_MIX = {"good": 60, "slow": 10, "crash": 4, "exit": 3, "hang": 3, "text": 4, "truncated": 6,
               "prealloc": 5, "overwrite": 5}
#: The stall of a `prealloc` writer after its header and 40 % of the data, seconds.
PREALLOC_STALL_S = 2.5
#: Images per sub-folder of the raw folder (the daemon lists recursively).
PER_FOLDER = 40


@dataclass(frozen=True)
class Arrival:
    """One planned file: `name` is relative to the raw folder; `seed` draws its pixels
    (`content` names a shared content for burst copies); `path` is set once dropped."""

    index: int
    kind: str
    name: str
    seed: int
    content: int | None = None
    path: str | None = None

    @property
    def expected(self) -> tuple[str, str | None]:
        """(status, reason fragment) the images table must hold for this file."""
        return EXPECTED[self.kind]


def plan(n: int, *, seed: int, mix: dict[str, int] | None = None, start: int = 0) -> list[Arrival]:
    """`n` arrivals drawn from `mix` (kind -> weight) with `seed`.

    When `n` allows, every kind of the mix comes at least once; the rest are drawn by
    weight. Names are `nightKK/IIIII_<kind>.fits`.
    """
    mix = {k: w for k, w in (mix or DEFAULT_MIX).items() if w > 0}
    unknown = set(mix) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown arrival kinds {sorted(unknown)}; known: {KINDS}")
    rng = random.Random(seed)
    kinds = list(mix) if n >= len(mix) else []
    kinds += rng.choices(list(mix), weights=list(mix.values()), k=n - len(kinds))
    rng.shuffle(kinds)
    out = []
    for i, kind in enumerate(kinds, start=start):
        out.append(Arrival(i, kind, f"night{i // PER_FOLDER:02d}/{i:05d}_{kind}.fits",
                           rng.randrange(2 ** 31)))
    return out


def _fits_bytes(seed: int, nx: int, ny: int) -> bytes:
    hdul, _ = synthetic.render(seed=seed, nx=nx, ny=ny, n_stars=max(3, nx * ny // 6000),
                               n_galaxies=max(2, nx * ny // 9000))
    buf = io.BytesIO()
    hdul.writeto(buf)
    return buf.getvalue()


def content_of(arrival: Arrival, nx: int, ny: int) -> bytes:
    """The bytes of `arrival`'s file."""
    if arrival.kind == "text":
        return b"This is not a FITS file, only text named like one.\n" * 60
    data = _fits_bytes(arrival.seed, nx, ny)
    if arrival.kind == "truncated":
        return data[: 2880 + (len(data) - 2880) // 2]  # the header, half of the data
    return data


def write_into(folder: Path, name: str, data: bytes) -> Path:
    """Write `data` as `folder/name`: a hidden temporary name first, then one rename."""
    dst = folder / name
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, dst)
    return dst


def write_in_place(dst: Path, data: bytes, *, stall_s: float, preallocate: bool = True) -> Path:
    """Write `data` at `dst` in place, as a download manager does: truncated (or created)
    at its full size first when `preallocate`, then the header and 40 % of the data, a
    stall of `stall_s` seconds, the rest; one open, one close."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    cut = int(len(data) * 0.4)
    with open(dst, "wb") as fh:
        if preallocate:
            fh.truncate(len(data))
        fh.write(data[:cut])
        fh.flush()
        time.sleep(stall_s)
        fh.write(data[cut:])
    return dst


class Feed:
    """The raw folder's arrivals and the record of what was dropped (the truth).

    Images are `nx` x `ny` pixels. `dropped` grows as files land; it is safe to read
    from another thread through `snapshot()`.
    """

    def __init__(self, raw: Path, *, nx: int = 256, ny: int = 256):
        self.raw = Path(raw)
        self.nx, self.ny = nx, ny
        self._lock = threading.Lock()
        self._dropped: list[Arrival] = []
        self._overwrites: list[threading.Timer] = []

    def drop(self, arrival: Arrival) -> Arrival:
        """Write one arrival into the raw folder; return it with its path. A `prealloc`
        file is written in place (this call lasts its stall); an `overwrite` is dropped
        whole, and overwritten in place a few seconds later by another thread
        (`settle()` waits for those)."""
        data = content_of(arrival, self.nx, self.ny)
        if arrival.kind == "prealloc":
            path = write_in_place(self.raw / arrival.name, data, stall_s=PREALLOC_STALL_S)
        else:
            path = write_into(self.raw, arrival.name, data)
        if arrival.kind == "overwrite":
            later = _fits_bytes(arrival.seed ^ 0x5EED, self.nx, self.ny)  # another field
            delay = 1.0 + (arrival.seed % 3000) / 1000.0
            t = threading.Timer(delay, write_in_place, (path, later), {"stall_s": 0.0, "preallocate": False})
            t.daemon = True
            t.start()
            with self._lock:
                self._overwrites.append(t)
        done = replace(arrival, path=str(path))
        with self._lock:
            self._dropped.append(done)
        return done

    def settle(self, timeout: float = 60.0) -> None:
        """Wait for every pending overwrite to be written."""
        with self._lock:
            pending = list(self._overwrites)
        for t in pending:
            t.join(timeout)

    def burst(self, n: int, *, seed: int, distinct: int = 8, staging: Path | None = None,
              folder: str = "burst") -> list[Arrival]:
        """Drop `n` good images at once: copies of `distinct` generated ones under `n`
        names, written to `staging` (default: a sibling of the raw folder) first, then
        renamed into `raw/folder` in one quick loop."""
        staging = Path(staging or self.raw.parent / "staging")
        staging.mkdir(parents=True, exist_ok=True)
        rng = random.Random(seed)
        seeds = [rng.randrange(2 ** 31) for _ in range(distinct)]
        blobs = [_fits_bytes(s, self.nx, self.ny) for s in seeds]
        planned = []
        for i in range(n):
            c = i % distinct
            a = Arrival(i, "good", f"{folder}/{i:05d}_b{c}.fits", seeds[c], content=c)
            (staging / f"{i:05d}").write_bytes(blobs[c])
            planned.append(a)
        (self.raw / folder).mkdir(parents=True, exist_ok=True)
        done = []
        for a in planned:
            path = self.raw / a.name
            os.replace(staging / f"{a.index:05d}", path)
            done.append(replace(a, path=str(path)))
        with self._lock:
            self._dropped.extend(done)
        return done

    def snapshot(self) -> list[Arrival]:
        """Every arrival dropped so far, in order."""
        with self._lock:
            return list(self._dropped)


@dataclass
class _Job:
    arrivals: list[Arrival]
    spread_s: float
    done: threading.Event = field(default_factory=threading.Event)


class Writer(threading.Thread):
    """Drops submitted arrivals at seeded random moments while the caller does other
    things (starts, kills and restarts the daemon)."""

    def __init__(self, feed: Feed, *, seed: int):
        super().__init__(name="chaos-writer", daemon=True)
        self.feed = feed
        self._rng = random.Random(seed)
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._pending: list[_Job] = []
        self.error: BaseException | None = None

    def submit(self, arrivals: list[Arrival], spread_s: float) -> None:
        """Drop `arrivals` over the next `spread_s` seconds (after earlier submissions)."""
        job = _Job(list(arrivals), spread_s)
        self._pending.append(job)
        self._jobs.put(job)

    def wait_idle(self, timeout: float = 600.0) -> None:
        """Return once every submitted arrival is dropped (re-raise a writer error)."""
        deadline = time.monotonic() + timeout
        for job in list(self._pending):
            if not job.done.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError("the writer did not drop its arrivals in time")
        self.feed.settle(max(1.0, deadline - time.monotonic()))
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self._jobs.put(None)
        self.join(30)

    def run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                moments = sorted(self._rng.uniform(0, job.spread_s) for _ in job.arrivals)
                t0 = time.monotonic()
                for at, arrival in zip(moments, job.arrivals):
                    time.sleep(max(0.0, t0 + at - time.monotonic()))
                    self.feed.drop(arrival)
            except BaseException as exc:  # reported by wait_idle
                self.error = exc
            finally:
                job.done.set()
