"""The ingest engine without a JVM: its exactly-once bookkeeping, its hooks, and a worker
that dies in the middle of an image, driven through a local process pool (the same
engine the daemon drives through Spark)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from sexstream import extractor, settings, synthetic
from sexstream.engine import PHASES, Engine, Hooks, Item, SerialRunner, TaskFailed
from sexstream.pool import PoolRunner
from sexstream.sink import Sink
from sexstream.tables import read_table

DOUBLES = Path(__file__).parent / "doubles"
KEYS = ("NUMBER", "EXT_NUMBER", "FLUX_ISO", "X_IMAGE", "Y_IMAGE", "ALPHA_J2000", "DELTA_J2000")


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("frames")
    return synthetic.make_night(folder, 4, seed=31, nx=160, ny=160)


@pytest.fixture(scope="module")
def plan():
    return extractor.prepare(settings.load(keys=KEYS, fitskeys=("FILTER",)))


def items(paths) -> list[Item]:
    return [Item(str(p)) for p in paths]


def rows(sink: Sink, name: str):
    return read_table(sink.path(name)).to_pandas()


class Recorder(Hooks):
    def __init__(self):
        self.seen = []

    def phase(self, name, batch_id):
        self.seen.append((name, batch_id))

    def batch(self, stats):
        self.seen.append(("batch", stats.batch_id))


class Crash(Hooks):
    """Raises at a phase, as the death of the driver would interrupt it there."""

    def __init__(self, at: str):
        self.at = at

    def phase(self, name, batch_id):
        if name == self.at:
            raise SystemExit(f"crash at {name}")


def test_a_batch_commits_once_per_table_and_its_replay_is_skipped(tmp_path, frames, plan):
    sink = Sink(tmp_path / "sink")
    recorder = Recorder()
    with PoolRunner(2) as pool:
        engine = Engine(sink, plan, app_id="query-1", hooks=[recorder])
        stats = engine.run(0, items(frames), pool)
        assert (stats.files, stats.ok, stats.failed, stats.committed) == (4, 4, 0, ("sources", "images"))
        assert engine.run(0, items(frames), pool) is None  # Spark replays batch 0: nothing twice
    assert recorder.seen == [(p, 0) for p in PHASES] + [("batch", 0)]
    images, sources = rows(sink, "images"), rows(sink, "sources")
    assert len(images) == 4 and set(images.status) == {"ok"}
    assert len(sources) == images.n_sources.sum() > 0
    assert not sources.duplicated(["path", "NUMBER"]).any()
    assert engine.totals.batches == 1 and engine.totals.ok == 4
    assert list(images.current) == [True] * 4
    assert not (sink.folder("_inflight") / "query-1").exists() or not any(
        (sink.folder("_inflight") / "query-1").iterdir())


def test_a_driver_dead_between_the_two_commits_on_a_lost_checkpoint_commits_no_source_twice(
        tmp_path, frames, plan):
    sink = Sink(tmp_path / "sink")
    crashing = Engine(sink, plan, app_id="query-1", hooks=[Crash("sources_committed")])
    with pytest.raises(SystemExit):
        crashing.run(0, items(frames[:2]), SerialRunner())
    assert len(rows(sink, "sources")) > 0 and sink.table("images") is None
    assert len(list(sink.folder("_pending").glob("*.json"))) == 1  # its images rows wait there
    # the checkpoint is lost: a new query, a new id; starting, it commits the waiting rows
    engine = Engine(sink, plan, app_id="query-2").start()
    assert sorted(rows(sink, "images").path) == sorted(map(str, frames[:2]))
    assert sink.holds("images", "query-1", 0)  # with the dead batch's own transaction
    with PoolRunner(2) as pool:
        stats = engine.run(0, items(frames[:2]), pool)
    assert stats.skipped == 2  # the bytes have their verdict: nothing measured twice
    sources = rows(sink, "sources")
    assert not sources.duplicated(["path", "NUMBER"]).any()
    assert len(rows(sink, "images")) == 2 and not list(sink.folder("_pending").glob("*.json"))


def test_bytes_already_measured_are_skipped_unless_forced(tmp_path, frames, plan):
    sink = Sink(tmp_path / "sink")
    Engine(sink, plan, app_id="a").run(0, items(frames[:2]), SerialRunner())
    engine = Engine(sink, plan, app_id="b")
    stats = engine.run(0, [Item(str(frames[0])), Item(str(frames[1]), force=True)], SerialRunner())
    assert (stats.skipped, stats.ok) == (1, 1)
    images = rows(sink, "images")
    assert len(images) == 3
    forced = images[images.path == str(frames[1])]
    assert sorted(forced.current) == [False, True]  # the forced verdict is the current one
    sources = rows(sink, "sources")
    assert not sources.duplicated(["path", "NUMBER"]).any()  # its older rows were replaced


def test_new_bytes_at_a_path_supersede_its_older_rows_in_the_same_commits(tmp_path, frames, plan):
    raw = tmp_path / "raw"
    raw.mkdir()
    target, other = raw / "field.fits", raw / "other.fits"
    shutil.copyfile(frames[0], target)
    shutil.copyfile(frames[2], other)
    sink = Sink(tmp_path / "sink")
    engine = Engine(sink, plan, app_id="q")
    engine.run(0, items([target, other]), SerialRunner())
    first = rows(sink, "sources")
    shutil.copyfile(frames[1], target)  # overwritten in place by another field's image
    stats = engine.run(1, items([target]), SerialRunner())
    assert stats.ok == 1
    sources = rows(sink, "sources")
    direct = extractor.extract(target, plan).sources.to_pandas()
    got = sources[sources.path == str(target)].sort_values("NUMBER")
    assert len(got) == len(direct) and list(got.X_IMAGE) == list(direct.sort_values("NUMBER").X_IMAGE)
    assert len(sources[sources.path == str(other)]) == len(first[first.path == str(other)])  # untouched
    images = rows(sink, "images")
    mine = images[images.path == str(target)].sort_values("batch_id")
    assert list(mine.current) == [False, True]
    from sexstream.tables import latest_images

    latest = latest_images(sink.root).to_pandas().set_index("path")
    assert latest.loc[str(target), "batch_id"] == 1 and len(latest) == 2
    # the older version stays reachable through Delta time travel
    from deltalake import DeltaTable

    old = DeltaTable(sink.sources, version=0).to_pandas()
    assert len(old[old.path == str(target)]) == len(first[first.path == str(target)])


def test_a_worker_killed_in_the_middle_of_an_image_leaves_a_row_and_the_batch_commits(
        tmp_path, frames, plan):
    """The worker measuring `killonce` is SIGKILLed once (the OOM killer's way): its
    task fails, the engine measures the batch again with that image in a task of its
    own, and every image gets its row in one batch."""
    raw = tmp_path / "raw"
    raw.mkdir()
    good = [raw / f"good_{i}.fits" for i in range(3)]
    for src, dst in zip(frames, good):
        shutil.copyfile(src, dst)
    poison = raw / "killonce.fits"
    shutil.copyfile(frames[3], poison)
    state = tmp_path / "state"
    state.mkdir()
    os.environ["SEXSTREAM_DOUBLE_STATE"] = str(state)
    try:
        faulty = extractor.prepare(settings.load(keys=KEYS, fitskeys=("FILTER",),
                                                 binary=str(DOUBLES / "sextractor_faulty")))
        sink = Sink(tmp_path / "sink")
        with PoolRunner(2) as pool:
            stats = Engine(sink, faulty, app_id="q").run(0, items([*good, poison]), pool)
    finally:
        del os.environ["SEXSTREAM_DOUBLE_STATE"]
    assert (state / "killonce.fits.killed").exists()  # the worker did die
    assert stats.isolated == 1 and stats.ok == 4, stats
    images = rows(sink, "images")
    assert sorted(images.path) == sorted(map(str, [*good, poison]))
    assert set(images.status) == {"ok"}


def test_a_file_that_kills_its_worker_twice_is_quarantined_and_the_rest_commits(tmp_path, frames, plan):
    raw = tmp_path / "raw"
    raw.mkdir()
    good = [raw / f"good_{i}.fits" for i in range(2)]
    for src, dst in zip(frames, good):
        shutil.copyfile(src, dst)
    poison = raw / "killer.fits"
    shutil.copyfile(frames[3], poison)
    faulty = extractor.prepare(settings.load(keys=KEYS, fitskeys=("FILTER",),
                                             binary=str(DOUBLES / "sextractor_faulty")))
    sink = Sink(tmp_path / "sink")
    with PoolRunner(2) as pool:
        stats = Engine(sink, faulty, app_id="q").run(0, items([*good, poison]), pool)
    assert (stats.ok, stats.failed, stats.isolated) == (2, 1, 2), stats
    images = rows(sink, "images").set_index("path")
    row = images.loc[str(poison)]
    assert (row.status, row.reason) == ("failed", "quarantined: the worker measuring it died 2 times")
    assert row["size"] == os.stat(poison).st_size
    assert (images.loc[[str(p) for p in good], "status"] == "ok").all()


def test_a_task_failure_that_is_no_images_fault_fails_the_batch(tmp_path, frames, plan):
    class Broken:
        parallelism = 1

        def map(self, spec, groups):
            raise TaskFailed("the disk is full")

    engine = Engine(Sink(tmp_path / "sink"), plan, app_id="q")
    with pytest.raises(TaskFailed, match="the disk is full"):
        engine.run(0, items(frames[:1]), Broken())
    assert Sink(tmp_path / "sink").table("images") is None


def test_tasks_carry_about_equal_bytes_and_suspects_run_alone(tmp_path):
    engine = Engine(Sink(tmp_path / "sink"), plan=None)
    sizes = [900, 100, 100, 100, 100, 100, 100, 100, 100, 100, 500, 400]
    items = [Item(f"/raw/f{i:02d}.fits", length=n) for i, n in enumerate(sizes)]
    groups = engine.groups(items, parallelism=2)
    assert len(groups) == 4  # two tasks per core
    assert sorted(i.path for g in groups for i in g) == sorted(i.path for i in items)
    loads = [sum(i.length for i in g) for g in groups]
    assert loads == sorted(loads, reverse=True)  # the heaviest task starts first
    assert loads == [900, 600, 600, 600]  # the largest image alone, the rest spread evenly
    alone = engine.groups(items, parallelism=2, alone={"/raw/f00.fits"})
    assert alone[0] == [items[0]] and all(items[0] not in g for g in alone[1:])
    fixed = Engine(Sink(tmp_path / "sink"), plan=None, files_per_task=5).groups(items, parallelism=2)
    assert [len(g) for g in fixed] == [4, 4, 4]  # at most 5 each, in as few tasks as that allows
