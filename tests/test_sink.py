"""The sink: Parquet parts, one Delta commit per (app_id, batch_id), readers via the log.

Real Delta tables in tmp_path, real concurrent processes; no Spark.
"""
from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from deltalake import DeltaTable

from sexstream import tables
from sexstream.parts import PartFile, concat, conform, delta_type, write_part
from sexstream.transaction import commit, committed_version, current_schema

T0 = datetime(2024, 3, 1, 22, 15, 7, 123456, tzinfo=timezone.utc)
FOOTPRINT = pa.list_(pa.struct([("ext_number", pa.int32()), ("hdu", pa.int32()),
                                ("ra", pa.list_(pa.float64())), ("dec", pa.list_(pa.float64()))]))


def rows(writer: str, batch: int, n: int = 3) -> pa.Table:
    """n sources rows tagged with the writer and batch that made them."""
    return pa.table({"writer": [writer] * n, "batch": pa.array([batch] * n, pa.int64()),
                     "NUMBER": pa.array(range(1, n + 1), pa.int32()),
                     "FLUX_ISO": pa.array([10.5 * (i + 1) for i in range(n)], pa.float32())})


def commit_rows(table_dir: Path, table: pa.Table, app_id: str, batch: int) -> int | None:
    """Write one part of `table` and commit it as batch `batch` of `app_id`."""
    part = write_part(table_dir, table, batch_id=batch, task_tag="t0")
    return commit(table_dir, [part], app_id=app_id, batch_id=batch)


def keys(table: pa.Table) -> list[tuple]:
    """(writer, batch, NUMBER) of every row, sorted."""
    return sorted(zip(*(table.column(c).to_pylist() for c in ("writer", "batch", "NUMBER"))))


def physical_types_match(table_dir: Path) -> None:
    """Every committed file stores each of its columns in the table's type."""
    dt = DeltaTable(table_dir)
    schema = pa.schema(dt.schema().to_arrow())
    for uri in dt.file_uris():
        for field in pq.read_schema(uri):
            assert field.type.equals(schema.field(field.name).type), (uri, field)


# --- exactly once --------------------------------------------------------------------

def test_replayed_batch_is_not_committed_twice(tmp_path: Path) -> None:
    t = tmp_path / "sources"
    assert committed_version(t, "app") is None
    assert commit_rows(t, rows("w", 0), "app", 0) == 0
    # Spark replays batch 0 after a crash: the executors write new parts again.
    assert commit_rows(t, rows("w", 0), "app", 0) is None
    assert committed_version(t, "app") == 0
    assert commit_rows(t, rows("w", 1), "app", 1) == 1
    assert commit_rows(t, rows("w", 0), "app", 0) is None      # an older batch too
    assert keys(tables.read_table(t)) == keys(pa.concat_tables([rows("w", 0), rows("w", 1)]))
    assert DeltaTable(t).version() == 1
    assert len(DeltaTable(t).file_uris()) == 2


def test_each_app_id_has_its_own_batches(tmp_path: Path) -> None:
    t = tmp_path / "sources"
    assert commit_rows(t, rows("daemon", 0), "daemon", 0) == 0
    assert commit_rows(t, rows("replay", 0), "replay", 0) == 1
    assert commit_rows(t, rows("replay", 1), "replay", 1) == 2
    assert committed_version(t, "daemon") == 0
    assert committed_version(t, "replay") == 1
    assert committed_version(t, "other") is None
    assert tables.read_table(t).num_rows == 9


def test_empty_batch_is_recorded_in_an_existing_table(tmp_path: Path) -> None:
    t = tmp_path / "images"
    assert commit(t, [], app_id="app", batch_id=0) is None       # no table, nothing to record
    assert not (t / "_delta_log").exists()
    assert commit_rows(t, rows("w", 0), "app", 0) == 0
    assert commit(t, [], app_id="app", batch_id=1) == 1
    assert committed_version(t, "app") == 1
    assert tables.read_table(t).num_rows == 3


def test_uncommitted_part_is_never_read(tmp_path: Path) -> None:
    sink = tmp_path
    t = Path(tables.sources_path(sink))
    commit_rows(t, rows("committed", 0), "app", 0)
    orphan = write_part(t, rows("orphan", 1), batch_id=1, task_tag="crashed")
    assert (t / orphan.path).is_file()
    assert set(tables.read_sources(sink).column("writer").to_pylist()) == {"committed"}
    uris = DeltaTable(t).file_uris()
    assert len(uris) == 1 and not uris[0].endswith(orphan.path)
    spark_like = pads.dataset(uris, format="parquet").to_table()
    assert set(spark_like.column("writer").to_pylist()) == {"committed"}


