"""Fault tolerance, proven: bounded forms of scripts/chaos.py.

The audit, the feed and the faulty SExtractor double are checked first (no Spark), so
that a chaos run's PASS means something: the audit must see a lost image, a duplicated
row, a differing source and a corrupt log. Then real daemons under faults: a chaos run
of seeded rounds on a 2-worker standalone cluster (kill -9 at random moments, inside
SExtractor and at the crash hooks, SIGTERM, a lost worker, a lost checkpoint; images
the double segfaults on, exits on, hangs on; a text file and a truncated FITS), the
lost-checkpoint-after-a-split-commit regression, a burst of 2,000 tiny images, and a
full disk under the sink.
"""
from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from sexstream import extractor, inputs, parts, settings, structure, transaction
from sexstream.errors import InputError
from sexstream.schema import images_table, stamp
from chaos import feed as feed_mod
from chaos.audit import Oracle, audit
from chaos.daemon import DaemonProcess, read_batches
from chaos.faults import Tmpfs
from chaos.rounds import FAULTY_DOUBLE, ChaosConfig, ChaosRun, schedule

KEYS = ("NUMBER", "EXT_NUMBER", "FLUX_ISO", "X_IMAGE", "Y_IMAGE", "FLAGS")


@pytest.fixture(scope="module")
def plan():
    return extractor.prepare(settings.load(keys=KEYS, fitskeys=("FILTER",)))


def _commit(table_dir: Path, table, batch_id: int) -> None:
    part = parts.write_part(table_dir, table, batch_id=batch_id, task_tag="t")
    transaction.commit(table_dir, [part], app_id="test", batch_id=batch_id)


def _ingest(sink_dir: Path, results, plan, batch_id: int) -> None:
    now = datetime.now(timezone.utc)
    _commit(sink_dir / "sources", stamp(parts.concat([r.sources for r in results]), batch_id, now),
            batch_id)
    _commit(sink_dir / "images", images_table([r.record for r in results], plan.fitskeys, batch_id, now),
            batch_id)


def test_audit_sees_lost_duplicated_differing_and_corrupt(tmp_path, plan):
    import pyarrow.compute as pc

    feed = feed_mod.Feed(tmp_path / "raw", nx=128, ny=128)
    dropped = [feed.drop(a) for a in feed_mod.plan(4, seed=5, mix={"good": 1})]
    results = [extractor.extract(a.path, plan) for a in dropped]
    sink_dir = tmp_path / "sink"
    _ingest(sink_dir, results[:3], plan, 0)          # dropped[3] is never committed: lost
    oracle = Oracle(plan)
    clean = audit(sink_dir, dropped[:3], oracle)
    assert clean.ok, clean.problems()
    assert (clean.rows, clean.sources) == (3, sum(r.record["n_sources"] for r in results[:3]))

    _ingest(sink_dir, [results[0]], plan, 1)          # one image committed twice
    flux = results[1].sources["FLUX_ISO"]
    off = results[1].sources.set_column(results[1].sources.column_names.index("FLUX_ISO"), "FLUX_ISO",
                                        pc.multiply(flux, 1.001).cast(flux.type))
    _commit(sink_dir / "sources", stamp(off, 2, datetime.now(timezone.utc)), 2)  # differs
    orphan = parts.write_part(sink_dir / "images", images_table([results[3].record], plan.fitskeys, 3,
                                                              datetime.now(timezone.utc)),
                             batch_id=3, task_tag="orphan")  # written, never committed
    a = audit(sink_dir, dropped, oracle)
    assert not a.ok
    assert a.lost == [f"{dropped[3].path} (good)"]
    assert a.extra_rows == 1 and a.duplicated[0].startswith(dropped[0].path)
    n1 = results[1].record["n_sources"]
    assert a.duplicate_sources == results[0].record["n_sources"] + n1
    assert any(m.startswith(dropped[1].path) for m in a.mismatched), a.mismatched
    images = next(t for t in a.tables if t.name == "images")
    assert images.orphans == 1 and images.orphan_rows == 1 and images.sound  # never read

    other = tmp_path / "sink2"                        # same rows, one value off
    _ingest(other, [results[0], extractor.ImageResult(results[1].record, off)], plan, 0)
    differs = audit(other, dropped[:2], oracle)
    assert differs.mismatched == [f"{dropped[1].path}: columns ['FLUX_ISO'] differ from the direct run"]

    logged = next(p for p in (sink_dir / "images").glob("*.parquet") if p.name != orphan.path)
    logged.unlink()                                   # a file the log names disappears
    broken = audit(sink_dir, dropped, oracle)
    images = next(t for t in broken.tables if t.name == "images")
    assert not broken.ok and images.missing == 1 and not images.sound
    assert any("logged files missing" in p for p in broken.problems())


def test_feed_is_seeded_and_its_bad_files_are_what_they_claim(tmp_path):
    a, b = feed_mod.plan(40, seed=3), feed_mod.plan(40, seed=3)
    assert a == b and a != feed_mod.plan(40, seed=4)
    assert {x.kind for x in a} == set(feed_mod.KINDS)
    feed = feed_mod.Feed(tmp_path, nx=64, ny=64)
    trunc = feed.drop(next(x for x in a if x.kind == "truncated"))
    text = feed.drop(next(x for x in a if x.kind == "text"))
    with pytest.raises(InputError) as info:
        structure.walk_hdus(trunc.path)
    assert info.value.status == "incomplete"
    assert inputs.sniff(text.path) == "unknown"
    assert not list(tmp_path.rglob(".*.tmp"))  # written under a temporary name, then renamed


