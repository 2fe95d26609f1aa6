"""The daemon's metrics without a JVM: the engine's batches (real SExtractor, real Delta
tables) counted by the metrics hook, read back through `/metrics` and parsed with
prometheus_client's own parser; reason classes; the sink's files from the Delta log;
the JSON log format."""
from __future__ import annotations

import io
import json
import logging
import os
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest
from deltalake import DeltaTable
from prometheus_client.parser import text_string_to_metric_families

from sexstream import extractor, settings, synthetic
from sexstream.endpoints import EndpointServer, Endpoints
from sexstream.engine import Engine, Item, SerialRunner
from sexstream.logformat import JsonFormatter
from sexstream.metrics import DaemonMetrics, sink_registry
from sexstream.reasons import CLASSES, reason_class
from sexstream.sink import Sink
from sexstream.sinkfiles import SinkFiles
from sexstream.tables import read_table

KEYS = ("NUMBER", "EXT_NUMBER", "FLUX_ISO", "X_IMAGE", "Y_IMAGE")
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """GET `url` and parse it as Prometheus text: {(sample name, sorted labels): value}."""
    with NO_PROXY.open(url, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("frames")
    good = synthetic.make_night(folder, 3, seed=41, nx=160, ny=160)
    text = folder / "notes.fits"
    text.write_text("not an image\n")
    cut = folder / "cut.fits"
    cut.write_bytes(good[0].read_bytes()[:5000])
    return [*good, text, cut]


@pytest.fixture(scope="module")
def plan():
    return extractor.prepare(settings.load(keys=KEYS, fitskeys=("FILTER",)))


def items(paths, mtime: float | None = None) -> list[Item]:
    when = None if mtime is None else datetime.fromtimestamp(mtime, timezone.utc)
    return [Item(str(p), os.path.getsize(p), when) for p in paths]


@pytest.mark.parametrize("reason, cls", [
    ("truncated: header declares 8395200 bytes, file has 100000", "truncated"),
    ("empty file (0 bytes)", "truncated"),
    ("truncated gzip stream (download not finished?)", "truncated"),
    ("not a FITS file: text starting 'not an image' (a FITS file starts with 'SIMPLE  =')", "not_fits"),
    ("3-D image in HDU 0 (10x10x3): SExtractor 2.25 measures only the first plane", "not_fits"),
    ("invalid FITS header in HDU 1: NAXIS = 2147483648 is out of range (0-999)", "invalid_header"),
    ("too large: 5000000000 bytes > max_image_bytes 4000000000", "too_large"),
    ("SExtractor timed out after 600 s (after 3 attempts)", "timeout"),
    ("no verdict within 600 s: the measurement was stopped (while running SExtractor)", "timeout"),
    ("SExtractor failed (exit 1): Too many input images", "sextractor"),
    ("SExtractor killed by SIGSEGV (after 3 attempts)", "sextractor"),
    ("quarantined: the process measuring it died 2 times (killed by SIGKILL)", "quarantined"),
    ("internal error: TypeError: boom (while reading the headers)", "crashed"),
    ("out of memory (while reading the catalog)", "out_of_memory"),
    ("dangling symlink: /raw/a.fits -> /gone does not exist", "unreadable"),
    ("still being written: its writer has kept it open past the stall bound", "still_being_written"),
    ("broken gzip stream: invalid distance", "corrupt"),
    ("something nobody foresaw", "other"),
    (None, "other"),
])
def test_every_reason_falls_in_one_small_fixed_class(reason, cls):
    assert reason_class(reason) == cls
    assert cls in CLASSES


def test_a_scrape_counts_the_committed_batches_by_status_reason_and_latency(tmp_path, frames, plan):
    sink = Sink(tmp_path / "sink")
    metrics = DaemonMetrics(SinkFiles(sink.root, refresh_s=0), jvm_pid=lambda: None)
    engine = Engine(sink, plan, app_id="query-m", hooks=[metrics])
    arrived = time.time() - 30.0  # every file last written 30 s before its batch
    first = engine.run(0, items(frames[:3], arrived), SerialRunner())
    second = engine.run(1, items(frames[3:], arrived), SerialRunner())
    engine.run(2, items(frames[:1], arrived), SerialRunner())  # the same bytes again: skipped
    server = EndpointServer(Endpoints(metrics.registry, lambda: {"ready": True, "reasons": []})).start()
    try:
        m = scrape(server.url + "/metrics")
    finally:
        server.stop()
    images = read_table(sink.images).to_pandas()
    assert m["sexstream_images_total", (("status", "ok"),)] == 3
    assert m["sexstream_images_total", (("status", "failed"),)] == 1
    assert m["sexstream_images_total", (("status", "incomplete"),)] == 1
    assert m["sexstream_images_total", (("status", "skipped"),)] == 1
    assert m["sexstream_sources_total", ()] == first.sources + second.sources == images.n_sources.sum() > 0
    assert m["sexstream_batches_total", ()] == 3
    assert m["sexstream_image_failures_total", (("reason", "not_fits"), ("status", "failed"))] == 1
    assert m["sexstream_image_failures_total", (("reason", "truncated"), ("status", "incomplete"))] == 1
    assert m["sexstream_batch_duration_seconds_count", ()] == 3
    # one latency per measured image (the skipped one has none), each ~30 s
    assert m["sexstream_arrival_to_commit_seconds_count", ()] == 5
    assert m["sexstream_arrival_to_commit_seconds_bucket", (("le", "10.0"),)] == 0
    assert m["sexstream_arrival_to_commit_seconds_bucket", (("le", "60.0"),)] == 5
    assert 5 * 30 <= m["sexstream_arrival_to_commit_seconds_sum", ()] < 5 * 60
    # the sink, from the Delta log: one commit per batch and table (its app transaction),
    # one part per task
    assert m["sexstream_sink_commits_total", (("table", "images"),)] == 3
    assert m["sexstream_sink_commits_total", (("table", "sources"),)] == 3
    assert m["sexstream_sink_files", (("table", "images"),)] == len(DeltaTable(sink.images).file_uris()) >= 3
    assert m["sexstream_sink_files", (("table", "sources"),)] == len(DeltaTable(sink.sources).file_uris()) >= 1
    assert m["sexstream_sink_small_files", (("table", "images"),)] == m["sexstream_sink_files", (("table", "images"),)]
    assert 0 <= m["sexstream_last_commit_age_seconds", ()] < 60
    assert m["sexstream_driver_memory_bytes", (("process", "python"),)] > 10e6
    assert ("sexstream_driver_memory_bytes", (("process", "jvm"),)) not in m  # no JVM here


def test_the_metrics_names_and_labels_never_grow_with_history(tmp_path, frames, plan):
    sink = Sink(tmp_path / "sink")
    metrics = DaemonMetrics(SinkFiles(sink.root, refresh_s=0))
    engine = Engine(sink, plan, app_id="query-n", hooks=[metrics])
    engine.run(0, items(frames[3:]), SerialRunner())
    before = set(scrape_registry(metrics))
    for i, name in enumerate(["a b.fits", "c.fits", "d.fits"], start=1):
        bad = tmp_path / name
        bad.write_text(f"text {i}\n")
        engine.run(i, items([bad]), SerialRunner())
    assert set(scrape_registry(metrics)) == before  # new files, same series
    assert not any(".fits" in v or "/" in v for _, labels in before for _, v in labels)


def scrape_registry(metrics: DaemonMetrics) -> dict:
    server = EndpointServer(Endpoints(metrics.registry, lambda: {"ready": True, "reasons": []})).start()
    try:
        return scrape(server.url + "/metrics")
    finally:
        server.stop()


def test_sink_files_are_read_from_the_log_and_cached(tmp_path, frames, plan):
    sink = Sink(tmp_path / "sink")
    files = SinkFiles(sink.root, refresh_s=3600)
    assert files.tables() == ()  # no table yet
    files = SinkFiles(sink.root, refresh_s=3600)
    engine = Engine(sink, plan, app_id="query-f")
    engine.run(0, items(frames[:2]), SerialRunner())
    (images,) = [t for t in files.tables() if t.table == "images"]
    parts = len(DeltaTable(sink.images).file_uris())
    assert (images.commits, images.files, images.small_files) == (1, parts, parts)
    assert images.bytes == sum(p.stat().st_size for p in Path(sink.images).glob("*.parquet"))
    engine.run(1, items(frames[2:3]), SerialRunner())
    assert [t for t in files.tables() if t.table == "images"][0].commits == 1  # cached
    files.refresh_s = 0
    assert [t for t in files.tables() if t.table == "images"][0].commits == 2


def test_a_standalone_dashboard_registry_holds_the_sink_and_no_daemon_counters(tmp_path, frames, plan):
    sink = Sink(tmp_path / "sink")
    Engine(sink, plan, app_id="query-d").run(0, items(frames[:1]), SerialRunner())
    server = EndpointServer(Endpoints(sink_registry(SinkFiles(sink.root)), lambda: {"ready": True})).start()
    try:
        m = scrape(server.url + "/metrics")
    finally:
        server.stop()
    assert m["sexstream_sink_commits_total", (("table", "images"),)] == 1
    assert not any(name.startswith("sexstream_images") for name, _ in m)


def test_readyz_is_503_with_its_reasons_and_healthz_200(tmp_path):
    ready = {"ready": False, "state": "starting", "reasons": ["starting: building the Spark session"]}
    server = EndpointServer(Endpoints(sink_registry(SinkFiles(tmp_path)), lambda: ready)).start()
    try:
        with pytest.raises(urllib.error.HTTPError) as err:
            NO_PROXY.open(server.url + "/readyz", timeout=10)
        assert err.value.code == 503
        assert json.loads(err.value.read())["reasons"] == ["starting: building the Spark session"]
        ready.update(ready=True, reasons=[], state="running")
        with NO_PROXY.open(server.url + "/readyz", timeout=10) as resp:
            assert resp.status == 200 and json.loads(resp.read())["ready"] is True
        with NO_PROXY.open(server.url + "/healthz", timeout=10) as resp:
            assert resp.status == 200 and json.loads(resp.read())["alive"] is True
        with pytest.raises(urllib.error.HTTPError) as err:
            NO_PROXY.open(server.url + "/metrics/../etc/passwd", timeout=10)
        assert err.value.code == 404
    finally:
        server.stop()


def test_json_log_lines_carry_batches_and_failures_as_fields(tmp_path, frames, plan):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("sexstream")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        Engine(Sink(tmp_path / "sink"), plan, app_id="query-j").run(0, items(frames[2:]), SerialRunner())
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("an error with its traceback")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    (batch,) = [r for r in records if r["event"] == "batch"]
    assert (batch["batch_id"], batch["files"], batch["ok"], batch["failed"], batch["incomplete"]) == (0, 3, 1, 1, 1)
    assert batch["message"].startswith("batch 0: 3 files") and "arrivals" not in batch
    failures = {r["path"]: r for r in records if r["event"] == "failure"}
    assert failures[str(frames[3])]["reason_class"] == "not_fits"
    assert failures[str(frames[4])]["status"] == "incomplete"
    (error,) = [r for r in records if r["level"] == "ERROR"]
    assert "ValueError: boom" in error["exception"]
    assert all(r["time"].endswith("Z") for r in records)
