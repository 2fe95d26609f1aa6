"""Arrival safety through a running `sexstream run` daemon (real Spark, real Delta, real
SExtractor): bad inputs become images rows with reasons while the good images of the
same batch commit; slow writers, in place or by rename, give exactly one ok row equal to
a direct run; a file that never completes stays "incomplete" until it does, also across
a restart; `sexstream retry-failed` measures a fixed failure again."""
# The arrival gate journals a file once its writer is done (README "Arrivals"); the
# `arrival_grace` these tests set is the old gate's and no longer used.
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import bad_inputs
from daemon_harness import SEXSTREAM, Daemon
from sexstream import extractor, settings, synthetic
from sexstream.journal import Entry, Journal, journal_folder

pytestmark = pytest.mark.spark

KEYS = "NUMBER,EXT_NUMBER,FLUX_ISO,X_IMAGE,Y_IMAGE,ALPHA_J2000,DELTA_J2000,FLAGS"
COMPARE = ["NUMBER", "EXT_NUMBER", "FLUX_ISO", "X_IMAGE", "Y_IMAGE", "FLAGS"]
#: Root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH obeys file modes: a mode-000 file is
#: unreadable to the daemon, as it would be to an unprivileged daemon user.
NO_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
#: A writer process: copies SRC to DST in CHUNKS pieces over SECONDS, then renames DST to
#: FINAL when given (a download written in place, or under a temporary name).
WRITER = """
import os, sys, time
src, dst, seconds, chunks = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
final = sys.argv[5] if len(sys.argv) > 5 else None
data = open(src, "rb").read()
step = -(-len(data) // chunks)
with open(dst, "wb") as fh:
    for i in range(0, len(data), step):
        fh.write(data[i:i + step]); fh.flush()
        time.sleep(seconds / chunks)
if final:
    os.replace(dst, final)
"""


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return synthetic.make_exposure(tmp_path_factory.mktemp("good") / "good.fits", seed=31, nx=256, ny=512)


def started(d: Daemon) -> None:
    d.wait_for(lambda: "watching " in d.log.read_text(errors="replace"), 180, "the query to start")


def settings_file(root: Path, **stream) -> Path:
    toml = root / "arrivals.toml"
    toml.write_text("[stream]\n" + "".join(f"{k} = {v}\n" for k, v in stream.items()))
    return toml


def direct(path: Path) -> pd.DataFrame:
    plan = extractor.prepare(settings.load(keys=tuple(KEYS.split(",")), fitskeys=()))
    r = extractor.extract(path, plan)
    assert r.record["status"] == "ok", r.record["reason"]
    return r.sources.to_pandas()


def assert_sources_equal_direct(d: Daemon, image_id: str, path: Path) -> None:
    src = d.sources()
    got = src[src.image_id == image_id].sort_values(["EXT_NUMBER", "NUMBER"])[COMPARE]
    want = direct(path).sort_values(["EXT_NUMBER", "NUMBER"])[COMPARE]
    assert len(got) == len(want) > 0
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True))


