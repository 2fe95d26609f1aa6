"""Arrival safety without Spark: bad inputs are image records with reasons, transient
failures are retried and permanent ones are not, a file still being written never
becomes a catalog, and the arrival gate journals every image once its writer is done
with it (real SExtractor, real watchdog observer, real Delta tables, the real index)."""
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
from sexstream.index import Index
from sexstream.journal import Entry, Journal
from sexstream.retry import select_failures
from sexstream.schema import images_table
from streaming.sources import retire_old_checkpoint

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

CONFIG = "c"


def write_verdict(sink_dir: Path, path: Path, status: str, *, batch_id: int, size=None, mtime=None):
    """Commit one images row for `path` the way the daemon does (one batch per call)."""
    st = path.stat() if path.exists() else None
    record = {"path": str(path), "status": status, "reason": None if status == "ok" else "x",
              "size": size if size is not None else (st.st_size if st else None),
              "mtime": mtime if mtime is not None else (
                  datetime.fromtimestamp(st.st_mtime, timezone.utc) if st else None),
              "content_hash": "0" * 32, "config_hash": CONFIG, "n_sources": 0}
    now = datetime.now(timezone.utc)
    table = images_table([record], (), batch_id, now)
    part = parts.write_part(sink_dir / "images", table, batch_id=batch_id, task_tag="t00000")
    transaction.commit(sink_dir / "images", [part], app_id="test", batch_id=batch_id)


def journaled(folder: Path) -> list[Entry]:
    return Journal(folder).read(0, 10 ** 9)


def test_reconcile_journals_files_without_a_verdict_about_their_current_bytes(tmp_path, good):
    raw, sink_dir = tmp_path / "raw", tmp_path / "sink"
    (raw / "night" / ".hidden").mkdir(parents=True)
    (raw / "_tmp").mkdir()
    done, stale, new = raw / "night" / "done.fits", raw / "night" / "stale.fits", raw / "new.fits.fz"
    for p in (done, stale, new):
        p.write_bytes(good.read_bytes()[:10_000])
    old = time.time() - 60
    write_verdict(sink_dir, done, "ok", batch_id=0)
    write_verdict(sink_dir, stale, "incomplete", batch_id=1, size=2880)  # completed since
    (raw / "empty.FITS").write_bytes(b"")
    os.symlink("loop.fits", raw / "loop.fits")
    for ignored in (raw / "night" / ".hidden" / "a.fits", raw / "_tmp" / "b.fits", raw / ".c.fits",
                    raw / "_d.fits", raw / "e.fits.part", raw / "f.txt", raw / "g.fits._COPYING_"):
        ignored.write_bytes(b"SIMPLE")
    for p in raw.rglob("*"):
        if p.is_file() and not p.is_symlink():
            os.utime(p, (old, old))  # older than the quiet period: no writer holds them
    index = Index(sink_dir)
    index.sync(sink_dir / "images")
    gate = arrivals.ArrivalGate(str(raw), Journal(tmp_path / "journal"), index, CONFIG)
    write_verdict(sink_dir, done, "ok", batch_id=2)  # mtime moved: re-verdict its bytes
    index.sync(sink_dir / "images")
    assert gate.reconcile() == 4
    entries = journaled(tmp_path / "journal")
    assert {e.path: e.why for e in entries} == {
        str(stale): "incomplete for other bytes", str(new): "no verdict",
        str(raw / "empty.FITS"): "no verdict", str(raw / "loop.fits"): "no verdict"}
    assert [e.seq for e in entries] == [1, 2, 3, 4]
    assert {e.path: e.size for e in entries}[str(raw / "loop.fits")] is None
    assert gate.reconcile() == 0  # journaled once: not again before its verdict


