"""The dashboard's sky questions: a click on the sky lists the sources there (a cone
search), a click on a source draws its light curve; the routes behind them, and the page
in a real headless chromium."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from sexstream import survey
from sexstream.dashboard import Dashboard
from sexstream.query import Sky
from sexstream.tables import read_sources
from test_dashboard import ARTIFACTS, browser, get, wait_in_page  # noqa: F401 (browser: a fixture)

NOW_MJD = time.time() / 86400 + 40587


@pytest.fixture(scope="module")
def sink(tmp_path_factory) -> Path:
    """Four fields seen in three epochs (g, r, i), the last one yesterday."""
    sink = tmp_path_factory.mktemp("survey") / "sink"
    survey.write(sink, survey.Survey(n_fields=4, epochs=3, sources_per_ccd=150.0,
                                     fields_per_stripe=4, start_mjd=NOW_MJD - 8), images_per_batch=4)
    return sink


@pytest.fixture(scope="module")
def star(sink: Path) -> tuple[float, float]:
    """A bright source of the second exposure."""
    rows = read_sources(sink, filters=[("MAG_ISO", "<", 19.0), ("MAG_ISO", ">", 17.0)])
    return rows["ALPHA_J2000"][0].as_py(), rows["DELTA_J2000"][0].as_py()


@pytest.fixture
def board(sink: Path):
    with Dashboard(sink, port=0) as dashboard:
        yield dashboard


def api(board: Dashboard, path: str) -> tuple[int, dict]:
    status, body, headers = get(board.url, path)
    assert headers["Content-Type"] == "application/json"
    return status, json.loads(body)


def test_cone_route_lists_the_nearest_sources_and_how_many_there_are(board, sink, star):
    ra, dec = star
    status, data = api(board, f"/api/cone?ra={ra}&dec={dec}&radius=90arcsec&limit=5")
    assert status == 200
    truth = Sky(sink).cone(ra, dec, "90arcsec")
    assert data["total"] == len(truth) > 5 and len(data["rows"]) == 5
    assert [r[-1] for r in data["rows"]] == list(truth["image_id"][:5])  # nearest first
    sep, r_ra, r_dec, mag, magerr, band, file, path, mjd, origin, _ = data["rows"][0]
    assert sep < 0.5 and abs(r_ra - ra) < 1e-4 and 17 < mag < 19 and band in "gri"
    assert path.endswith(file) and origin == "header" and mjd > NOW_MJD - 9
    assert data["mag"] == "MAG_ISO" and 0 < data["read"]["files"] <= data["read"]["of"]


def test_lightcurve_route_has_one_point_per_image(board, sink, star):
    status, data = api(board, f"/api/lightcurve?ra={star[0]}&dec={star[1]}")
    truth = Sky(sink).lightcurve(*star)
    assert status == 200 and len(data["points"]) == len(truth) >= 2
    assert data["value"] == "MAG_ISO" and data["error"] == "MAGERR_ISO" and data["is_mag"]
    assert [p[0] for p in data["points"]] == pytest.approx(list(truth["obs_mjd"]))
    assert {p[2] for p in data["points"]} <= {"g", "r", "i"}


@pytest.mark.parametrize("query, message", [
    ("/api/cone?dec=2&radius=5arcsec", "ra and dec are required"),
    ("/api/cone?ra=150&dec=95&radius=5arcsec", "Dec '95' is out of range"),
    ("/api/cone?ra=150&dec=2&radius=5", "has no unit"),
    ("/api/cone?ra=150&dec=2&radius=2deg", "larger than the page's 1 deg"),
    ("/api/cone?ra=150&dec=2&radius=5arcsec&limit=many", "invalid literal"),
    ("/api/lightcurve?ra=abc&dec=2", "RA 'abc' is not an angle"),
])
def test_questions_that_make_no_sense_are_400_with_the_reason(board, query, message):
    status, data = api(board, query)
    assert status == 400 and message in data["error"]


def test_a_sink_without_sources_answers_400(tmp_path):
    with Dashboard(tmp_path / "empty", port=0) as empty:
        status, data = api(empty, "/api/cone?ra=150&dec=2&radius=5arcsec")
    assert status == 400 and "no sources table" in data["error"]


@pytest.mark.browser
def test_click_on_the_sky_lists_sources_and_a_click_on_one_draws_its_light_curve(browser, board, sink, star):
    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(board.url)
    wait_in_page(page, "document.querySelector('#live').classList.contains('on')")
    page.click("#windows button[data-value='all']")
    wait_in_page(page, "document.querySelectorAll('#footprints path.fp').length === 12 * 8")
    page.evaluate(f"window.sexstream.view({star[0]}, {star[1]}, 400)")
    page.wait_for_timeout(200)
    at = page.evaluate(f"window.sexstream.screenOf({star[0]}, {star[1]})")
    page.mouse.click(at["x"], at["y"])
    wait_in_page(page, "document.body.dataset.cones === '1'")
    cone = page.evaluate("window.sexstream.lastCone")
    radius = cone["radius_arcsec"]
    assert 1 < radius < 60
    truth = Sky(sink).cone(cone["ra"], cone["dec"], f"{radius}arcsec")
    assert cone["total"] == len(truth) >= 2
    shown = page.locator("#sources-rows tr")
    assert shown.count() == len(truth)
    assert page.locator("#query circle.src").count() == len(truth)
    assert page.locator("#query path.cone").count() == 1
    assert "sources within" in page.inner_text("#sources-note")
    nearest = min(range(len(truth)), key=lambda i: abs(truth["ALPHA_J2000"][i] - star[0])
                  + abs(truth["DELTA_J2000"][i] - star[1]))
    assert abs(truth["ALPHA_J2000"][nearest] - star[0]) < 1e-6  # the source under the cursor
    page.screenshot(path=str(ARTIFACTS / "dashboard_cone.png"))

    row = [r[1:3] for r in cone["rows"]].index([pytest.approx(truth["ALPHA_J2000"][nearest], abs=1e-6),
                                                 pytest.approx(truth["DELTA_J2000"][nearest], abs=1e-6)])
    page.locator(f"#sources-rows tr[data-i='{row}']").click()
    wait_in_page(page, "document.body.dataset.curves === '1'")
    curve = Sky(sink).lightcurve(cone["rows"][row][1], cone["rows"][row][2])
    assert page.locator("#curve circle.pt").count() == len(curve) >= 2
    assert "images saw a source within 1″" in page.inner_text("#curve-note")
    assert page.locator("#sources-rows tr.sel").count() == 1
    page.screenshot(path=str(ARTIFACTS / "dashboard_lightcurve.png"))

    page.locator("#query circle.src").last.click()  # a marker on the map works too (the top one)
    wait_in_page(page, "document.body.dataset.curves === '2'")
    assert page.evaluate("document.body.dataset.cones") == "1"  # no new cone for that click
    page.close()
    assert errors == []