def rows_of(images: pd.DataFrame, path: Path) -> pd.DataFrame:
    return images[images.path == str(path)].sort_values(["ingest_time", "batch_id"])


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is absent")
def test_bad_inputs_are_rows_with_reasons_and_the_good_images_of_their_batch_commit(tmp_path, good):
    # a short grace: the gate also requeues the renamed-in files, mostly before their batch
    # commits; those redundant requeues must never add a row
    d = Daemon(tmp_path, wrapper=NO_DAC, extra=[
        "--keys", KEYS, "--fitskeys", "FILTER", "--max-image-bytes", str(bad_inputs.MAX_IMAGE_BYTES),
        "--settings", str(settings_file(tmp_path, arrival_grace=3.0))])
    try:
        d.start()
        stage = tmp_path / "stage" / "night 1; $(x)"
        expected = bad_inputs.write_bad_inputs(stage, good)
        for name in ["good.fits", *bad_inputs.AWKWARD_NAMES]:
            shutil.copyfile(good, stage / name)
            expected[name] = bad_inputs.GOOD
        shutil.copyfile(good, stage / "unreadable.fits")
        os.chmod(stage / "unreadable.fits", 0)
        expected["unreadable.fits"] = bad_inputs.UNREADABLE
        os.symlink("loop.fits", stage / "loop.fits")
        os.symlink(stage / "nowhere.fits", stage / "dangling.fits")
        expected.update({"loop.fits": bad_inputs.LOOP, "dangling.fits": bad_inputs.DANGLING})
        started(d)
        night = d.raw / stage.name
        os.rename(stage, night)  # the whole night arrives at once: one listing, one batch
        vanished = night / "vanished.fits"  # journaled, then deleted before its task
        Journal(journal_folder(d.checkpoint)).append([Entry(str(vanished), 532800, time.time())])
        expected["vanished.fits"] = bad_inputs.VANISHED
        paths = {night / name: want for name, want in expected.items()}
        images = d.wait_for_paths(paths, timeout=300)

        assert not images.duplicated("path").any(), images[images.path.duplicated(keep=False)]
        for path, want in paths.items():
            (row,) = images[images.path == str(path)].to_dict("records")
            want.check(row)
        # the files the listing yields shared one batch with the good images, which committed
        listed = images[~images.path.str.endswith(("/empty.fits", "/loop.fits", "/dangling.fits",
                                                   "/vanished.fits"))]
        assert listed["batch_id"].nunique() == 1, listed.groupby("batch_id").path.apply(list)
        sources = d.sources()
        per_path = sources.groupby("path").size()
        for row in images.itertuples():
            assert per_path.get(row.path, 0) == row.n_sources, row.path
        assert_sources_equal_direct(d, rows_of(images, night / "$(touch pwned).fits").image_id.iloc[0],
                                    good)
        assert not (tmp_path / "pwned").exists() and not (d.root / "pwned").exists()

        # the user fixes the permission and asks for a retry of that failure only
        os.chmod(night / "unreadable.fits", 0o644)
        out = subprocess.run([*SEXSTREAM, "retry-failed", "--sink", str(d.sink), "--checkpoint",
                              str(d.checkpoint), "--reason", "not readable"],
                             capture_output=True, text=True, check=True).stdout
        assert "1 image(s) requeued" in out, out
        d.wait_for(lambda: (rows_of(d.images(), night / "unreadable.fits").status == "ok").any(),
                   120, "the retried image")
        after = d.raw / "after.fits"  # and the stream goes on
        shutil.copyfile(good, after)
        images = d.wait_for_paths([after], timeout=120)
        assert d.terminate() == 0
    finally:
        d.stop()
    retried = rows_of(images, night / "unreadable.fits")
    assert list(retried.status) == ["failed", "ok"]
    assert (images[images.path != str(night / "unreadable.fits")].groupby("path").size() == 1).all()
    # the raw files were never modified, moved or deleted by the daemon
    assert sorted(p.name for p in night.iterdir()) == sorted(set(expected) - {"vanished.fits"})
    assert (night / "good.fits").read_bytes() == good.read_bytes()


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    """A 2048 x 4612 float32 exposure, about 38 MB."""
    return synthetic.make_exposure(tmp_path_factory.mktemp("big") / "big.fits", seed=41, nx=2048, ny=4612)


def writer(src: Path, dst: Path, seconds: float, chunks: int, final: Path | None = None):
    argv = [sys.executable, "-c", WRITER, str(src), str(dst), str(seconds), str(chunks)]
    return subprocess.Popen(argv + ([str(final)] if final else []))


