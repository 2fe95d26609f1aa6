"""`sexstream compact`: fewer files, the same rows, orphans vacuumed, batches still known."""
from __future__ import annotations

import os
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sexstream import maintenance, parts, transaction
from sexstream.tables import open_table, read_table


def _batch(table_dir, app_id, batch_id, n):
    t = pa.table({"NUMBER": pa.array(range(n), pa.int32()), "path": [f"/raw/{batch_id}.fits"] * n,
                  "batch_id": pa.array([batch_id] * n, pa.int64())})
    part = parts.write_part(table_dir, t, batch_id=batch_id, task_tag="t0")
    return transaction.commit(table_dir, [part], app_id=app_id, batch_id=batch_id)


def test_compact_merges_small_files_keeps_rows_and_vacuums_old_orphans(tmp_path):
    table_dir = str(tmp_path / "sink" / "sources")
    for b in range(12):
        _batch(table_dir, "app", b, 10 + b)
    orphan = parts.write_part(table_dir, pa.table({"NUMBER": pa.array([1], pa.int32())}),
                             batch_id=99, task_tag="crashed")
    old = time.time() - 3 * 3600
    os.utime(os.path.join(table_dir, orphan.path), (old, old))
    fresh = parts.write_part(table_dir, pa.table({"NUMBER": pa.array([2], pa.int32())}),
                            batch_id=100, task_tag="in-flight")
    before = read_table(table_dir).sort_by([("batch_id", "ascending"), ("NUMBER", "ascending")])
    reports = maintenance.compact(str(tmp_path / "sink"), retention_hours=1)
    assert len(reports) == 1 and reports[0].files_before == 12 and reports[0].files_after == 1
    after = read_table(table_dir).sort_by([("batch_id", "ascending"), ("NUMBER", "ascending")])
    assert after.equals(before)
    assert not os.path.exists(os.path.join(table_dir, orphan.path))  # old orphan vacuumed
    assert os.path.exists(os.path.join(table_dir, fresh.path))  # a batch in progress keeps its part
    assert open_table(table_dir).transaction_version("app") == 11  # replays still skipped
    assert transaction.commit(table_dir, [], app_id="app", batch_id=11) is None


def test_compact_refuses_a_retention_that_could_eat_a_batch_in_progress(tmp_path):
    with pytest.raises(ValueError, match="batch"):
        maintenance.compact(str(tmp_path), retention_hours=0)


def test_expired_log_entries_are_removed_and_a_kept_sink_handle_commits_on(tmp_path):
    """The log holds what the retention window holds (each commit lists it); the daemon's
    kept table handle is opened anew at the new checkpoint instead of missing the removed
    entries."""
    from sexstream.sink import Sink

    sink = Sink(tmp_path / "sink")
    log = os.path.join(sink.images, "_delta_log")

    def commits(first, last):
        for b in range(first, last):
            t = pa.table({"path": [f"/raw/{b}.fits"], "n": pa.array([b], pa.int64())})
            part = parts.write_part(sink.images, t, batch_id=b, task_tag="t0")
            if not sink.holds("images", "app", b):
                sink.commit("images", [part], app_id="app", batch_id=b)

    commits(0, 150)
    assert len([f for f in os.listdir(log) if f.endswith(".json")]) == 150
    time.sleep(1.5)
    maintenance.compact(str(sink.root), log_retention_hours=1 / 3600)
    left = sorted(f for f in os.listdir(log) if f.endswith(".json"))
    assert left[0] == "00000000000000000099.json", left  # gone: those before the last checkpoint past the window
    config = open_table(sink.images).metadata().configuration
    assert config["delta.logRetentionDuration"] == config["delta.deletedFileRetentionDuration"] == "interval 1 seconds"
    commits(150, 160)  # the same Sink object, as the running daemon
    table = open_table(sink.images)
    assert table.transaction_version("app") == 159
    assert sorted(read_table(sink.images, columns=["n"])["n"].to_pylist()) == list(range(160))
    # the 150 files compacted away above are tombstones past the window: the next
    # checkpoint leaves them out (a table open reads the live files, not all it ever removed)
    time.sleep(1.5)
    maintenance.compact(str(sink.root), log_retention_hours=1 / 3600)
    newest = sorted(f for f in os.listdir(log) if f.endswith(".checkpoint.parquet"))[-1]
    removes = [r for r in pq.read_table(os.path.join(log, newest), columns=["remove"])["remove"].to_pylist() if r]
    assert 0 < len(removes) <= 11  # the second compaction's own (10 batches and the first merged file)
    left = sorted(f for f in os.listdir(log) if f.endswith(".json"))
    assert len(left) < 5, left  # the first compaction's checkpoint is past the window now
    assert sorted(read_table(sink.images, columns=["n"])["n"].to_pylist()) == list(range(160))
    with pytest.raises(ValueError, match="positive"):
        maintenance.compact(str(sink.root), log_retention_hours=0)
