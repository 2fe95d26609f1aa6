"""Poison inputs through the real daemon (issue 15): odd headers, fuzzed frames and a
worker killed mid-image, dropped beside good frames. The daemon stays up, every file
gets its row, the good frames are committed in the same batch, and nothing is replayed
forever."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import fitsfuzz
from conftest import real_images
from daemon_harness import Daemon
from fitsfuzz import CASES, mef, set_card
from sexstream import synthetic

pytestmark = pytest.mark.spark

DOUBLES = Path(__file__).parent / "doubles"
KEYS = "NUMBER,EXT_NUMBER,FLUX_ISO,X_IMAGE,Y_IMAGE,ALPHA_J2000,DELTA_J2000"


def stage(files: dict[str, bytes], folder: Path) -> list[Path]:
    """Write `files` into `folder` under hidden names, then rename them all in."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, data in files.items():
        (folder / f".{name}.part").write_bytes(data)
    for name in files:
        (folder / f".{name}.part").rename(folder / name)
        out.append(folder / name)
    return out


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> list[Path]:
    return synthetic.make_night(tmp_path_factory.mktemp("good"), 3, seed=41, nx=192, ny=192)


def test_poison_headers_and_fuzzed_frames_beside_good_frames_keep_the_daemon_up(tmp_path, good):
    base = mef(tmp_path)
    files = {name: set_card(base, 1, keyword, text) for name, (keyword, text, _) in CASES.items()}
    frames = fitsfuzz.bases(tmp_path / "bases", [p for p in real_images() if p.suffix == ".fits"][:4])
    for m in fitsfuzz.Fuzzer(frames, seed=1515).mutants(12):
        files[f"fuzz_{m.name}"] = m.data
    files.update({f"good_{i}.fits": p.read_bytes() for i, p in enumerate(good)})
    d = Daemon(tmp_path, extra=["--keys", KEYS, "--fitskeys", "FILTER", "--timeout", "20",
                                "--max-files-per-trigger", "64"])
    paths = stage(files, d.raw)
    try:
        d.start()
        images = d.wait_for_paths(paths, timeout=300)
        assert d.proc.poll() is None, d.tail()  # still up
        assert d.terminate() == 0, d.tail()
    finally:
        d.stop()
    images = images.set_index("path")
    assert len(images) == len(paths)  # one row each, nothing twice
    for name, (_, _, reason) in CASES.items():
        assert (images.loc[str(d.raw / name), ["status", "reason"]] == ["failed", reason]).all()
    good_rows = images.loc[[str(d.raw / f"good_{i}.fits") for i in range(3)]]
    assert (good_rows.status == "ok").all() and (good_rows.n_sources > 0).all()
    # the good frames were committed in the batch that also held the poison
    poison_batches = set(images.loc[[str(d.raw / n) for n in CASES], "batch_id"])
    assert set(good_rows.batch_id) <= poison_batches or len(set(images.batch_id)) == 1
    assert not any(str(r).startswith(("internal error", "no verdict within")) for r in images.reason)


def test_a_spark_worker_killed_mid_image_is_isolated_and_a_repeat_killer_quarantined(tmp_path, good):
    """'killonce' SIGKILLs the Spark Python worker measuring it once, 'killer' every
    time: both end as rows (ok, and quarantined), the good frames of the same batch
    commit, and the daemon neither dies nor replays the batch forever."""
    state = tmp_path / "state"
    state.mkdir()
    d = Daemon(tmp_path, extra=["--keys", KEYS, "--fitskeys", "FILTER", "--timeout", "20",
                                "--binary", str(DOUBLES / "sextractor_faulty")],
               env={"SEXSTREAM_DOUBLE_STATE": str(state)})
    files = {f"good_{i}.fits": p.read_bytes() for i, p in enumerate(good)}
    files["killonce.fits"] = good[0].read_bytes()
    files["killer.fits"] = good[1].read_bytes()
    paths = stage(files, d.raw)
    try:
        d.start()
        images = d.wait_for_paths(paths, timeout=300)
        assert d.proc.poll() is None, d.tail()
        assert d.terminate() == 0, d.tail()
    finally:
        d.stop()
    assert (state / "killonce.fits.killed").exists()
    images = images.set_index("path")
    assert len(images) == len(paths)
    assert images.loc[str(d.raw / "killonce.fits"), "status"] == "ok"
    killer = images.loc[str(d.raw / "killer.fits")]
    assert (killer.status, killer.reason) == ("failed", "quarantined: the worker measuring it died 2 times")
    assert (images.loc[[str(d.raw / f"good_{i}.fits") for i in range(3)], "status"] == "ok").all()
    assert len(set(images.batch_id)) == 1  # one batch, committed once
    log = d.log.read_text()
    assert "a worker died while measuring" in log
    assert "the streaming query failed" not in log
