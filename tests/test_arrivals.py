"""Arrival safety without Spark: bad inputs are image records with reasons, transient
failures are retried and permanent ones are not, a file still being written never
becomes a catalog, and the arrival gate requeues exactly the paths the file source
cannot be trusted with (real SExtractor, real watchdog observer, real Delta tables)."""
from __future__ import annotations

import errno
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

import bad_inputs
from sexstream import arrivals, extractor, parts, process, settings, synthetic, transaction
from sexstream.requeue import Entry, write_manifest
from sexstream.retry import select_failures
from sexstream.schema import images_table
from sexstream.verdicts import Verdicts
from streaming.sources import requeue_source

DOUBLES = Path(__file__).parent / "doubles"


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return synthetic.make_exposure(tmp_path_factory.mktemp("good") / "good.fits", seed=5, nx=256, ny=512)


@pytest.fixture(scope="module")
def plan():
    return extractor.prepare(settings.load(max_image_bytes=bad_inputs.MAX_IMAGE_BYTES))


def test_every_bad_kind_is_a_record_with_a_reason_a_person_understands(tmp_path, good, plan):
    expected = bad_inputs.write_bad_inputs(tmp_path, good)
    assert len(expected) >= 20
    for name, want in expected.items():
        r = extractor.extract(tmp_path / name, plan)
        want.check(r.record)
        assert r.record["attempts"] == 1, name  # none of these is worth a retry
        if want.status != "ok":
            assert r.sources is None, name
    bad_inputs.GOOD.check(extractor.extract(good, plan).record)


def test_symlink_loop_and_dangling_symlink_fail_at_once_without_retries(tmp_path, plan):
    os.symlink("loop.fits", tmp_path / "loop.fits")
    os.symlink(tmp_path / "gone.fits", tmp_path / "dangling.fits")
    for name, want in (("loop.fits", bad_inputs.LOOP), ("dangling.fits", bad_inputs.DANGLING)):
        t0 = time.monotonic()
        r = extractor.extract(tmp_path / name, plan)
        want.check(r.record)
        assert r.record["attempts"] == 1 and time.monotonic() - t0 < 0.5  # no back-off sleeps


def test_a_crashing_sextractor_is_retried_with_back_off_then_recorded_with_its_signal(tmp_path, good):
    crash = tmp_path / "crash.fits"
    crash.write_bytes(good.read_bytes())
    plan = extractor.prepare(settings.load(binary=str(DOUBLES / "sextractor_faulty"), retries=2))
    t0 = time.monotonic()
    r = extractor.extract(crash, plan)
    assert r.record["status"] == "failed" and r.record["attempts"] == 3
    assert r.record["reason"] == "SExtractor killed by SIGSEGV: Setting catalog parameters (after 3 attempts)"
    assert time.monotonic() - t0 >= 1.5  # 0.5 s then 1 s of back-off between the tries
    assert extractor.extract(good, plan).record["status"] == "ok"  # the double is the real binary


def test_a_file_that_grows_during_extraction_is_incomplete_and_yields_no_sources(tmp_path, good):
    image = tmp_path / "growing.fits"
    image.write_bytes(good.read_bytes())
    plan = extractor.prepare(settings.load(binary=str(DOUBLES / "sextractor_appender"), retries=0))
    r = extractor.extract(image, plan)
    assert r.record["status"] == "incomplete" and r.sources is None and r.record["n_sources"] == 0
    n = good.stat().st_size
    assert r.record["reason"] == (f"file changed while it was being read ({n} -> {n + 2880} bytes): "
                                  "still being written?")
    assert r.record["content_hash"] == extractor.content_hash(good)  # the bytes it started from


def test_an_io_error_is_retried_and_the_image_then_measured(good, plan, monkeypatch, tmp_path):
    real = extractor.content_hash
    failed_once = tmp_path / "failed-once"  # a file: every attempt runs in its own process

    def flaky(path):  # the disk answers EIO once, as a flaky mount does
        if not failed_once.exists():
            failed_once.touch()
            raise OSError(errno.EIO, "Input/output error", str(path))
        return real(path)

    monkeypatch.setattr(extractor, "content_hash", flaky)
    r = extractor.extract(good, plan)
    assert (r.record["status"], r.record["attempts"], r.record["reason"]) == ("ok", 2, None)


