"""Coverage from the tables: windows, footprints, MOC, HEALPix density, the static map, the CLI."""
from __future__ import annotations

import argparse
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from astropy import units as u
from astropy_healpix import lonlat_to_healpix
from mocpy import MOC

from sexstream import coverage
from sexstream.dashboard.commands import register
from tables_factory import CCD_SIZE, Pointing, images_table, write_batch

matplotlib.use("Agg")
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
NOW = datetime(2025, 3, 1, 6, 0, tzinfo=timezone.utc)
CENTRES = [(10.0, -20.0), (150.0, 2.0), (359.9, 45.0), (220.0, -70.0)]


@pytest.fixture
def sink(tmp_path: Path) -> Path:
    """Two batches: 4 pointings 20 h ago (one straddling RA 0), 2 one hour ago (one failed)."""
    old = [Pointing(ra, dec, f, n_sources=400, obs_mjd=60735.0 + i / 100)
           for i, ((ra, dec), f) in enumerate(zip(CENTRES, "griz"))]
    new = [Pointing(80.0, 10.0, "r", n_sources=250, obs_mjd=60736.2),
           Pointing(81.0, 10.0, "r", status="failed", reason="bad", obs_mjd=60736.21)]
    write_batch(tmp_path, old, batch_id=0, ingest_time=NOW - timedelta(hours=20))
    write_batch(tmp_path, new, batch_id=1, ingest_time=NOW - timedelta(hours=1))
    return tmp_path


@pytest.mark.parametrize("text, seconds", [
    ("1h", 3600), ("24h", 86400), ("7d", 7 * 86400), ("night", 16 * 3600), ("all", None),
    ("90m", 5400), ("1.5d", 1.5 * 86400), ("week", 7 * 86400), (" 2H ", 7200), (None, None),
])
def test_windows_parse_to_seconds(text, seconds):
    assert coverage.parse_window(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "-1h", "0h", "3 days", "yesterday"])
def test_bad_windows_are_refused(text):
    with pytest.raises(ValueError):
        coverage.parse_window(text)


def test_window_selects_images_by_ingest_or_observation_time(sink: Path):
    assert coverage.read_images(sink, "all").num_rows == 6
    assert coverage.read_images(sink, "24h", now=NOW).num_rows == 6
    assert coverage.read_images(sink, "night", now=NOW).num_rows == 2  # 16 h: batch 1 only
    assert coverage.read_images(sink, "90m", now=NOW)["batch_id"].to_pylist() == [1, 1]
    # obs axis: counted back from the latest obs_mjd (60736.21), whatever the clock says
    assert coverage.read_images(sink, "1h", axis="obs").num_rows == 2
    assert coverage.read_images(sink, "2d", axis="obs").num_rows == 6
    assert coverage.read_images(sink.parent / "nothing-here", "all").num_rows == 0


def test_footprints_have_one_polygon_per_extension_with_its_filter(sink: Path):
    fps = coverage.footprints(coverage.read_images(sink, "all"))
    assert len(fps) == 6 * 4
    assert {fp.filter for fp in fps} == {"g", "r", "i", "z"}
    first = [fp for fp in fps if fp.filter == "g"]
    assert len(first) == 4 and all(len(fp.ra) == 4 for fp in first)
    assert np.allclose(np.mean([fp.dec for fp in first]), -20.0, atol=0.01)


def test_moc_contains_the_pointings_and_nothing_far_away(sink: Path):
    images = coverage.read_images(sink, "all")
    moc = coverage.footprint_moc(images, order=12)
    ra = np.array([c[0] for c in CENTRES] + [80.0])
    dec = np.array([c[1] for c in CENTRES] + [10.0])
    # the centre is in the CCD gap (0.01 deg): test points 0.06 deg inside the CCDs instead
    for dra, ddec in ((0.06, 0.06), (-0.06, 0.06), (0.06, -0.06), (-0.06, -0.06)):
        inside = moc.contains_lonlat((ra + dra / np.cos(np.radians(dec))) * u.deg,
                                     (dec + ddec) * u.deg)
        assert inside.all()
    far = moc.contains_lonlat(((ra + 5.0) % 360) * u.deg, np.clip(dec + 3.0, -90, 90) * u.deg)
    assert not far.any()
    # the failed image at RA 81 has footprints too (it was measured, then failed)
    footprint_area = 6 * 4 * CCD_SIZE ** 2
    area = moc.sky_fraction * 4 * np.pi * (180 / np.pi) ** 2
    assert footprint_area * 0.95 < area < footprint_area * 1.25
    assert coverage.footprint_moc(images, order=8).sky_fraction > moc.sky_fraction