def test_commit_returns_the_version_that_holds_the_transaction(tmp_path: Path) -> None:
    t = tmp_path / "sources"
    for batch in range(3):
        version = commit_rows(t, rows("w", batch), "app", batch)
        entry = (t / "_delta_log" / f"{version:020d}.json").read_text().splitlines()
        txns = [json.loads(line)["txn"] for line in entry if "txn" in json.loads(line)]
        assert [(x["appId"], x["version"]) for x in txns] == [("app", batch)]
        assert abs(txns[0]["lastUpdated"] / 1000 - time.time()) < 60


def test_transactions_survive_a_checkpoint(tmp_path: Path) -> None:
    t = tmp_path / "sources"
    tiny = pa.table({"batch": pa.array([0], pa.int64())})
    for batch in range(101):                         # delta-rs checkpoints every 100 commits
        part = write_part(t, tiny, batch_id=batch, task_tag="t")
        assert commit(t, [part], app_id="app", batch_id=batch) == batch
    assert (t / "_delta_log" / "_last_checkpoint").is_file()
    assert committed_version(t, "app") == 100
    assert commit_rows(t, rows("w", 100), "app", 100) is None
    assert commit_rows(t, rows("w", 57), "app", 57) is None


# --- schemas and types ---------------------------------------------------------------

def test_new_column_reads_null_in_older_rows(tmp_path: Path) -> None:
    t = tmp_path / "sources"
    commit_rows(t, rows("old", 0), "app", 0)
    new = rows("new", 1, n=2).append_column("AIRMASS", pa.array([1.25, 1.5]))
    assert commit_rows(t, new, "app", 1) is not None
    assert committed_version(t, "app") == 1
    got = tables.read_table(t).sort_by([("batch", "ascending"), ("NUMBER", "ascending")])
    assert got.column("AIRMASS").to_pylist() == [None, None, None, 1.25, 1.5]
    frame = tables.read_table(t).to_pandas()
    assert frame["AIRMASS"].isna().sum() == 3 and sorted(frame["AIRMASS"].dropna()) == [1.25, 1.5]
    files = pads.dataset(DeltaTable(t).file_uris(), format="parquet",
                         schema=pa.schema(DeltaTable(t).schema().to_arrow())).to_table()
    assert sorted(files.column("AIRMASS").drop_null().to_pylist()) == [1.25, 1.5]
    assert files.num_rows == 5


