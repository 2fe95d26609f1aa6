"""Reading the sink's Delta tables with Spark, without the Delta jars: through the Delta
log's list of committed files, never a bare folder read (that would also read the
orphan parts of batches that died before their commit)."""
from __future__ import annotations

import os

from sexstream.schema import IMAGES, SOURCES
from sexstream.tables import open_table


def read_table(spark, table_dir: str | os.PathLike[str]):
    """A DataFrame of the committed rows of the Delta table at `table_dir`.

    Columns added later (schema evolution) are merged: older files read them as null.
    A missing or empty table gives an empty DataFrame with the table's columns."""
    table = open_table(table_dir)
    if table is None:
        return spark.createDataFrame([], "path string")
    uris = table.file_uris()
    if not uris:
        import pyarrow as pa

        return spark.createDataFrame(pa.schema(table.schema().to_arrow()).empty_table().to_pandas())
    return spark.read.option("mergeSchema", "true").parquet(*uris)


def read_sources(spark, sink: str | os.PathLike[str]):
    """The sources table (one row per detected source) as a Spark DataFrame."""
    return read_table(spark, os.path.join(sink, SOURCES))


def read_images(spark, sink: str | os.PathLike[str]):
    """The images table (one row per image verdict) as a Spark DataFrame."""
    return read_table(spark, os.path.join(sink, IMAGES))