def test_faulty_double_fails_by_name_and_is_the_real_binary_otherwise(tmp_path, plan):
    double = extractor.prepare(settings.load(keys=KEYS, fitskeys=("FILTER",), binary=str(FAULTY_DOUBLE),
                                             timeout=1.0))
    assert double.config_hash == plan.config_hash  # the audit's oracle compares like with like
    feed = feed_mod.Feed(tmp_path, nx=128, ny=128)
    got = {}
    for kind in ("good", "crash", "exit", "hang"):
        arrival = feed_mod.Arrival(0, kind, f"x_{kind}.fits", seed=9)
        got[kind] = extractor.extract(feed.drop(arrival).path, double)
    for kind in ("crash", "exit", "hang"):
        status, fragment = feed_mod.EXPECTED[kind]
        assert got[kind].record["status"] == status and fragment in got[kind].record["reason"], kind
    assert got["crash"].record["attempts"] == double.retries + 1  # a signal is retried
    direct = extractor.extract(got["good"].record["path"], plan)
    assert got["good"].sources.equals(direct.sources)


def test_chaos_schedule_puts_every_kill_kind_and_a_lost_checkpoint_in_a_short_run():
    plans = schedule(ChaosConfig(seed=4, rounds=6, images=20, cluster=True))
    kinds = [p.kind for p in plans]
    assert sorted(kinds) == sorted(["crash_between_commits", "kill9_in_sextractor", "kill9",
                                    "crash_after_commit", "crash_after_parts", "sigterm"])
    split = next(p for p in plans if p.kind == "crash_between_commits")
    assert split.checkpoint_loss and any(p.worker_loss for p in plans)
    assert sum(len(p.arrivals) for p in plans) == 20



def test_batch_events_are_read_as_data_and_a_line_cut_by_a_kill_is_skipped(tmp_path):
    from sexstream.engine import BatchStats

    events = tmp_path / "batches.jsonl"
    stats = BatchStats(12, files=6, ok=4, failed=1, incomplete=1, sources=30, seconds=1.2, lag_s=3.5,
                       failures=[("/raw/a.fits", "failed", "not a FITS file")])
    events.write_text(stats.to_json() + "\n" + stats.to_json()[:40])
    (line,) = read_batches(events)
    assert (line.batch_id, line.files, line.ok, line.failed, line.sources, line.lag_s) == (12, 6, 4, 1, 30, 3.5)
    assert read_batches(tmp_path / "none.jsonl") == []


@pytest.mark.spark
def test_new_checkpoint_after_a_split_commit_commits_no_source_twice(tmp_path, plan):
    """The driver dies between the sources commit and the images commit, then the
    checkpoint is lost: the new query must still give those images their verdict without
    committing their sources a second time (an early version committed every source
    twice). The images rows the dead batch left pending are committed at start-up."""
    feed = feed_mod.Feed(tmp_path / "raw", nx=192, ny=192)
    dropped = [feed.drop(a) for a in feed_mod.plan(3, seed=21, mix={"good": 1})]
    d = DaemonProcess(tmp_path, raw=tmp_path / "raw", sink=tmp_path / "sink",
                      checkpoint=tmp_path / "checkpoint",
                      flags=["--keys", ",".join(KEYS), "--fitskeys", "FILTER", "--trigger", "1"])
    try:
        d.start(["--crash-at", "sources_committed:0"])
        assert d.wait_exit(300) == 137, d.tail()
        shutil.rmtree(d.checkpoint)
        d.start()
        assert d.wait_verdicts([a.path for a in dropped], 300), d.tail()
        assert d.sigterm(240) == 0, d.tail()
        result = audit(d.sink, dropped, Oracle(plan))
        assert result.ok, "\n".join(result.problems())
        assert d.text().count("whose driver died after its sources commit") == 1
    finally:
        d.stop()


@pytest.mark.spark
@pytest.mark.slow
def test_bounded_chaos_run_on_a_cluster_loses_and_duplicates_nothing(tmp_path):
    config = ChaosConfig(seed=11, rounds=5, images=16, cluster=True, nx=192, ny=192,
                         timeout=2.0, window_s=6.0, sigterm_share=0.2)
    report = ChaosRun(config, tmp_path, say=lambda s: None).run()
    table = report.table()
    kinds = {f.kind for f in report.faults}
    assert {"crash_between_commits", "checkpoint_loss", "worker_loss", "sigterm"} <= kinds, table
    assert report.audit.images == 16 + sum(f.detail.startswith("on ") for f in report.faults), table
    assert report.ok, table


@pytest.mark.spark
@pytest.mark.slow
def test_burst_of_2000_tiny_images_drains_in_bounded_batches_with_flat_memory(tmp_path):
    from chaos.overload import run_burst

    report = run_burst(tmp_path, n=2000, size=64, seed=2, max_files=250, files_per_task=25,
                       say=lambda s: None)
    table = report.table()
    assert report.bounded and len(report.burst) >= 8, table
    assert report.lag_recovered, table
    assert report.flat(1) and report.flat(2), table
    assert report.audit is not None and report.audit.ok and report.exit_code == 0, table


@pytest.mark.spark
@pytest.mark.slow
def test_full_sink_disk_fails_loudly_corrupts_nothing_and_recovers_exactly_once(tmp_path):
    reason = Tmpfs.unavailable(tmp_path)
    if reason:
        pytest.skip(reason)
    from chaos.diskfull import run_disk_full

    report = run_disk_full(tmp_path, size_kib=384, images=28, seed=3, say=lambda s: None)
    table = report.table()
    assert report.full_exit not in (None, 0) and report.loud, table
    assert report.sound_while_full, table
    assert report.while_full.rows < report.while_full.images, table  # the disk did stop it
    assert report.ok, table
