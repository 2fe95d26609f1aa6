"""The live dashboard: what it serves, what it pushes, what it reads, and the page in chromium."""
from __future__ import annotations

import http.client
import json
import shutil
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable, write_deltalake

from sexstream.dashboard import events
from sexstream.tables import read_table

from sexstream.dashboard import Dashboard
from sexstream.dashboard import feed as feed_module
from tables_factory import Pointing, random_pointings, write_batch

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


class EventStream(events.EventStream):
    """The dashboard's push stream, checked to be an event stream on connection."""

    def __init__(self, url: str) -> None:
        super().__init__(url, timeout=30)
        assert self.response.status == 200
        assert self.response.getheader("Content-Type").startswith("text/event-stream")


def get(url: str, path: str, *, method: str = "GET", host: str | None = None) -> tuple[int, bytes, dict]:
    """Send `path` verbatim (no client-side normalisation) and return status, body, headers."""
    address = url.split("//")[1].rstrip("/")
    name, port = address.split(":")
    conn = http.client.HTTPConnection(name, int(port), timeout=10)
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", host or address)
    conn.endheaders()
    response = conn.getresponse()
    body = response.read()
    headers = dict(response.getheaders())
    conn.close()
    return response.status, body, headers


def wait_for(predicate, timeout: float = 10.0, step: float = 0.05):
    """Poll `predicate` until it returns something truthy (the test's side, not the page's)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s")


def loaded(board: Dashboard) -> dict:
    """The state once the initial load is done."""
    return wait_for(lambda: (s := json.loads(board.feed.state())) and not s["loading"] and s)


@pytest.fixture
def sink(tmp_path: Path) -> Path:
    """A sink with 2 batches: 6 ok images in g/r, one failed one."""
    now = datetime.now(timezone.utc)
    first = [Pointing(150.0 + 0.6 * k, 2.0, "g", n_sources=300) for k in range(3)]
    second = [Pointing(210.0, -30.0 + 0.6 * k, "r", n_sources=500) for k in range(3)]
    second.append(Pointing(30.0, 40.0, "i", status="failed",
                           reason="source-extractor exited with status 1: no WCS"))
    write_batch(tmp_path, first, batch_id=0, ingest_time=now - timedelta(minutes=20))
    write_batch(tmp_path, second, batch_id=1, ingest_time=now - timedelta(minutes=5))
    return tmp_path


@pytest.fixture
def board(sink: Path):
    with Dashboard(sink, port=0) as dashboard:
        yield dashboard


def test_state_holds_every_image_row_and_counts_every_source(board: Dashboard):
    state = loaded(board)
    assert len(state["images"]) == 7
    assert sorted({r["status"] for r in state["images"]}) == ["failed", "ok"]
    assert state["sources"] == 3 * 300 + 3 * 500
    failed = next(r for r in state["images"] if r["status"] == "failed")
    assert failed["reason"].startswith("source-extractor exited")
    ok = next(r for r in state["images"] if r["filter"] == "g")
    assert len(ok["fp"]) == 4 and len(ok["fp"][0][1]) == 4  # 4 extensions of 4 corners
    density = json.loads(board.feed.density(8))
    assert density["order"] == 8 and sum(density["counts"]) == 2400
    # the window applies through the images' ingest times: the last 10 minutes = batch 1
    since = time.time() - 600
    assert sum(json.loads(board.feed.density(8, "ingest", since))["counts"]) == 1500


def data_files(sink: Path) -> set[str]:
    """Absolute paths of the live data files of both tables."""
    return {str(Path(uri.removeprefix("file://"))) for name in ("sources", "images")
            for uri in DeltaTable(str(sink / name)).file_uris()}


def test_commit_is_pushed_with_its_rows_and_reads_only_its_own_files(board: Dashboard, sink: Path,
                                                                     monkeypatch):
    loaded(board)
    read = []
    real = feed_module.read_add
    monkeypatch.setattr(feed_module, "read_add",
                        lambda add, *a, **k: read.append(add.path) or real(add, *a, **k))
    before = data_files(sink)
    stream = EventStream(board.url)
    try:
        stream.next("hello")
        write_batch(sink, [Pointing(80.0, -10.0, "z", n_sources=700)], batch_id=2)
        _, sources = stream.next("sources", timeout=5)
        _, images = stream.next("images", timeout=5)
    finally:
        stream.close()
    assert sources["rows"] == 700 and sources["total"] == 3100
    assert [r["filter"] for r in images["rows"]] == ["z"] and images["rows"][0]["batch"] == 2
    assert set(read) == data_files(sink) - before and len(read) == 2  # nothing re-read


def test_rewritten_table_is_reloaded_from_its_snapshot(board: Dashboard, sink: Path):
    loaded(board)
    stream = EventStream(board.url)
    try:
        stream.next("hello")
        images = read_table(sink / "images")
        write_deltalake(str(sink / "images"), images.filter(pc.equal(images["status"], "ok")),
                        mode="overwrite")
        stream.next("reset", timeout=5)
    finally:
        stream.close()
    assert {r["status"] for r in json.loads(board.feed.state())["images"]} == {"ok"}


def test_dashboard_started_before_the_first_commit_follows_the_tables(tmp_path: Path):
    sink = tmp_path / "not-yet"
    with Dashboard(sink, port=0) as board:
        state = loaded(board)
        assert state["images"] == [] and state["versions"] == {"images": -1, "sources": -1}
        write_batch(sink, [Pointing(10.0, 10.0, "r")], batch_id=0)
        state = wait_for(lambda: (s := json.loads(board.feed.state()))["images"] and s["sources"] and s)
        assert state["sources"] == 200 and state["versions"] == {"images": 0, "sources": 0}


@pytest.mark.parametrize("path", [
    "/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/static/../server.py",
    "/static/%2e%2e/server.py", "/static/..%2fserver.py", "/static/%2E%2E%2Fserver.py",
    "/static/../../../../etc/passwd", "/static/", "/static", "/static/server.py",
    "/static//etc/passwd", "//etc/passwd", "/etc/passwd", "/server.py", "/feed.py",
    "/sexstream/dashboard/server.py", "/static/index.html/../../feed.py", "/favicon.ico",
    "/api", "/api/", "/api/state/../../server.py", "/events/../server.py", "/index.htm",
    "/static/app.js%00.py", "/static/APP.JS", "/.git/config", "/%2fetc%2fpasswd",
])
def test_paths_outside_the_page_and_its_data_are_404(board: Dashboard, path: str):
    status, body, _ = get(board.url, path)
    assert status == 404
    assert body == b"not found\n"


def test_the_page_its_files_and_data_are_served_read_only(board: Dashboard):
    status, body, headers = get(board.url, "/")
    assert status == 200 and b'<svg id="sky"' in body
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    status, body, headers = get(board.url, "/static/app.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    assert get(board.url, "/api/state")[0] == 200
    assert get(board.url, "/api/density?order=6&axis=obs&since=61000")[0] == 200
    assert get(board.url, "/api/density?order=six")[0] == 400
    assert get(board.url, "/api/density?since=nan")[0] == 400
    assert get(board.url, "/", method="POST")[0] == 405
    assert get(board.url, "/api/state", method="DELETE")[0] == 405
    assert get(board.url, "/", host="evil.example:80")[0] == 403  # DNS rebinding


# -- the page in a real browser ---------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    playwright = pytest.importorskip("playwright.sync_api",
                                     reason="pip install playwright (its driver, not its browsers)")
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def wait_in_page(page, expression: str, timeout: float = 10.0) -> None:
    """Wait until `expression` is true in the page (polled from here: the page's CSP
    forbids the eval that playwright's own wait_for_function needs)."""
    wait_for(lambda: page.evaluate(expression), timeout=timeout, step=0.02)


def count_footprints(page) -> int:
    return page.evaluate("document.querySelectorAll('#footprints path.fp').length")


@pytest.mark.browser
def test_page_draws_every_footprint_and_shows_a_new_commit_without_reload(browser, tmp_path: Path):
    ARTIFACTS.mkdir(exist_ok=True)
    sink = tmp_path / "sink"
    write_batch(sink, random_pointings(12, seed=3, n_sources=400), batch_id=0)
    write_batch(sink, [Pointing(95.0, -20.0, "g", status="failed", reason="timeout after 600 s")],
                batch_id=1)
    errors: list[str] = []
    with Dashboard(sink, port=0) as board:
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(board.url)
        wait_in_page(page, "document.querySelector('#live').classList.contains('on')")
        wait_in_page(page, "document.querySelectorAll('#footprints path.fp').length >= 52")
        assert count_footprints(page) == 13 * 4  # one polygon per extension, the failed one too
        assert page.inner_text("#n-ok") == "12" and page.inner_text("#n-failed") == "1"
        assert page.inner_text("#n-sources") == "4,800"
        assert "timeout after 600 s" in page.inner_text("#failures")
        page.wait_for_selector("#density path.cells")
        page.screenshot(path=str(ARTIFACTS / "dashboard_before_commit.png"))

        page.evaluate("window.__sameDocument = true")
        committed = time.time()
        write_batch(sink, [Pointing(300.0, 5.0 + 0.6 * k, "z", n_sources=900) for k in range(3)],
                    batch_id=2)
        wait_in_page(page, "document.querySelectorAll('#footprints path.fp').length === 64", timeout=5)
        shown = time.time() - committed
        wait_in_page(page, "document.querySelector('#n-sources').textContent === '7,500'", timeout=5)
        assert page.evaluate("window.__sameDocument === true")  # updated in place, no reload
        assert page.evaluate("window.sexstream.events") >= 2
        assert page.locator("#recent tr").first.inner_text().count("b00002_") == 1
        page.screenshot(path=str(ARTIFACTS / "dashboard_after_commit.png"))
        print(f"commit -> footprints on the page: {shown:.2f} s")

        # zoom with the wheel and the buttons, pan by dragging; hover shows the image
        before = page.get_attribute("#world", "transform")
        page.mouse.move(700, 400)
        page.mouse.wheel(0, -600)
        page.wait_for_timeout(100)
        zoomed = page.get_attribute("#world", "transform")
        assert zoomed != before and "scale(1)" not in zoomed
        page.mouse.down()
        page.mouse.move(600, 350, steps=4)
        page.mouse.up()
        assert page.get_attribute("#world", "transform") != zoomed
        page.click("#zoom-reset")
        page.locator("#recent tr").first.click()
        page.wait_for_timeout(300)
        assert "scale(90)" in page.get_attribute("#world", "transform")
        page.locator("#footprints path.fp.sel").first.hover()
        assert "b00002_" in page.inner_text("#tooltip") and "900" in page.inner_text("#tooltip")
        page.screenshot(path=str(ARTIFACTS / "dashboard_zoomed.png"))
        page.close()
    assert errors == []