@pytest.mark.slow
def test_slow_writers_in_place_and_by_rename_give_one_ok_row_equal_to_a_direct_run(tmp_path, big):
    d = Daemon(tmp_path, extra=["--keys", KEYS, "--fitskeys", "",
                                "--settings", str(settings_file(tmp_path, arrival_grace=4.0))])
    in_place, renamed = d.raw / "in_place.fits", d.raw / "renamed.fits"
    try:
        d.start()
        started(d)
        writers = [writer(big, in_place, 20, 100),
                   writer(big, d.raw / "renamed.fits.part", 20, 100, final=renamed)]
        assert [w.wait(120) for w in writers] == [0, 0]
        done = lambda: {(str(p), "ok") for p in (in_place, renamed)} <= set(  # noqa: E731
            zip(d.images().get("path", []), d.images().get("status", [])))
        d.wait_for(done, 240, "ok rows for both written files")
        time.sleep(8)  # past the quiet period and the grace: no late duplicate may appear
        assert d.terminate() == 0
    finally:
        d.stop()
        for w in writers:
            if w.poll() is None:
                w.kill()
    images = d.images()
    final_hash = extractor.content_hash(big)
    rows = rows_of(images, in_place)
    assert (rows.status == "ok").sum() == 1 and rows.status.iloc[-1] == "ok", rows[["status", "reason"]]
    assert set(rows.status) <= {"ok", "incomplete"}
    assert not rows.content_hash.duplicated().any()  # one row per (path, bytes) verdict
    assert rows.content_hash.iloc[-1] == final_hash
    for reason in rows[rows.status == "incomplete"].reason:
        assert reason.startswith(("truncated: ", "file changed while it was being read")), reason
    (ok_row,) = rows_of(images, renamed).itertuples()  # renamed into place: listed complete, once
    assert (ok_row.status, ok_row.content_hash) == ("ok", final_hash)
    assert_sources_equal_direct(d, rows.image_id.iloc[-1], big)
    assert_sources_equal_direct(d, ok_row.image_id, big)
    log = d.log.read_text()
    print(f"in place: {list(rows.status)}; batches: {log.count(' INFO batch ')}")


def atomic(path: Path, content: bytes) -> Path:
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(content)
    os.replace(tmp, path)
    return path


@pytest.mark.slow
def test_a_file_that_never_completes_stays_incomplete_until_completed_also_across_a_restart(tmp_path, good):
    d = Daemon(tmp_path, extra=["--keys", KEYS, "--fitskeys", "",
                                "--settings", str(settings_file(tmp_path, arrival_grace=4.0))])
    content = good.read_bytes()
    half = len(content) // 2
    stalled, late, hollow = d.raw / "stalled.fits", d.raw / "late.fits", d.raw / "hollow.fits"
    try:
        d.start()
        started(d)
        atomic(stalled, content[:half])  # the download stops half-way
        atomic(late, content[:half])
        atomic(hollow, b"")  # created empty: the file source yields no row for it at all
        images = d.wait_for_paths([stalled, late, hollow], timeout=180)
        time.sleep(4)  # past the quiet period: requeues of unchanged bytes add no row
        images = d.images()
        truncated = f"truncated: header declares {len(content)} bytes, file has {half}"
        for p, reason in ((stalled, truncated), (late, truncated), (hollow, "empty file (0 bytes)")):
            assert [tuple(r) for r in rows_of(images, p)[["status", "reason"]].values] == \
                [("incomplete", reason)], p
        with open(stalled, "ab") as fh:  # the download resumes, in place
            fh.write(content[half:])
        with open(hollow, "wb") as fh:
            fh.write(content)
        d.wait_for(lambda: {str(stalled), str(hollow)} <= set(d.images().query("status == 'ok'").path),
                   180, "the completed files")
        assert d.terminate() == 0
        with open(late, "ab") as fh:  # completed while the daemon is down
            fh.write(content[half:])
        time.sleep(1.5)  # past the quiet second: the start-up reconciliation's, not left to the watch
        d.start()
        d.wait_for(lambda: str(late) in set(d.images().query("status == 'ok'").path), 180,
                   "the file completed while the daemon was down")
        assert d.terminate() == 0
    finally:
        d.stop()
    images = d.images()
    for p in (stalled, late, hollow):
        rows = rows_of(images, p)
        assert list(rows.status) == ["incomplete", "ok"], (p, rows[["status", "reason"]])
        assert_sources_equal_direct(d, rows.image_id.iloc[-1], good)
    assert "start-up reconciliation journaled 1 file(s)" in d.log.read_text()