def test_deltalake_default_readers_see_evolved_table(tmp_path: Path) -> None:
    """DeltaTable(t).to_pyarrow_table()/to_pandas(), as users call them (own process:
    with deltalake 1.6.6 those readers may abort the process at exit)."""
    t = tmp_path / "sources"
    commit_rows(t, rows("old", 0), "app", 0)
    commit_rows(t, rows("new", 1, n=1).append_column("AIRMASS", pa.array([1.25])), "app", 1)
    script = textwrap.dedent(f"""
        import json, math, os, sys
        from deltalake import DeltaTable
        dt = DeltaTable({str(t)!r})
        a = dt.to_pyarrow_table().column("AIRMASS").to_pylist()
        p = [None if math.isnan(x) else x for x in dt.to_pandas()["AIRMASS"]]
        sys.stdout.write(json.dumps([sorted(a, key=str), sorted(p, key=str)]))
        sys.stdout.flush()
        os._exit(0)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert json.loads(out) == [[1.25, None, None, None]] * 2


def test_conform_casts_to_the_table_types_and_nulls_what_cannot_be_cast() -> None:
    schema = pa.schema([("EXPTIME", pa.float64()), ("FILTER", pa.string()),
                        ("RUNID", pa.int64()), ("NUMBER", pa.int32()), ("SATURATE", pa.bool_())])
    table = pa.table({"EXPTIME": pa.array([30, 31], pa.int64()),
                      "FILTER": pa.array([1.5, None]),
                      "RUNID": pa.array([30.0, 30.5]),
                      "NUMBER": pa.array(["7", "x"]),
                      "OBJECT": pa.array(["M31", "M33"]),
                      "SATURATE": pa.array(["maybe", "maybe"])})
    got = conform(table, schema)
    assert got.schema.field("EXPTIME").type == pa.float64()
    assert got.column("EXPTIME").to_pylist() == [30.0, 31.0]
    assert got.column("FILTER").to_pylist() == ["1.5", None]
    assert got.column("RUNID").to_pylist() == [30, None]
    assert got.schema.field("NUMBER").type == pa.int32()
    assert got.column("NUMBER").to_pylist() == [7, None]
    assert got.column("SATURATE").to_pylist() == [None, None]
    assert got.schema.field("OBJECT").type == pa.string()            # not in schema: kept
    assert conform(table, None) is table


def test_parts_of_one_batch_with_different_types_get_one_column_type(tmp_path: Path) -> None:
    t = tmp_path / "sources"
    commit_rows(t, rows("w", 0), "app", 0)
    a = rows("a", 1, n=1).append_column("EXPTIME", pa.array([30], pa.int64())) \
        .append_column("RUNID", pa.array([7], pa.int64()))
    b = rows("b", 1, n=1).append_column("EXPTIME", pa.array([12.5])) \
        .append_column("RUNID", pa.array(["r8"]))
    c = rows("c", 1, n=1).append_column("EXPTIME", pa.nulls(1)).append_column("RUNID", pa.nulls(1))
    parts = [write_part(t, x, batch_id=1, task_tag=x["writer"][0].as_py()) for x in (a, b, c)]
    assert "EXPTIME" not in parts[2].arrow_schema.names              # null type: dropped
    assert commit(t, parts, app_id="app", batch_id=1) is not None
    schema = current_schema(t)
    assert schema.field("EXPTIME").type == pa.float64()
    assert schema.field("RUNID").type == pa.string()
    got = {r["writer"]: r for r in tables.read_table(t).to_pylist()}
    assert (got["a"]["EXPTIME"], got["b"]["EXPTIME"], got["c"]["EXPTIME"]) == (30.0, 12.5, None)
    assert (got["a"]["RUNID"], got["b"]["RUNID"], got["c"]["RUNID"]) == ("7", "r8", None)
    physical_types_match(t)


def test_concat_gives_a_task_one_type_per_column() -> None:
    a = pa.table({"EXPTIME": pa.array([30], pa.int64()), "RUNID": pa.array([7], pa.int64()),
                  "GAIN": pa.array([1.5], pa.float32())})
    b = pa.table({"EXPTIME": pa.array([12.5]), "RUNID": pa.array(["r8"]), "OBJECT": pa.nulls(1)})
    got = concat([a, b], pa.schema([("GAIN", pa.float64())]))
    assert got.schema.field("EXPTIME").type == pa.float64()
    assert got.schema.field("RUNID").type == pa.string()
    assert got.schema.field("GAIN").type == pa.float64()
    assert got.to_pydict() == {"EXPTIME": [30.0, 12.5], "RUNID": ["7", "r8"], "GAIN": [1.5, None],
                               "OBJECT": [None, None]}
    assert concat([], None).num_rows == 0


def test_part_disagreeing_with_the_table_is_rewritten_at_commit(tmp_path: Path) -> None:
    t = tmp_path / "sources"
    commit_rows(t, rows("w", 0, n=1).append_column("EXPTIME", pa.array([30.0])), "app", 0)
    # An executor that skipped conform, or a table changed by another writer meanwhile.
    late = rows("late", 1, n=2).append_column("EXPTIME", pa.array(["2.5", "n/a"]))
    part = write_part(t, late, batch_id=1, task_tag="t")
    assert commit(t, [part], app_id="app", batch_id=1) == 1
    committed = [Path(u).name for u in DeltaTable(t).file_uris()]
    assert part.path not in committed and len(committed) == 2
    got = tables.read_table(t, columns=["writer", "EXPTIME"]).sort_by("EXPTIME").to_pylist()
    assert [r["EXPTIME"] for r in got] == [2.5, 30.0, None]
    physical_types_match(t)


def test_footprints_and_vector_columns_round_trip(tmp_path: Path) -> None:
    t = tmp_path / "images"
    footprints = [[{"ext_number": 1, "hdu": 0, "ra": [10.0, 10.1, 10.1, 10.0],
                    "dec": [-5.0, -5.0, -4.9, -4.9]},
                   {"ext_number": 2, "hdu": 1, "ra": None, "dec": None}], None]
    table = pa.table({
        "path": ["/raw/a.fits", "/raw/b.fits"],
        "footprints": pa.array(footprints, FOOTPRINT),
        "FLUX_APER": pa.array([[1.5, 2.5, 3.5], None], pa.list_(pa.float32())),
        "VIGNET": pa.array([[[0.5, 1.0], [2.0, None]], []], pa.list_(pa.list_(pa.float32()))),
        "mtime": pa.array([T0, None], pa.timestamp("ns", "UTC")),
        "n_extensions": pa.array([2, 0], pa.int32()),
    })
    assert commit_rows(t, table, "app", 0) == 0
    got = tables.read_table(t).sort_by("path")
    assert got.to_pylist() == table.to_pylist()
    assert got.schema.field("footprints").type.equals(delta_type(FOOTPRINT))
    assert got.schema.field("FLUX_APER").type.equals(pa.list_(pa.float32()))
    assert got.schema.field("mtime").type == pa.timestamp("us", "UTC")
    physical_types_match(t)


def test_write_part_skips_empty_tables_and_null_type_columns(tmp_path: Path) -> None:
    assert write_part(tmp_path, rows("w", 0).slice(0, 0), batch_id=0, task_tag="t") is None
    assert write_part(tmp_path, pa.table({"x": pa.nulls(3)}), batch_id=0, task_tag="t") is None
    part = write_part(tmp_path / "new", rows("w", 3).append_column("OBJECT", pa.nulls(3)),
                      batch_id=3, task_tag="host/1 2")
    assert isinstance(part, PartFile)
    assert part.path.startswith("part-b00000003-host_1_2-") and part.path.endswith(".snappy.parquet")
    assert part.arrow_schema.names == ["writer", "batch", "NUMBER", "FLUX_ISO"]
    assert part.size == (tmp_path / "new" / part.path).stat().st_size
    assert abs(part.modification_time / 1000 - (tmp_path / "new" / part.path).stat().st_mtime) < 1


def test_stats_are_valid_delta_statistics(tmp_path: Path) -> None:
    t = tmp_path / "sources"
    later = T0 + timedelta(seconds=90)
    table = pa.table({
        "NUMBER": pa.array([3, 1, 2], pa.int32()),
        "FLUX_ISO": pa.array([2.5, -1.0, None], pa.float32()),
        "MAG_ISO": pa.array([20.0, float("nan"), 21.0]),
        "FLUX_RADIUS": pa.array([1.0, float("inf"), 2.0]),
        "FILTER": ["r", "g", None],
        "ingest_time": pa.array([T0, later, T0], pa.timestamp("us", "UTC")),
        "FLUX_APER": pa.array([[1.0], [2.0], None], pa.list_(pa.float32())),
    })
    part = write_part(t, table, batch_id=0, task_tag="t")
    stats = json.loads(part.stats)
    assert stats == {
        "numRecords": 3,
        "minValues": {"NUMBER": 1, "FLUX_ISO": -1.0, "FLUX_RADIUS": 1.0, "FILTER": "g",
                      "ingest_time": "2024-03-01T22:15:07.123Z"},
        "maxValues": {"NUMBER": 3, "FLUX_ISO": 2.5, "FILTER": "r",
                      "ingest_time": "2024-03-01T22:16:37.124Z"},
        "nullCount": {"NUMBER": 0, "FLUX_ISO": 1, "MAG_ISO": 0, "FLUX_RADIUS": 0, "FILTER": 1,
                      "ingest_time": 0},
    }
    commit(t, [part], app_id="app", batch_id=0)
    actions = pa.table(DeltaTable(t).get_add_actions(flatten=True)).to_pylist()[0]
    assert (actions["num_records"], actions["min.NUMBER"], actions["max.FLUX_ISO"]) == (3, 1, 2.5)
    # Pruning by these statistics must keep every matching row (max rounded up to the ms).
    assert tables.read_table(t, filters=[("ingest_time", ">=", later)]).num_rows == 1
    assert tables.read_table(t, filters=[("MAG_ISO", ">", 100.0)]).num_rows == 0
    assert tables.read_table(t, filters=[("NUMBER", "=", 2)]).column("FILTER").to_pylist() == [None]


# --- concurrent writers --------------------------------------------------------------

def _writer(table_dir: str, app_id: str, tag: str, batches: list[int], barrier, results) -> None:
    """Child process: one part per batch, committed after all writers reach the barrier."""
    out = []
    for batch in batches:
        part = write_part(table_dir, rows(tag, batch), batch_id=batch, task_tag=tag)
        if barrier is not None:
            barrier.wait(timeout=120)
        out.append(commit(table_dir, [part], app_id=app_id, batch_id=batch))
    results.put((tag, out))


def run_writers(specs: list[tuple[str, str, list[int]]], table_dir: Path,
                synchronized: bool) -> dict[str, list[int | None]]:
    """Run one process per (app_id, tag, batches); their commit results by tag."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(specs)) if synchronized else None
    results = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(table_dir), app, tag, batches, barrier, results))
             for app, tag, batches in specs]
    for proc in procs:
        proc.start()
    got = dict(results.get(timeout=300) for _ in procs)
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    return got