def test_journal_numbers_entries_keeps_them_whole_and_retires_committed_segments(tmp_path, monkeypatch):
    from sexstream import journal as journal_mod

    monkeypatch.setattr(journal_mod, "SEGMENT_ENTRIES", 4)
    j = Journal(tmp_path)
    entries = [Entry(f"/raw/{i} ü;$(x).fits", i, 1.5 * i, force=i == 3) for i in range(10)]
    written = j.append(entries[:4]) + j.append(entries[4:8]) + j.append(entries[8:])
    assert [e.seq for e in written] == list(range(1, 11)) and j.last_seq() == 10
    assert [e.path for e in j.read(2, 5)] == [f"/raw/{i} ü;$(x).fits" for i in range(2, 5)]
    assert [e.force for e in j.read(0, 10)].count(True) == 1 and j.read(5, 6)[0].mtime == 7.5
    newest = j.segments()[-1][1]
    with open(newest, "a") as fh:
        fh.write('{"path": "/raw/cut", "se')  # a crash mid-line
    assert j.last_seq() == 10 and len(j.read(0, 100)) == 10
    assert [e.seq for e in j.append([Entry("/raw/next.fits")])] == [11]
    assert [e.path for e in j.read(10, 11)] == ["/raw/next.fits"]
    assert [first for first, _ in j.segments()] == [1, 5, 9]
    assert j.retire(7) == 1 and j.read(0, 11)[0].seq == 5  # segments wholly <= 7 only
    assert j.retire(11) == 1 and j.last_seq() == 11  # the newest segment always stays
    assert [e.seq for e in j.read(0, 11)] == [9, 10, 11]