def test_an_io_error_on_every_try_is_failed_after_the_retries(good, monkeypatch):
    def broken(path):
        raise OSError(errno.EIO, "Input/output error", str(path))

    monkeypatch.setattr(extractor, "content_hash", broken)
    r = extractor.extract(good, extractor.prepare(settings.load(retries=1)))
    assert (r.record["status"], r.record["attempts"]) == ("failed", 2)
    assert r.record["reason"] == "I/O error: Input/output error (after 2 attempts)"


def test_a_cube_with_a_degenerate_third_axis_is_a_plain_image(tmp_path, good, plan):
    data = fits.getdata(good).astype(np.float32)
    fits.PrimaryHDU(data[np.newaxis]).writeto(tmp_path / "naxis3_1.fits")
    r = extractor.extract(tmp_path / "naxis3_1.fits", plan)
    assert r.record["status"] == "ok" and r.record["n_sources"] > 0


def test_sextractor_messages_become_the_reason_without_progress_lines():
    stderr = ("\x1b[1M> \n\x1b[1A----- SExtractor 2.25.0 started on 2026-01-01 at 00:00:00 with 2 threads\n"
              "\n> Sorry, I don't know that kind of data.\n\n")
    assert process.tail(stderr) == "Sorry, I don't know that kind of data."


# --- the arrival gate ---------------------------------------------------------------

def write_verdict(sink_dir: Path, path: Path, status: str, *, batch_id: int, size=None, mtime=None):
    """Commit one images row for `path` the way the daemon does (one batch per call)."""
    st = path.stat() if path.exists() else None
    record = {"path": str(path), "status": status, "reason": None if status == "ok" else "x",
              "size": size if size is not None else (st.st_size if st else None),
              "mtime": mtime if mtime is not None else (
                  datetime.fromtimestamp(st.st_mtime, timezone.utc) if st else None),
              "content_hash": "0" * 32, "config_hash": "c", "n_sources": 0}
    now = datetime.now(timezone.utc)
    table = images_table([record], (), batch_id, now)
    part = parts.write_part(sink_dir / "images", table, batch_id=batch_id, task_tag="t00000")
    transaction.commit(sink_dir / "images", [part], app_id="test", batch_id=batch_id)


def manifest_lines(folder: Path) -> list[dict]:
    return [json.loads(line) for m in sorted(folder.glob("*.json")) for line in m.read_text().splitlines()]


def test_reconcile_requeues_files_without_a_row_about_their_current_bytes(tmp_path, good):
    raw, sink_dir = tmp_path / "raw", tmp_path / "sink"
    (raw / "night" / ".hidden").mkdir(parents=True)
    (raw / "_tmp").mkdir()
    done, stale, new = raw / "night" / "done.fits", raw / "night" / "stale.fits", raw / "new.fits.fz"
    for p in (done, stale, new):
        p.write_bytes(good.read_bytes()[:10_000])
    write_verdict(sink_dir, done, "ok", batch_id=0)
    write_verdict(sink_dir, stale, "incomplete", batch_id=1, size=2880)  # completed since
    (raw / "empty.FITS").write_bytes(b"")
    os.symlink("loop.fits", raw / "loop.fits")
    for ignored in (raw / "night" / ".hidden" / "a.fits", raw / "_tmp" / "b.fits", raw / ".c.fits",
                    raw / "_d.fits", raw / "e.fits.part", raw / "f.txt", raw / "g.fits._COPYING_"):
        ignored.write_bytes(b"SIMPLE")
    entries = arrivals.reconcile(str(raw), Verdicts(sink_dir / "images").refresh())
    assert {e.path: e.why for e in entries} == {
        str(stale): "newest row is incomplete for other bytes", str(new): "no images row",
        str(raw / "empty.FITS"): "no images row", str(raw / "loop.fits"): "no images row"}
    assert {e.path: e.length for e in entries}[str(raw / "loop.fits")] is None


def test_manifests_appear_whole_and_hold_at_most_max_lines(tmp_path):
    entries = [Entry(f"/raw/{i} ü;$(x).fits", i, 1.5 * i, force=i == 3) for i in range(10)]
    written = write_manifest(tmp_path, entries, max_lines=4)
    assert [len(p.read_text().splitlines()) for p in written] == [4, 4, 2]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    lines = manifest_lines(tmp_path)
    assert [x["path"] for x in lines] == [e.path for e in entries]
    assert [x["force"] for x in lines].count(True) == 1 and lines[5]["mtime"] == 7.5