def test_two_processes_commit_every_batch_exactly_once(tmp_path: Path) -> None:
    t = tmp_path / "sources"
    got = run_writers([("daemon", "d", list(range(20))), ("replay", "r", list(range(20)))],
                      t, synchronized=False)
    versions = got["d"] + got["r"]
    assert sorted(versions) == list(range(40))
    assert committed_version(t, "daemon") == committed_version(t, "replay") == 19
    expected = [(w, b, n) for w in "dr" for b in range(20) for n in (1, 2, 3)]
    assert keys(tables.read_table(t)) == sorted(expected)


def test_race_on_the_same_batch_has_exactly_one_winner(tmp_path: Path) -> None:
    t = tmp_path / "sources"
    got = run_writers([("query", "p", list(range(8))), ("query", "q", list(range(8)))],
                      t, synchronized=True)
    winners = {}
    for batch in range(8):
        p, q = got["p"][batch], got["q"][batch]
        assert (p is None) != (q is None), (batch, p, q)
        winners[batch] = "p" if p is not None else "q"
    assert sorted(v for v in got["p"] + got["q"] if v is not None) == list(range(8))
    table = tables.read_table(t)
    assert keys(table) == sorted((winners[b], b, n) for b in range(8) for n in (1, 2, 3))
    assert committed_version(t, "query") == 7