def test_journal_appends_from_two_processes_get_distinct_sequence_numbers(tmp_path):
    import multiprocessing

    def writer(tag):
        j = Journal(tmp_path)
        for i in range(50):
            j.append([Entry(f"/raw/{tag}{i}.fits")])

    procs = [multiprocessing.get_context("fork").Process(target=writer, args=(t,)) for t in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    entries = Journal(tmp_path).read(0, 1000)
    assert sorted(e.seq for e in entries) == list(range(1, 101))
    assert len({e.path for e in entries}) == 100


@pytest.fixture
def gate(tmp_path):
    gates = []

    def make(**kwargs):
        g = arrivals.ArrivalGate(str(tmp_path / "raw"), Journal(tmp_path / "journal"), Index(tmp_path / "sink"),
                                 CONFIG, **{"quiet": 0.5, "stall": 30.0, **kwargs})
        gates.append(g)
        return g.start(reconcile_first=False)

    yield make
    for g in gates:
        g.stop()


def wait_until(predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_a_file_written_in_place_is_journaled_when_its_writer_closes_it_whatever_its_stalls(
        tmp_path, gate, good):
    """A preallocating writer: the file has its full size at once, then its bytes come,
    with a stall longer than the quiet period after the header and 40 % of the data."""
    gate(mode="events")
    target = tmp_path / "raw" / "prealloc.fits"
    content = good.read_bytes()
    with open(target, "wb") as fh:
        fh.truncate(len(content))  # full size, all zeros
        fh.write(content[: int(len(content) * 0.4)])
        fh.flush()
        time.sleep(2.0)  # four quiet periods: still held open
        assert journaled(tmp_path / "journal") == []
        fh.write(content[int(len(content) * 0.4):])
        fh.flush()
        t_close = time.monotonic()
    assert wait_until(lambda: journaled(tmp_path / "journal"))
    assert time.monotonic() - t_close < 1.0
    (e,) = journaled(tmp_path / "journal")
    assert (e.path, e.size, e.why, e.stalled) == (str(target), len(content), "written", False)


def test_a_renamed_or_linked_arrival_is_journaled_at_once(tmp_path, gate, good):
    gate(mode="events")
    raw = tmp_path / "raw"
    tmp = raw / ".moved.fits.part"
    tmp.write_bytes(good.read_bytes())
    t0 = time.monotonic()
    os.replace(tmp, raw / "moved.fits")
    assert wait_until(lambda: journaled(tmp_path / "journal"))
    assert time.monotonic() - t0 < 0.4
    os.link(raw / "moved.fits", raw / "linked.fits")
    os.symlink(raw / "moved.fits", raw / "symlinked.fits")
    (raw / "empty.fits").touch()
    assert wait_until(lambda: len(journaled(tmp_path / "journal")) == 4, timeout=5)
    assert {e.path: e.why for e in journaled(tmp_path / "journal")} == {
        str(raw / "moved.fits"): "arrived", str(raw / "linked.fits"): "arrived",
        str(raw / "symlinked.fits"): "arrived", str(raw / "empty.fits"): "written"}  # touch closes it
    outside = tmp_path / "staging.fits"  # renamed in from outside the watched tree
    outside.write_bytes(good.read_bytes())
    t0 = time.monotonic()
    os.replace(outside, raw / "staged.fits")
    assert wait_until(lambda: len(journaled(tmp_path / "journal")) == 5)
    assert time.monotonic() - t0 < 0.5 and journaled(tmp_path / "journal")[-1].why == "arrived"


def test_a_writer_that_holds_a_file_past_the_stall_bound_makes_it_stalled(tmp_path, gate, good):
    gate(mode="events", stall=1.5)
    target = tmp_path / "raw" / "stuck.fits"
    with open(target, "wb") as fh:
        fh.write(good.read_bytes()[:100_000])
        fh.flush()
        assert wait_until(lambda: journaled(tmp_path / "journal"), timeout=5)
        (e,) = journaled(tmp_path / "journal")
        assert (e.path, e.stalled, e.why) == (str(target), True, "stalled")
        fh.write(b"more")
    assert wait_until(lambda: len(journaled(tmp_path / "journal")) == 2, timeout=5)
    assert journaled(tmp_path / "journal")[1].why == "written"  # closed at last: measured


def test_in_poll_mode_a_file_is_journaled_once_still_for_the_quiet_period(tmp_path, gate, good):
    g = gate(mode="poll", poll_s=0.2)
    target = tmp_path / "raw" / "night" / "remote.fits"
    target.parent.mkdir(parents=True)
    g.poll()  # the folder's first look: a baseline
    content = good.read_bytes()
    with open(target, "wb") as fh:
        for i in range(4):
            fh.write(content[i * len(content) // 4:(i + 1) * len(content) // 4])
            fh.flush()
            time.sleep(0.3)  # shorter than the quiet period
            assert journaled(tmp_path / "journal") == []
    assert wait_until(lambda: journaled(tmp_path / "journal"), timeout=5)
    (e,) = journaled(tmp_path / "journal")
    assert (e.path, e.size, e.why) == (str(target), len(content), "quiet")
    assert g.mode == "poll"


def test_the_poller_finds_what_the_watch_missed_in_recently_changed_folders_only(tmp_path, good):
    raw = tmp_path / "raw"
    (raw / "old").mkdir(parents=True)
    (raw / "tonight").mkdir()
    g = arrivals.ArrivalGate(str(raw), Journal(tmp_path / "journal"), Index(tmp_path / "sink"), CONFIG,
                             mode="events", quiet=0.2)  # never started: every event is "missed"
    old = time.time() - 7 * 3600
    os.utime(raw / "old", (old, old))
    g.poll()
    (raw / "tonight" / "a.fits").write_bytes(good.read_bytes())
    (raw / "old" / "b.fits").write_bytes(good.read_bytes())
    os.utime(raw / "old", (old, old))  # as if written long ago by another host
    assert g.poll() == 1
    time.sleep(0.3)
    assert [e.path for e in g.tick()] == [str(raw / "tonight" / "a.fits")]
    assert set(g._seen) == {str(raw), str(raw / "tonight")}


def test_network_file_systems_are_polled():
    assert arrivals.choose_mode("/", "auto") in ("events", "poll")
    assert arrivals.choose_mode("/anything", "poll") == "poll"
    assert arrivals.filesystem_type("/proc") == "proc"


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


def test_a_checkpoint_of_the_listing_query_is_moved_aside(tmp_path):
    checkpoint = tmp_path / "checkpoint"
    offsets = checkpoint / "offsets"
    offsets.mkdir(parents=True)
    assert retire_old_checkpoint(str(checkpoint)) is None  # no batch yet
    (offsets / "0").write_text('v1\n{"batchWatermarkMs":0}\n{"seq":3}\n')
    assert retire_old_checkpoint(str(checkpoint)) is None  # the journal's
    (offsets / "1").write_text('v1\n{"batchWatermarkMs":0}\n{"logOffset":1}\n{"logOffset":0}\n')
    aside = retire_old_checkpoint(str(checkpoint))
    assert aside and Path(aside).is_dir() and not checkpoint.exists()
