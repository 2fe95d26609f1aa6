"""Clustering the sources table by healpix: the same rows, sorted runs of disjoint files,
tiered merges, and rewrites that never lose or repeat a row when writers race them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from sexstream import layout, maintenance, survey
from sexstream.tables import open_table, read_sources, sources_path

SMALL = dict(epochs=2, sources_per_ccd=100.0, fields_per_stripe=4)
CLUSTER = dict(file_rows=3000, row_group_rows=500, sort_rows=3500)


def rows_of(sink: Path):
    """Every sources row, in a fixed order."""
    return read_sources(sink).sort_by([("image_id", "ascending"), ("EXT_NUMBER", "ascending"),
                                       ("NUMBER", "ascending")])


def state(sink: Path):
    return layout.runs_of(layout.data_files(open_table(sources_path(sink))))


def assert_sorted_runs(sink: Path) -> None:
    """Each run's files are disjoint and in order, and each file is sorted by healpix."""
    runs, _ = state(sink)
    for files in runs.values():
        assert all(a.hi < b.lo for a, b in zip(files, files[1:]))
        for f in files:
            keys = layout.sort_key(pq.read_table(Path(sources_path(sink)) / f.path, columns=["healpix"]))
            assert np.all(np.diff(keys) >= 0)


@pytest.fixture
def sink(tmp_path: Path) -> Path:
    survey.write(tmp_path, survey.Survey(n_fields=8, seed=5, **SMALL), images_per_batch=4)
    return tmp_path


def test_clustering_keeps_every_row_and_sorts_them_into_runs(sink: Path):
    before = rows_of(sink)
    report = maintenance.cluster_sources(str(sink), **CLUSTER)
    assert report.tail_rows == before.num_rows and report.tail_files == 16
    assert rows_of(sink).equals(before)
    runs, tail = state(sink)
    assert len(runs) == report.runs_after == 1 and tail == []  # 4 sorted groups, then merged
    assert [s.split(':')[0] for s in report.steps] == ['sort tail'] * 4 + ['merge 4 runs']
    assert_sorted_runs(sink)
    history = open_table(sources_path(sink)).history(3)
    assert all(h["operationParameters"].get("mode", "Append") in ("Append", None) for h in history)
    again = maintenance.cluster_sources(str(sink), **CLUSTER)
    assert again.commits == 0 and rows_of(sink).equals(before)  # nothing to do


def test_new_appends_become_runs_and_runs_of_a_tier_are_merged(sink: Path):
    maintenance.cluster_sources(str(sink), **CLUSTER)  # one run of 12,800 rows: tier 1
    total = read_sources(sink, columns=["NUMBER"]).num_rows
    counts = []
    for k in range(4):
        total += survey.write(sink, survey.Survey(n_fields=1, seed=10 + k, **SMALL)).rows
        maintenance.cluster_sources(str(sink), **CLUSTER)  # 1,600 new rows: a tier-0 run
        runs, tail = state(sink)
        assert tail == []
        counts.append(len(runs))
    assert counts == [2, 3, 4, 2]  # the 4th tier-0 run merges the four into one
    assert_sorted_runs(sink)
    assert read_sources(sink, columns=["NUMBER"]).num_rows == total


def test_min_tail_rows_leaves_a_small_tail_alone(sink: Path):
    report = maintenance.cluster_sources(str(sink), min_tail_rows=10**9, **CLUSTER)
    assert report.commits == 0 and state(sink)[0] == {}


def test_an_append_racing_the_rewrite_is_kept(sink: Path, monkeypatch):
    before = rows_of(sink).num_rows
    real = layout.Writer.commit
    extra = survey.Survey(n_fields=1, seed=21, **SMALL)

    def commit_after_an_append(self, removed, step):
        survey.write(sink, extra)  # the daemon commits between our read and our commit
        monkeypatch.setattr(layout.Writer, "commit", real)
        return real(self, removed, step)

    monkeypatch.setattr(layout.Writer, "commit", commit_after_an_append)
    report = maintenance.cluster_sources(str(sink), **CLUSTER)
    assert report.commits >= 1
    after = rows_of(sink)
    added = read_sources(sink, filters=pc.starts_with(pc.field("path"), "/data/survey-21/"))
    assert added.num_rows > 0 and after.num_rows == before + added.num_rows
    keys = ["image_id", "EXT_NUMBER", "NUMBER"]
    assert len(set(zip(*(after[k].to_pylist() for k in keys)))) == after.num_rows  # no row twice
    _, tail = state(sink)
    assert {f.path for f in tail} and all(f.rows for f in tail)  # the append waits, as tail


def test_a_rewrite_that_lost_its_inputs_gives_up_and_removes_its_files(sink: Path, monkeypatch):
    before = rows_of(sink)
    _, tail = state(sink)
    real = layout.Writer.commit

    def someone_else_first(self, removed, step):
        monkeypatch.setattr(layout.Writer, "commit", real)
        other = layout.sort_tail(sources_path(sink), removed, file_rows=3000, row_group_rows=500)
        assert other.committed
        return real(self, removed, step)

    monkeypatch.setattr(layout.Writer, "commit", someone_else_first)
    writer_files = []
    real_write = layout.Writer.write
    monkeypatch.setattr(layout.Writer, "write", lambda self, rows: (
        real_write(self, rows), writer_files.append(self))[0])
    step = layout.sort_tail(sources_path(sink), tail[:3], file_rows=3000, row_group_rows=500)
    assert not step.committed
    loser = writer_files[0]
    assert all(not (Path(sources_path(sink)) / p.path).exists() for p in loser.parts)
    assert rows_of(sink).equals(before)


def test_compact_clusters_sources_and_compacts_images(sink: Path):
    before = rows_of(sink)
    reports = maintenance.compact(str(sink), retention_hours=1)
    by_table = {r.table: r for r in reports}
    assert "clustered by healpix" in by_table["sources"].line()
    assert by_table["images"].files_after == 1
    assert rows_of(sink).equals(before)
    assert state(sink)[1] == []


def test_full_merges_every_run_into_one(sink: Path):
    maintenance.cluster_sources(str(sink), **CLUSTER)
    survey.write(sink, survey.Survey(n_fields=1, seed=30, **SMALL))
    maintenance.cluster_sources(str(sink), **CLUSTER)
    before = rows_of(sink)
    assert len(state(sink)[0]) == 2
    report = maintenance.cluster_sources(str(sink), full=True, **CLUSTER)
    assert report.steps == [f"merge 2 runs: {report.steps[0].split(': ')[1]}"] and len(state(sink)[0]) == 1
    assert rows_of(sink).equals(before)
    assert_sorted_runs(sink)
