"""Benchmark of the live dashboard on a big sink: refresh latency and server memory.

Writes a sink with --rows source rows (default 10 M, in 1 M-row commits, made directly
as Delta rows by tests/tables_factory.py), starts `python -m sexstream.dashboard
dashboard` on it in its own process, then commits --commits small batches and measures,
with a Server-Sent Events client, the time from each commit becoming visible (its
_delta_log file's mtime) to the event's arrival. Prints the figures; target <= 1 s.

    .venv/bin/python scripts/bench_dashboard.py              # ~2 min on 2 cores
    .venv/bin/python scripts/bench_dashboard.py --rows 1e6   # quick look
"""
from __future__ import annotations

import argparse
import http.client
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from deltalake import write_deltalake  # noqa: E402

from sexstream.dashboard.events import EventStream  # noqa: E402

from tables_factory import (Pointing, images_table, random_pointings,  # noqa: E402
                            sources_table, write_batch)


def memory_mb(pid: int) -> tuple[float, float]:
    """(resident set size, its peak) of a process, in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def write_sink(sink: Path, rows: int, per_image: int, chunk: int) -> float:
    """Write `rows` sources (and their images) in commits of `chunk` rows; seconds taken."""
    start = time.perf_counter()
    ingest = datetime.now(timezone.utc) - timedelta(hours=6)
    images_per_chunk = max(1, chunk // per_image)
    n_images = max(1, rows // per_image)
    batch = 0
    for first in range(0, n_images, images_per_chunk):
        count = min(images_per_chunk, n_images - first)
        pointings = random_pointings(count, seed=batch, n_sources=per_image)
        when = ingest + timedelta(minutes=batch)
        write_deltalake(str(sink / "sources"),
                        sources_table(pointings, batch_id=batch, ingest_time=when, seed=batch),
                        mode="append")
        write_deltalake(str(sink / "images"),
                        images_table(pointings, batch_id=batch, ingest_time=when, seed=batch),
                        mode="append")
        batch += 1
        print(f"  wrote {min((first + count) * per_image, rows):>11,} source rows", end="\r")
    print()
    return time.perf_counter() - start


def get_json(host: str, port: int, path: str) -> tuple[dict, float]:
    """GET a JSON route: (document, seconds taken)."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=120)
    conn.request("GET", path)
    body = conn.getresponse().read()
    conn.close()
    return json.loads(body), time.perf_counter() - start


def browser_latency(url: str, sink: Path, commits: int, per_image: int) -> tuple[float, list[float]]:
    """(seconds to load the page, [commit -> new footprints drawn, seconds]) in chromium."""
    from playwright.sync_api import sync_playwright

    args = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    count = "document.querySelectorAll('#footprints path.fp').length"
    shown = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=args)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        start = time.perf_counter()
        page.goto(url)
        page.click("#windows button[data-value=all]")
        n = page.evaluate(count)
        while page.evaluate("document.querySelector('#loading').hidden") is False or n == 0:
            time.sleep(0.05)
            n = page.evaluate(count)
        load = time.perf_counter() - start
        for i in range(commits):
            pointings = [Pointing(120.0 + 0.6 * k, 20.0 + i, "g", n_sources=per_image)
                         for k in range(4)]
            write_batch(sink, pointings, batch_id=20_000 + i)
            log = max((sink / "images" / "_delta_log").glob("*.json"))
            visible = log.stat().st_mtime
            while page.evaluate(count) < n + 16:
                time.sleep(0.01)
            shown.append(time.time() - visible)
            n = page.evaluate(count)
            time.sleep(0.3)
        browser.close()
    return load, shown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=float, default=10_000_000, help="source rows in the sink")
    parser.add_argument("--per-image", type=int, default=5000, help="sources per image")
    parser.add_argument("--chunk", type=int, default=1_000_000, help="source rows per commit")
    parser.add_argument("--commits", type=int, default=10, help="batches committed live")
    parser.add_argument("--dir", default=None, help="where to write the sink (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the sink afterwards")
    parser.add_argument("--browser", action="store_true",
                        help="also time commit -> footprints drawn in headless chromium")
    args = parser.parse_args(argv)
    rows = int(args.rows)

    work = Path(args.dir or tempfile.mkdtemp(prefix="bench-dashboard-"))
    sink = work / "sink"
    server = None
    try:
        print(f"writing {rows:,} source rows to {sink} ...")
        write_s = write_sink(sink, rows, args.per_image, args.chunk)
        server = subprocess.Popen(
            [sys.executable, "-m", "sexstream.dashboard", "dashboard", "--sink", str(sink),
             "--port", "0"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        started = time.perf_counter()
        line = server.stdout.readline()
        url = line.split(": ", 1)[1].split()[0]
        host, port = url.split("//")[1].rstrip("/").split(":")
        port = int(port)
        while True:
            state, _ = get_json(host, port, "/api/state")
            if not state["loading"]:
                break
            time.sleep(0.2)
        load_s = time.perf_counter() - started
        rss_loaded, _ = memory_mb(server.pid)
        density, density_s = get_json(host, port, "/api/density?order=6")
        _, state_s = get_json(host, port, "/api/state")

        client = EventStream(f"http://{host}:{port}")
        time.sleep(0.5)
        lat = {"sources": [], "images": []}
        for i in range(args.commits):
            pointings = [Pointing(200.0 + 0.6 * k, -10.0 + i, "r", n_sources=args.per_image)
                         for k in range(4)]
            write_batch(sink, pointings, batch_id=10_000 + i)
            seen = set()
            while seen != {"sources", "images"}:
                arrived, event = client.events.get(timeout=30)
                if event.get("type") in lat:
                    lat[event["type"]].append(arrived - event["visible_ms"] / 1000)
                    seen.add(event["type"])
            time.sleep(0.3)
        rss, peak = memory_mb(server.pid)
        page_s = browser_latency(url, sink, args.commits, args.per_image) if args.browser else None

        def fmt(values: list[float]) -> str:
            ms = sorted(v * 1000 for v in values)
            return (f"median {statistics.median(ms):6.1f} ms   max {ms[-1]:6.1f} ms   "
                    f"(n={len(ms)})")

        total = state["sources"] + args.commits * 4 * args.per_image
        print(f"\nsink: {state['sources']:,} source rows, {len(state['images']):,} images "
              f"(written in {write_s:.1f} s)")
        print(f"server initial load (snapshot of both tables): {load_s:6.1f} s")
        print(f"GET /api/state: {state_s * 1000:.0f} ms;  GET /api/density?order=6: "
              f"{density_s * 1000:.0f} ms ({len(density['cells'])} cells, "
              f"{sum(density['counts']):,} sources)")
        print(f"refresh latency, commit visible -> SSE event received "
              f"({args.commits} commits of {4 * args.per_image:,} rows):")
        for table in ("sources", "images"):
            print(f"  {table:8s} {fmt(lat[table])}")
        print(f"server memory: RSS {rss_loaded:.0f} MB after load, {rss:.0f} MB after "
              f"{total:,} rows, peak {peak:.0f} MB")
        if page_s:
            page_load, shown = page_s
            print(f"chromium: page ready with all footprints in {page_load:.1f} s; commit -> "
                  f"footprints drawn: {fmt(shown)}")
        worst = max(max(lat["sources"]), max(lat["images"]), *(page_s[1] if page_s else []))
        print(f"target <= 1 s: {'met' if worst <= 1.0 else 'MISSED'} (worst {worst * 1000:.0f} ms)")
        return 0
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        if not args.keep and args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