def test_two_processes_creating_the_table_both_commit(tmp_path: Path) -> None:
    t = tmp_path / "images"
    got = run_writers([("a", "a", [0]), ("b", "b", [0])], t, synchronized=True)
    assert sorted(got["a"] + got["b"]) == [0, 1]
    assert committed_version(t, "a") == committed_version(t, "b") == 0
    assert keys(tables.read_table(t)) == sorted((w, 0, n) for w in "ab" for n in (1, 2, 3))
    assert DeltaTable(t).metadata().name == "images"


# --- readers -------------------------------------------------------------------------

def image_row(path: str, status: str, batch: int, ingest: datetime) -> pa.Table:
    """One images row."""
    return pa.table({"path": [path], "status": [status], "batch_id": pa.array([batch], pa.int64()),
                     "ingest_time": pa.array([ingest], pa.timestamp("us", "UTC"))})


def test_latest_images_keeps_the_newest_verdict_per_path(tmp_path: Path) -> None:
    t = Path(tables.images_path(tmp_path))
    commit_rows(t, pa.concat_tables([image_row("/raw/a.fits", "failed", 5, T0),
                                     image_row("/raw/b.fits", "ok", 5, T0)]), "daemon", 5)
    # A replay (own app_id, lower batch ids) retried a.fits later.
    commit_rows(t, image_row("/raw/a.fits", "ok", 0, T0 + timedelta(minutes=5)), "replay", 0)
    commit_rows(t, image_row("/raw/c.fits", "incomplete", 6, T0 + timedelta(minutes=1)),
                "daemon", 6)
    latest = tables.latest_images(tmp_path)
    assert list(zip(latest.column("path").to_pylist(), latest.column("status").to_pylist())) == [
        ("/raw/a.fits", "ok"), ("/raw/b.fits", "ok"), ("/raw/c.fits", "incomplete")]
    assert tables.latest_images(tmp_path, columns=["path"]).column_names == ["path"]
    assert tables.read_images(tmp_path).num_rows == 4
    assert len(tables.read_images_pandas(tmp_path, columns=["status"])) == 4


def test_missing_tables_read_as_empty(tmp_path: Path) -> None:
    assert current_schema(tables.sources_path(tmp_path)) is None
    assert tables.read_sources(tmp_path).num_rows == 0
    assert tables.read_sources(tmp_path, columns=["path"]).column_names == ["path"]
    assert tables.latest_images(tmp_path).num_rows == 0
    assert len(tables.read_sources_pandas(tmp_path)) == 0
    assert committed_version(tables.sources_path(tmp_path), "app") is None
    assert tables.sources_path("/data/sink") == "/data/sink/sources"
