"""`python -m streaming.jvmrecord OUT`: the run `sexstream jvm-archive` records the driver
JVM's class archive from (`streaming.jvmarchive`): what a replay and a daemon start-up
load, on two small generated images, in a JVM that writes OUT as it exits."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from pyspark import SparkContext

from sexstream import extractor, synthetic
from sexstream.backlog import fill
from sexstream.engine import Engine
from sexstream.journal import Journal, journal_folder
from sexstream.settings import load
from sexstream.sink import Sink
from streaming.preflight import check_executors
from streaming.query import start_query, warm_up
from streaming.reader import read_images, read_sources
from streaming.session import build_session


def _record(out: Path) -> None:
    """The recording run: what a replay and a daemon start-up load, on two small images."""
    with tempfile.TemporaryDirectory(prefix="sexstream-jvm-archive-") as tmp:
        raw, sink = Path(tmp, "raw"), Path(tmp, "sink")
        synthetic.make_night(raw, 2, seed=1, nx=256, ny=512)
        settings = load(raw=str(raw), sink=str(sink), checkpoint=str(Path(tmp, "checkpoint")))
        spark = build_session(settings, "sexstream-jvm-archive",
                              extra_conf={"spark.driver.extraJavaOptions": f"-XX:ArchiveClassesAtExit={out}"})
        try:
            plan = extractor.prepare(settings)
            check_executors(spark, settings)
            warm_up(spark)
            engine = Engine(Sink(sink), plan).start()
            fill(Journal(journal_folder(settings.checkpoint)), [str(raw)], engine.sink.index, plan.config_hash)
            query, _adapter = start_query(spark, settings, engine, checkpoint=settings.checkpoint,
                                          available_now=True)
            query.awaitTermination()
            if query.exception() is not None:
                raise RuntimeError(str(query.exception()))
            read_sources(spark, sink).count()
            read_images(spark, sink).count()
        finally:
            spark.stop()
        # the JVM writes the archive as it exits: end it (EOF on its stdin) and wait
        proc = SparkContext._gateway.proc
        proc.stdin.close()
        proc.wait(timeout=300)


if __name__ == "__main__":
    _record(Path(sys.argv[1]))
