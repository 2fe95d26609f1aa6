"""Spark reads the sink through the Delta log: committed rows only, evolved schema merged."""
from __future__ import annotations

import pyarrow as pa
import pytest

from sexstream import parts, transaction
from spark_fixtures import local_spark, spark_infra  # noqa: F401 (fixtures)
from streaming.reader import read_sources

pytestmark = pytest.mark.spark


def test_spark_reads_committed_rows_only_with_new_columns_merged(local_spark, tmp_path):
    table_dir = str(tmp_path / "sink" / "sources")
    old = pa.table({"NUMBER": pa.array([1, 2], pa.int32()), "path": ["/a.fits"] * 2})
    new = pa.table({"NUMBER": pa.array([1], pa.int32()), "path": ["/b.fits"], "FILTER": ["r"]})
    for b, t in enumerate((old, new)):
        transaction.commit(table_dir, [parts.write_part(table_dir, t, batch_id=b, task_tag="t")],
                    app_id="app", batch_id=b)
    parts.write_part(table_dir, pa.table({"NUMBER": pa.array([9], pa.int32()), "path": ["/orphan"]}),
                    batch_id=2, task_tag="crashed")  # never committed
    df = read_sources(local_spark, tmp_path / "sink").orderBy("path", "NUMBER")
    rows = [tuple(r) for r in df.select("path", "NUMBER", "FILTER").collect()]
    assert rows == [("/a.fits", 1, None), ("/a.fits", 2, None), ("/b.fits", 1, "r")]
    assert read_sources(local_spark, tmp_path / "nowhere").count() == 0
