"""The dashboard of a running daemon (`sexstream run --dashboard`), in headless chromium:
images dropped in the raw folder appear as footprints, live, without a reload."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from daemon_harness import Daemon, drop
from sexstream import synthetic
from test_dashboard import ARTIFACTS, browser, count_footprints, wait_in_page  # noqa: F401

pytestmark = [pytest.mark.spark, pytest.mark.browser]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_daemon_dashboard_draws_ingested_images_and_follows_new_ones(browser, tmp_path: Path):
    port = free_port()
    d = Daemon(tmp_path, extra=["--dashboard", "--port", str(port)])
    gen = tmp_path / "gen"
    singles = synthetic.make_night(gen, 4, seed=41, nx=256, ny=512)
    mef = synthetic.make_night(gen / "mef", 1, seed=42, nx=256, ny=512, n_ccd=2)
    try:
        first = [drop(p, d.raw) for p in singles[:2]] + [drop(p, d.raw, "mef_" + p.name) for p in mef]
        d.start()
        d.wait_for_paths(first)
        d.wait_for(lambda: f"dashboard: http://127.0.0.1:{port}" in d.log.read_text(), 60, "the dashboard URL")
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"http://127.0.0.1:{port}/")
        wait_in_page(page, "document.querySelectorAll('#footprints path.fp').length >= 4", timeout=30)
        assert count_footprints(page) == 2 + 2  # two single-CCD images, one 2-CCD mosaic
        page.evaluate("window.__sameDocument = true")
        later = [drop(p, d.raw) for p in singles[2:]]
        d.wait_for_paths(first + later)
        wait_in_page(page, "document.querySelectorAll('#footprints path.fp').length === 6", timeout=10)
        assert page.evaluate("window.__sameDocument === true")
        assert page.inner_text("#n-ok") == "5"
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard_live_daemon.png"))
        page.close()
        assert d.terminate() == 0
    finally:
        d.stop()
