"""The query's stream sources, and a micro-batch's rows as the engine's items.

- the raw folders: Spark's file source (`binaryFile`, recursive, the image-name glob of
  `sexstream.rawfiles`), path/length/mtime only -- the content is never read;
- the requeue folder: JSON-lines manifests (`sexstream.requeue`) that the arrival gate,
  the start-up reconciliation and `retry-failed` write, read as a second source so a
  requeued path goes through Spark's offsets and the exactly-once commit like a listed
  one; Spark deletes a manifest once its batch is committed.
"""
from __future__ import annotations

import logging
from pathlib import Path

from sexstream.engine import Item
from sexstream.rawfiles import SPARK_GLOB
from sexstream.requeue import MANIFEST_SCHEMA, requeue_folder

log = logging.getLogger("sexstream")

#: binaryFile needs an explicit schema for a stream; `content` is never selected, so
#: Spark never reads the pixels.
FILE_SCHEMA = "path STRING, modificationTime TIMESTAMP, length LONG, content BINARY"


def file_stream(spark, folder: str, *, max_files: int, latest_first: bool = False):
    """A streaming DataFrame of (path, length, modificationTime) for new images below
    `folder` (recursive); at most `max_files` per micro-batch."""
    return (spark.readStream.format("binaryFile").schema(FILE_SCHEMA)
            .option("recursiveFileLookup", "true")
            .option("pathGlobFilter", SPARK_GLOB)
            .option("maxFilesPerTrigger", str(max_files))
            .option("latestFirst", str(latest_first).lower())
            .load(folder)
            .select("path", "length", "modificationTime"))


def requeue_stream(spark, folder: str):
    """A streaming DataFrame of (path, length, modificationTime, force) from the manifests
    in `folder`, one manifest per micro-batch; Spark deletes a manifest once the batch
    that read it is committed (cleanSource)."""
    from pyspark.sql import functions as F

    Path(folder).mkdir(parents=True, exist_ok=True)
    return (spark.readStream.format("json").schema(MANIFEST_SCHEMA)
            .option("maxFilesPerTrigger", "1")
            .option("cleanSource", "delete")
            .load(folder)
            .select("path", "length", F.col("mtime").cast("timestamp").alias("modificationTime"),
                    F.coalesce(F.col("force"), F.lit(False)).alias("force")))


def raw_stream(spark, folders: list[str], *, max_files: int, requeue: str | None = None):
    """The union of the folders' file sources (and the requeue source, when given)."""
    from pyspark.sql import functions as F

    df = None
    for folder in folders:
        Path(folder).mkdir(parents=True, exist_ok=True)
        s = file_stream(spark, folder, max_files=max_files)
        df = s if df is None else df.union(s)
    if requeue:
        df = df.withColumn("force", F.lit(False)).unionByName(requeue_stream(spark, requeue))
    return df


def checkpoint_sources(checkpoint: str) -> int | None:
    """How many sources the query of `checkpoint` was started with (None: no batch yet).
    Spark refuses to resume a checkpoint with a different number of sources."""
    offsets = Path(checkpoint) / "offsets"
    logs = [p for p in offsets.iterdir() if p.name.isdigit()] if offsets.is_dir() else []
    if not logs:
        return None
    lines = max(logs, key=lambda p: int(p.name)).read_text().splitlines()
    return len(lines) - 2  # "v1", the batch metadata, then one line per source


def requeue_source(checkpoint: str, folders: int = 1) -> str | None:
    """The requeue folder to read as the query's extra source, or None (with a warning)
    for a checkpoint made before the gate existed, which Spark could not resume with it."""
    if checkpoint_sources(checkpoint) == folders:
        log.warning("arrivals: checkpoint %s predates the requeue source: files the listing "
                    "misses are not requeued; start on a new checkpoint to enable it", checkpoint)
        return None
    return str(requeue_folder(checkpoint))


def local_path(uri: str) -> str:
    """`file:/a/b c#1.fits` (as the file source lists it: Hadoop's Path.toString, NOT
    URL-encoded) -> `/a/b c#1.fits`. Plain paths (requeue manifests) pass unchanged."""
    if uri.startswith("file://"):
        return uri[len("file://"):]
    if uri.startswith("file:"):
        return uri[len("file:"):]
    return uri


def items_of(df) -> list[Item]:
    """The micro-batch's rows as items, one per path (a path listed by the file source and
    requeued in the same batch is measured once; `force` if any of its rows says so)."""
    cols = ["path", "length", "modificationTime"] + (["force"] if "force" in df.columns else [])
    items: dict[str, Item] = {}
    for r in df.select(*cols).collect():
        path = local_path(r["path"])
        force = bool("force" in cols and r["force"])
        old = items.get(path)
        if old is None:
            items[path] = Item(path, int(r["length"] or 0), r["modificationTime"], force)
        elif force and not old.force:
            items[path] = Item(old.path, old.length, old.mtime, True)
    return list(items.values())