@pytest.fixture
def gate(tmp_path):
    g = arrivals.ArrivalGate(str(tmp_path / "raw"), str(tmp_path / "requeue"),
                             Verdicts(tmp_path / "sink" / "images"), quiet=0.5, grace=3.0)
    yield g
    g.stop()


def wait_until(predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_gate_requeues_a_file_written_in_place_only_once_it_is_quiet(tmp_path, gate, good):
    gate.start()
    requeue = tmp_path / "requeue"
    target = tmp_path / "raw" / "slow.fits"
    content = good.read_bytes()
    with open(target, "wb") as fh:
        for i in range(0, len(content), len(content) // 10):
            fh.write(content[i:i + len(content) // 10])
            fh.flush()
            time.sleep(0.2)  # shorter than the quiet period
            assert not manifest_lines(requeue) if requeue.exists() else True
    t_done = time.monotonic()
    assert wait_until(lambda: requeue.exists() and manifest_lines(requeue))
    assert time.monotonic() - t_done >= 0.4
    (line,) = manifest_lines(requeue)
    assert (line["path"], line["length"], line["why"]) == (str(target), len(content), "written in place")


def test_gate_leaves_renamed_arrivals_to_the_listing_and_requeues_them_after_the_grace(tmp_path, gate, good):
    gate.start()
    requeue, raw = tmp_path / "requeue", tmp_path / "raw"
    covered, missed = raw / "covered.fits", raw / "missed.fits"
    for p in (covered, missed):
        tmp = raw / f".{p.name}.part"
        tmp.write_bytes(good.read_bytes())
        os.replace(tmp, p)
    t0 = time.monotonic()
    time.sleep(1.5)  # past the quiet period: still nothing, the file source has them complete
    assert not manifest_lines(requeue) if requeue.exists() else True
    write_verdict(tmp_path / "sink", covered, "ok", batch_id=0)  # as the listing's batch would
    assert wait_until(lambda: requeue.exists() and manifest_lines(requeue))
    assert time.monotonic() - t0 >= 2.9
    assert [(x["path"], x["why"]) for x in manifest_lines(requeue)] == [(str(missed), "arrived")]


def test_gate_requeues_an_empty_file_and_a_symlink_loop_that_the_listing_never_yields(tmp_path, gate):
    gate.start()
    requeue, raw = tmp_path / "requeue", tmp_path / "raw"
    (raw / "empty.fits").touch()
    os.symlink("loop.fits", raw / "loop.fits")
    assert wait_until(lambda: requeue.exists() and len(manifest_lines(requeue)) == 2, timeout=2.5)
    assert {x["path"] for x in manifest_lines(requeue)} == {str(raw / "empty.fits"), str(raw / "loop.fits")}


def test_retry_failed_selects_recorded_failures_by_reason(tmp_path, good):
    sink_dir = tmp_path / "sink"
    a, b, c = (tmp_path / f"{n}.fits" for n in "abc")
    for p in (a, b, c):
        p.write_bytes(good.read_bytes())
    write_verdict(sink_dir, a, "failed", batch_id=0)
    write_verdict(sink_dir, b, "failed", batch_id=1)
    write_verdict(sink_dir, c, "incomplete", batch_id=2)
    write_verdict(sink_dir, b, "ok", batch_id=3)  # newer verdict: no longer a failure
    assert [p for p, _, _ in select_failures(str(sink_dir))] == [str(a)]
    assert select_failures(str(sink_dir), reason="^nothing") == []
    assert [p for p, _, _ in select_failures(str(sink_dir), statuses=("failed", "incomplete"))] \
        == [str(a), str(c)]


def test_a_checkpoint_made_before_the_requeue_source_resumes_without_it(tmp_path):
    offsets = tmp_path / "offsets"
    offsets.mkdir()
    assert requeue_source(str(tmp_path)) == str(tmp_path / "requeue")  # no batch yet
    (offsets / "0").write_text('v1\n{"batchWatermarkMs":0}\n{"logOffset":0}\n')
    (offsets / "1").write_text('v1\n{"batchWatermarkMs":0}\n{"logOffset":1}\n')
    assert requeue_source(str(tmp_path)) is None  # Spark could not resume it with two
    (offsets / "2").write_text('v1\n{"batchWatermarkMs":0}\n{"logOffset":2}\n{"logOffset":0}\n')
    assert requeue_source(str(tmp_path)) == str(tmp_path / "requeue")