def test_moc_of_no_image_is_empty(sink: Path):
    assert coverage.footprint_moc(coverage.read_images(sink, "1s", now=NOW), 10).sky_fraction == 0


def test_healpix_order_of_the_sources_is_inferred_from_their_positions():
    ra, dec = np.array([10.0, 200.0, 359.5]), np.array([-20.0, 45.0, 0.1])
    for order in (0, 7, 12, 29):
        pix = np.asarray(lonlat_to_healpix(ra * u.deg, dec * u.deg, 1 << order, order="nested"))
        assert coverage.infer_healpix_order(pix.astype(np.int64), ra, dec) == order
    assert coverage.infer_healpix_order(np.array([1, 2, 3]), ra, dec) is None


def test_density_counts_every_source_of_the_window_in_its_cell(sink: Path):
    images = coverage.read_images(sink, "all")
    cells, counts = coverage.source_density(sink, images, order=6)
    assert counts.sum() == 4 * 400 + 250
    expected = lonlat_to_healpix(80.0 * u.deg, 10.0 * u.deg, 1 << 6, order="nested")
    assert expected in cells
    recent = coverage.read_images(sink, "night", now=NOW)
    cells, counts = coverage.source_density(sink, recent, order=6)
    assert counts.sum() == 250 and set(cells) <= {expected - 1, expected, expected + 1,
                                                  *range(expected - 4, expected + 4)}


def test_density_memory_grows_with_cells_not_with_sources():
    density = coverage.DensityCounts(order=10)
    rng = np.random.default_rng(0)
    for _ in range(20):  # 2 M sources of 3 images over ~50 cells
        density.add(rng.integers(0, 3, 100_000), rng.integers(1000, 1050, 100_000))
    assert len(density) <= 3 * 50
    cells, counts = density.counts(np.array([True, False, True]), order=10)
    assert 1_300_000 < counts.sum() < 1_370_000 and len(cells) == 50
    cells, counts = density.counts(None, order=8)
    assert counts.sum() == 2_000_000 and set(cells) == set(range(1000 // 16, 1049 // 16 + 1))


def polygon_layers(fig) -> list:
    """The figure's polygon layers: [density cells, footprint outlines]."""
    from matplotlib.collections import PolyCollection

    return [c for c in fig.axes[0].collections if isinstance(c, PolyCollection)]


def test_static_map_draws_density_and_every_footprint(sink: Path):
    from sexstream.plot import coverage_figure, sky_x

    fig = coverage_figure(sink, "all", order=6)
    ax = fig.axes[0]
    assert ax.name == "mollweide"
    cells, outlines = polygon_layers(fig)
    assert len(outlines.get_paths()) == 24  # one polygon per extension
    assert len(cells.get_array()) >= 6
    # centred on RA 180 the map's edge is RA 0: the 2 CCDs of (359.9, 45) east of it are
    # drawn on both sides
    _, outlines = polygon_layers(coverage_figure(sink, "all", order=6, ra_center=180.0))
    assert len(outlines.get_paths()) == 26
    # RA grows to the left: RA 90 is at negative x, RA 270 at positive x
    assert sky_x(90.0, 0.0) < 0 < sky_x(270.0, 0.0)
    ARTIFACTS.mkdir(exist_ok=True)
    fig.savefig(ARTIFACTS / "coverage.png", dpi=80)
    assert (ARTIFACTS / "coverage.png").stat().st_size > 20_000


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sexstream")
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_moc_command_writes_fits_and_json_loadable_by_mocpy(sink: Path, tmp_path: Path, capsys):
    out = tmp_path / "coverage.fits"
    args = parse(["moc", "--sink", str(sink), "--order", "11", "-o", str(out)])
    assert args.func(args) == 0
    moc = MOC.from_fits(out)
    assert moc.max_order == 11
    assert moc.contains_lonlat(150.06 * u.deg, 2.06 * u.deg).all()
    args = parse(["moc", "--sink", str(sink), "--window", "all", "--order", "11", "--json"])
    capsys.readouterr()
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert MOC.from_json(json.loads(text)) == moc
    with pytest.raises(SystemExit):
        parse(["moc", "--window", "fortnight"])


def test_plot_command_writes_the_image(sink: Path, tmp_path: Path):
    out = tmp_path / "map.png"
    args = parse(["plot", "--sink", str(sink), "--window", "all", "-o", str(out), "--dpi", "60"])
    assert args.func(args) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dashboard_command_defaults_to_the_settings():
    from sexstream.settings import load

    args = parse(["dashboard"])
    settings = load()
    assert args.sink is None and args.port is None  # resolved from the settings when run
    assert (settings.dashboard_host, settings.dashboard_port) == ("127.0.0.1", 8765)
    assert images_table([], batch_id=0, ingest_time=NOW).num_rows == 0
