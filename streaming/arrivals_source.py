"""The arrivals journal (`sexstream.journal`) as a Spark streaming source.

A Python data source (pyspark >= 4.2: `DataSourceStreamReader` with admission control):
its offsets are journal sequence numbers (`{"seq": n}`), so Spark's offset log names
exactly the entries of every micro-batch and a batch replayed after a crash reads the
same ones. An idle trigger costs one look at the journal's newest segment, whatever the
raw tree holds. The entries travel inside the batch's input partition (the journal is
read where the query is planned, on the driver); `commit` retires the journal segments
whose entries are all committed.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Iterator

from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition
from pyspark.sql.streaming.datasource import (ReadAllAvailable, ReadLimit, ReadMaxFiles, ReadMaxRows,
                                              SupportsTriggerAvailableNow)

from sexstream.journal import Journal

NAME = "sexstream-arrivals"
SCHEMA = "path STRING, length LONG, modificationTime TIMESTAMP, force BOOLEAN, stalled BOOLEAN, seq LONG"


class ArrivalsPartition(InputPartition):
    """The entries of one micro-batch: tuples in `SCHEMA`'s order."""

    def __init__(self, rows: list[tuple]):
        super().__init__(rows)
        self.rows = rows


class ArrivalsReader(DataSourceStreamReader, SupportsTriggerAvailableNow):
    def __init__(self, options: dict):
        self.journal = Journal(options["path"])
        self.max_files = max(1, int(options.get("maxFilesPerTrigger", "64")))
        self.target: int | None = None  # an available-now run reads up to here

    def prepareForTriggerAvailableNow(self) -> None:
        self.target = self.journal.last_seq()

    def initialOffset(self) -> dict:
        segments = self.journal.segments()
        return {"seq": max(0, segments[0][0] - 1) if segments else 0}

    def latestOffset(self, start: dict, limit: ReadLimit) -> dict:
        last = self.journal.last_seq() if self.target is None else self.target
        begin = int(start["seq"])
        if isinstance(limit, ReadAllAvailable):
            return {"seq": max(begin, last)}
        n = limit.max_rows if isinstance(limit, ReadMaxRows) else \
            limit.max_files if isinstance(limit, ReadMaxFiles) else self.max_files
        return {"seq": max(begin, min(last, begin + n))}

    def getDefaultReadLimit(self) -> ReadLimit:
        return ReadMaxRows(self.max_files)

    def reportLatestOffset(self) -> dict:
        return {"seq": self.journal.last_seq()}

    def partitions(self, start: dict, end: dict) -> list[InputPartition]:
        entries = self.journal.read(int(start["seq"]), int(end["seq"]))
        if not entries:
            return []
        return [ArrivalsPartition([
            (e.path, e.size, None if e.mtime is None else datetime.fromtimestamp(e.mtime, timezone.utc),
             e.force, e.stalled, e.seq) for e in entries])]

    def read(self, partition: InputPartition) -> Iterator[tuple]:
        yield from partition.rows

    def commit(self, end: dict) -> None:
        self.journal.retire(int(end["seq"]))


class ArrivalsSource(DataSource):
    """`spark.readStream.format("sexstream-arrivals").option("path", JOURNAL_DIR)`."""

    @classmethod
    def name(cls) -> str:
        return NAME

    def schema(self) -> str:
        return SCHEMA

    def streamReader(self, schema) -> DataSourceStreamReader:
        return ArrivalsReader(self.options)


def arrivals_stream(spark, journal_dir: str, *, max_files: int):
    """A streaming DataFrame of the journal's entries, at most `max_files` per batch."""
    spark.dataSource.register(ArrivalsSource)
    return (spark.readStream.format(NAME).option("path", str(journal_dir))
            .option("maxFilesPerTrigger", str(max_files)).load())
