"""The ingestion daemon end to end: a real `sexstream run` process, real Spark, real Delta
tables, real SExtractor; images renamed into place while it runs; stops, kill -9 and
crashes at the worst moments, with restarts."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from conftest import REAL, real_images
from daemon_harness import SEXSTREAM, Daemon, drop
from sexstream import extractor, settings, synthetic
from spark_fixtures import spark_infra, standalone_cluster  # noqa: F401 (fixtures)

pytestmark = pytest.mark.spark

KEYS = "NUMBER,EXT_NUMBER,FLUX_ISO,MAG_ISO,X_IMAGE,Y_IMAGE,ALPHA_J2000,DELTA_J2000,FLAGS"
FITSKEYS = "FILTER,RUNID,RA_DEG"
COMPARE = ["NUMBER", "EXT_NUMBER", "FLUX_ISO", "MAG_ISO", "X_IMAGE", "Y_IMAGE", "FLAGS"]


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("generated")
    return synthetic.make_night(folder, 6, seed=11, nx=512, ny=1024, n_ccd=1) + \
        synthetic.make_night(folder / "mef", 2, seed=12, nx=256, ny=512, n_ccd=2)


def direct_sources(path: Path) -> pd.DataFrame:
    plan = extractor.prepare(settings.load(keys=tuple(KEYS.split(",")), fitskeys=tuple(FITSKEYS.split(","))))
    r = extractor.extract(path, plan)
    assert r.record["status"] == "ok", r.record["reason"]
    return r.sources.to_pandas()


def assert_exactly_once(d: Daemon, paths: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    images, sources = d.images(), d.sources()
    counts = images.groupby("path").size()
    assert set(counts.index) == {str(p) for p in paths}
    assert (counts == 1).all(), counts[counts > 1]
    assert not sources.duplicated(["path", "EXT_NUMBER", "NUMBER"]).any()
    per_path = sources.groupby("path").size()
    for row in images.itertuples():
        assert per_path.get(row.path, 0) == row.n_sources, row.path
    return images, sources


def assert_rows_equal_direct(sources: pd.DataFrame, paths: list[Path]) -> None:
    for p in paths:
        got = sources[sources.path == str(p)].sort_values(["EXT_NUMBER", "NUMBER"])[COMPARE]
        want = direct_sources(p).sort_values(["EXT_NUMBER", "NUMBER"])[COMPARE]
        assert len(got) == len(want) > 0, p
        pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True),
                                      check_dtype=True)


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path, extra=["--keys", KEYS, "--fitskeys", FITSKEYS])
    yield d
    d.stop()


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data/real is absent")
def test_every_dropped_image_gets_one_images_row_and_the_direct_run_rows(daemon, generated, tmp_path):
    real = real_images()
    first = [drop(p, daemon.raw / "night1", f"{i:02d}_{p.name}") for i, p in enumerate(real[:8])]
    daemon.start()
    later = [drop(p, daemon.raw / "night1", f"{i + 8:02d}_{p.name}") for i, p in enumerate(real[8:])]
    later += [drop(p, daemon.raw / "gen") for p in generated[:6]]
    later += [drop(p, daemon.raw / "gen", "mef_" + p.name) for p in generated[6:]]
    paths = first + later
    daemon.wait_for_paths(paths)
    assert daemon.terminate() == 0
    images, sources = assert_exactly_once(daemon, paths)
    assert set(images["status"]) == {"ok"}, images[images.status != "ok"][["path", "reason"]]
    assert_rows_equal_direct(sources, paths)
    # header keys and provenance
    gen = images[images.path.str.contains("/gen/")]
    assert gen["FILTER"].notna().all() and gen["RUNID"].notna().all()
    assert sources["healpix"].notna().any()
    assert sources["batch_id"].notna().all() and sources["ingest_time"].notna().all()
    assert not any(p.startswith("file:") for p in images["path"])
    log = daemon.log.read_text()
    assert "batch 0:" in log and "stopped cleanly" in log
    status = subprocess.run([*SEXSTREAM, "status", "--sink", str(daemon.sink), "--json"],
                            capture_output=True, text=True, check=True)
    report = json.loads(status.stdout)
    assert report["images"]["ok"] == len(paths) and report["sources"] == len(sources)


def test_stop_and_kill9_restarts_lose_nothing_and_duplicate_nothing(daemon, generated):
    batch_a = [drop(p, daemon.raw, f"a_{p.name}") for p in generated[:2]]
    daemon.start()
    daemon.wait_for_paths(batch_a)
    assert daemon.terminate() == 0
    batch_b = [drop(p, daemon.raw, f"b_{p.name}") for p in generated[2:4]]  # while stopped
    daemon.start()
    daemon.wait_for_paths(batch_b)
    batch_c = [drop(p, daemon.raw, f"c_{p.name}") for p in generated[4:6]]
    daemon.wait_for(lambda: "batch" in daemon.tail(3), 60, "a batch to start")
    daemon.kill9()  # wherever it is: listing, SExtractor, parts, commit
    batch_d = [drop(p, daemon.raw, f"d_{p.name}") for p in generated[6:8]]
    daemon.start()
    paths = batch_a + batch_b + batch_c + batch_d
    daemon.wait_for_paths(paths)
    assert daemon.terminate() == 0
    _, sources = assert_exactly_once(daemon, paths)
    assert_rows_equal_direct(sources, batch_c + batch_d)


def test_crashes_between_parts_commits_and_checkpoint_are_idempotent(daemon, generated):
    first = [drop(p, daemon.raw, f"x_{p.name}") for p in generated[:3]]
    for phase in ("parts_written", "sources_committed", "images_committed"):
        daemon.start(hooks=["--crash-at", f"{phase}:0"])
        assert daemon.wait_exit(240) == 137, daemon.tail()
    images = daemon.images()
    # after the third crash both tables hold batch 0 once, but Spark's checkpoint does not
    assert sorted(images["path"]) == sorted(map(str, first))
    daemon.start()
    second = [drop(p, daemon.raw, f"y_{p.name}") for p in generated[3:5]]
    daemon.wait_for_paths(first + second)
    assert daemon.terminate() == 0
    images, sources = assert_exactly_once(daemon, first + second)
    assert "already committed to both tables" in daemon.log.read_text()
    from deltalake import DeltaTable

    # orphans of the crashed batch are on disk but not in the table
    on_disk = {p.name for p in (daemon.sink / "sources").glob("*.parquet")}
    in_log = {Path(u).name for u in DeltaTable(str(daemon.sink / "sources")).file_uris()}
    assert in_log < on_disk
    assert_rows_equal_direct(sources, first)


@pytest.fixture
def cluster_daemon(tmp_path, standalone_cluster):
    d = Daemon(tmp_path, extra=["--keys", KEYS, "--fitskeys", FITSKEYS,
                                "--master", standalone_cluster.master_url])
    yield d
    d.stop()


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data/real is absent")
def test_the_same_end_to_end_on_a_two_worker_standalone_cluster(cluster_daemon, standalone_cluster, generated):
    d = cluster_daemon
    real = [p for p in real_images() if p.parent.name in ("legacypipe", "sewpy")][:8]
    first = [drop(p, d.raw, f"r{i:02d}_{p.name}") for i, p in enumerate(real)]
    d.start()
    later = [drop(p, d.raw / "gen") for p in generated[:6]]
    paths = first + later
    images = d.wait_for_paths(paths, timeout=300)
    assert d.terminate() == 0
    images, sources = assert_exactly_once(d, paths)
    assert set(images["status"]) == {"ok"}, images[images.status != "ok"][["path", "reason"]]
    assert_rows_equal_direct(sources, paths)
    log = d.log.read_text()
    assert "preflight: 2 executor(s)" in log, log[-3000:]
