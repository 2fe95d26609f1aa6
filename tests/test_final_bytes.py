"""A file's catalog is the catalog of its final bytes (issue 16), through the real daemon:
a preallocating writer that stalls, an overwrite in place by an image of another field,
a truncate-and-rewrite, and a stall longer than the bound. For each, the sources rows of
the path equal one run of the SExtractor binary itself on the final bytes."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from chaos.audit import Oracle
from chaos.feed import write_in_place
from daemon_harness import Daemon
from sexstream import extractor, settings, synthetic

pytestmark = pytest.mark.spark

KEYS = "NUMBER,EXT_NUMBER,FLUX_ISO,X_IMAGE,Y_IMAGE,ALPHA_J2000,DELTA_J2000,FLAGS"


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> list[bytes]:
    """Images of four different fields."""
    folder = tmp_path_factory.mktemp("fields")
    return [synthetic.make_exposure(folder / f"f{i}.fits", seed=100 + i, nx=512, ny=512,
                                    ra=10.0 + 20 * i, dec=-5.0 + 7 * i).read_bytes() for i in range(4)]


@pytest.fixture(scope="module")
def oracle():
    return Oracle(extractor.prepare(settings.load(keys=tuple(KEYS.split(",")), fitskeys=())))


def assert_final(d: Daemon, path: Path, oracle: Oracle) -> None:
    """The sources rows of `path` are those of one direct run on its bytes now."""
    want = oracle.rows(str(path))
    assert not isinstance(want, str), want
    src = d.sources()
    got = src[src.path == str(path)].sort_values(["EXT_NUMBER", "NUMBER"])
    assert len(got) == len(want) > 0, (path, len(got), len(want))
    for c in want.columns:
        assert np.array_equal(got[c].to_numpy(np.float64), want[c].to_numpy(np.float64), equal_nan=True), c


def current(images, path: Path):
    rows = images[images.path == str(path)].sort_values(["ingest_time", "batch_id"])
    return rows, rows[rows.current != False]  # noqa: E712


def test_every_way_of_writing_a_file_ends_in_the_catalog_of_its_final_bytes(tmp_path, frames, oracle):
    stall = tmp_path / "settings.toml"
    stall.write_text("[stream]\narrival_stall = 4.0\n")
    d = Daemon(tmp_path, extra=["--keys", KEYS, "--fitskeys", "", "--settings", str(stall)])
    raw = d.raw
    prealloc, overwritten, rewritten, stalled = (raw / n for n in ("prealloc.fits", "overwritten.fits",
                                                                    "rewritten.fits", "stalled.fits"))
    try:
        d.start()
        d.wait_for(lambda: "watching " in d.log.read_text(errors="replace"), 180, "the query to start")
        # a preallocating download: full size at once, a 2.5 s stall after 40 % of the data
        write_in_place(prealloc, frames[0], stall_s=2.5)
        # a frame renamed into place, then overwritten in place by another field's image
        tmp = raw / ".overwritten.fits.part"
        tmp.write_bytes(frames[1])
        os.replace(tmp, overwritten)
        d.wait_for_paths([overwritten, prealloc], timeout=180)
        write_in_place(overwritten, frames[2], stall_s=0.5, preallocate=False)
        # truncate-and-rewrite: the same file emptied, then written again, slowly
        tmp = raw / ".rewritten.fits.part"
        tmp.write_bytes(frames[3])
        os.replace(tmp, rewritten)
        d.wait_for_paths([rewritten], timeout=180)
        write_in_place(rewritten, frames[0], stall_s=1.0, preallocate=False)
        # a writer that stalls longer than the bound: incomplete, then measured once closed
        done = threading.Event()

        def slow_writer():
            write_in_place(stalled, frames[1], stall_s=8.0)
            done.set()

        threading.Thread(target=slow_writer, daemon=True).start()
        d.wait_for(lambda: str(stalled) in set(d.images().get("path", [])), 120,
                   "the stalled file's incomplete verdict")
        assert done.wait(30)

        def settled():
            images = d.images()
            return all(len(current(images, p)[1]) == 1 and current(images, p)[1].status.iloc[0] == "ok"
                       and current(images, p)[1].content_hash.iloc[0] == extractor.content_hash(p)
                       for p in (prealloc, overwritten, rewritten, stalled))

        d.wait_for(settled, 180, "every file's final bytes measured")
        assert d.terminate() == 0
    finally:
        d.stop()
    images = d.images()
    for p in (prealloc, overwritten, rewritten, stalled):
        assert_final(d, p, oracle)
    rows, cur = current(images, prealloc)
    assert list(rows.status) == ["ok"]  # never measured half-written
    rows, cur = current(images, overwritten)
    assert list(rows.status) == ["ok", "ok"] and list(rows.current) == [False, True]
    rows, cur = current(images, stalled)
    assert rows.status.iloc[0] == "incomplete" and rows.reason.iloc[0].startswith("still being written")
    assert list(rows.current) == [False] * (len(rows) - 1) + [True] and rows.status.iloc[-1] == "ok"
    src = d.sources()
    assert not src.duplicated(["path", "EXT_NUMBER", "NUMBER"]).any()
