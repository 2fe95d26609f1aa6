"""Cone searches and light curves: equal to a brute-force angular-distance filter over the
whole table (across RA = 0/360, at a pole, clustered or not), positions as people type
them, clear errors, observation times, and files astropy reads back."""
from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table

from sexstream import cli, layout, maintenance, parts, survey, transaction
from sexstream.query import QueryError, Sky, cone, lightcurve, parse_position, parse_radius
from sexstream.tables import open_table, read_images, read_sources, sources_path

SMALL = dict(epochs=3, sources_per_ccd=120.0, fields_per_stripe=3)
#: Three regions: near the equator, across RA = 0/360, around the north pole.
REGIONS = (survey.Survey(n_fields=6, centre=(150.0, 2.0), seed=1, **SMALL),
           survey.Survey(n_fields=4, centre=(0.0, -20.0), seed=2, **{**SMALL, "fields_per_stripe": 4}),
           survey.Survey(n_fields=3, centre=(45.0, 89.7), seed=3, **SMALL))
IDENTITY = ["image_id", "EXT_NUMBER", "NUMBER"]


@pytest.fixture(scope="module")
def sky_sink(tmp_path_factory) -> Path:
    sink = tmp_path_factory.mktemp("sky") / "sink"
    for region in REGIONS:
        survey.write(sink, region, images_per_batch=4)
    return sink


@pytest.fixture(scope="module")
def clustered_sink(sky_sink: Path, tmp_path_factory) -> Path:
    """The same rows clustered into sorted runs, then a tail of newer appends."""
    sink = tmp_path_factory.mktemp("clustered") / "sink"
    shutil.copytree(sky_sink, sink)
    report = maintenance.cluster_sources(str(sink), file_rows=4000, row_group_rows=512,
                                         sort_rows=20000)
    assert report.commits >= 2 and report.runs_after >= 1
    survey.write(sink, survey.Survey(n_fields=3, centre=(150.2, 2.1), seed=4, **SMALL),
                 images_per_batch=3)
    return sink


def brute_force(sink: Path, ra: float, dec: float, radius: u.Quantity) -> pa.Table:
    """Every row of the table within `radius`, by SkyCoord separation."""
    rows = read_sources(sink)
    here = SkyCoord(ra * u.deg, dec * u.deg)
    there = SkyCoord(rows["ALPHA_J2000"].to_numpy() * u.deg, rows["DELTA_J2000"].to_numpy() * u.deg)
    sep = here.separation(there).to(u.arcsec).value
    keep = sep <= radius.to_value(u.arcsec)
    return rows.filter(pa.array(keep)).append_column("sep", pa.array(sep[keep]))


def identities(rows) -> list[tuple]:
    return sorted(zip(*(list(rows[c]) for c in IDENTITY)))


def assert_same_as_brute_force(sink: Path, ra: float, dec: float, radius: str) -> int:
    found = cone(sink, ra, dec, radius)
    truth = brute_force(sink, ra, dec, u.Quantity(radius))
    assert identities(found) == identities(truth.to_pydict()), (ra, dec, radius)
    assert np.all(np.diff(found["separation_arcsec"]) >= 0)  # nearest first
    if len(found):
        by_id = dict(zip(zip(*(truth[c].to_pylist() for c in IDENTITY)), truth["sep"].to_pylist()))
        got = [by_id[key] for key in zip(*(list(found[c]) for c in IDENTITY))]
        np.testing.assert_allclose(found["separation_arcsec"], got, atol=1e-6)
    return len(found)


def cones(sink: Path, seed: int) -> list[tuple[float, float, str]]:
    """Cones centred on real sources (so they are not empty) and on special places."""
    rows = read_sources(sink, columns=["ALPHA_J2000", "DELTA_J2000"])
    rng = np.random.default_rng(seed)
    picks = rng.choice(rows.num_rows, 8, replace=False)
    ra, dec = rows["ALPHA_J2000"].to_numpy()[picks], rows["DELTA_J2000"].to_numpy()[picks]
    radii = ["1arcsec", "10arcsec", "2arcmin", "0.3deg", "3deg", "45arcsec", "0.05deg", "7arcsec"]
    out = [(float(a), float(d), r) for a, d, r in zip(ra, dec, radii)]
    return out + [
        (0.0, -20.0, "0.5deg"), (359.99, -20.0, "20arcmin"), (0.005, -19.9, "6arcmin"),  # RA 0/360
        (0.0, 90.0, "0.3deg"), (200.0, 89.9, "10arcmin"), (45.0, 89.7, "1arcmin"),      # the pole
        (10.0, -90.0, "1deg"),                                                           # empty
    ]


@pytest.mark.parametrize("layout", ["appended", "clustered"])
def test_cone_equals_a_brute_force_filter_over_the_whole_table(layout, sky_sink, clustered_sink):
    sink = sky_sink if layout == "appended" else clustered_sink
    counts = [assert_same_as_brute_force(sink, *c) for c in cones(sink, seed=7)]
    assert all(n > 0 for n in counts[:6])
    assert counts[8] > 0 and counts[9] > 0   # both sides of RA = 0 have sources
    assert counts[11] > 0                     # sources around the pole
    assert counts[-1] == 0


def test_a_whole_sky_cone_returns_every_row(sky_sink):
    found = cone(sky_sink, 123.0, -45.0, "180deg", columns=["NUMBER"])
    assert len(found) == read_sources(sky_sink, columns=["NUMBER"]).num_rows


def test_small_cone_reads_a_small_part_of_a_clustered_table(clustered_sink):
    runs, tail = layout.runs_of(layout.data_files(open_table(sources_path(clustered_sink))))
    rows = read_sources(clustered_sink, columns=["ALPHA_J2000", "DELTA_J2000", "batch_id"],
                        filters=[("DELTA_J2000", ">", 89.0)])  # where no tail file is
    sky = Sky(clustered_sink)
    found = sky.cone(rows["ALPHA_J2000"][100].as_py(), rows["DELTA_J2000"][100].as_py(), "10arcsec")
    assert len(found) >= 1
    stats = sky.last_stats
    assert stats.files == sum(len(r) for r in runs.values()) + len(tail) > 4 * len(runs)
    assert stats.files_opened <= 2 * len(runs) and stats.row_groups_read <= 2 * len(runs)
    assert stats.bytes_read < 0.1 * stats.table_bytes
    tail_rows = read_sources(clustered_sink, columns=["ALPHA_J2000", "DELTA_J2000", "image_id"],
                             filters=pc.starts_with(pc.field("path"), "/data/survey-4/"))
    hit = sky.cone(tail_rows["ALPHA_J2000"][0].as_py(), tail_rows["DELTA_J2000"][0].as_py(), "1arcsec")
    assert tail_rows["image_id"][0].as_py() in list(hit["image_id"])  # the newest rows are found


def test_a_table_without_healpix_is_scanned_and_answers_the_same(sky_sink, tmp_path):
    sink = tmp_path / "old"
    rows = read_sources(sky_sink).drop_columns(["healpix"])
    part = parts.write_part(sources_path(sink), rows, batch_id=0, task_tag="t")
    transaction.commit(sources_path(sink), [part], app_id="old", batch_id=0)
    for ra, dec, radius in cones(sky_sink, seed=3)[:4] + [(0.0, 90.0, "0.3deg")]:
        assert identities(cone(sink, ra, dec, radius)) == identities(cone(sky_sink, ra, dec, radius))


# -- positions as people type them -------------------------------------------------------------
@pytest.mark.parametrize("ra, dec, expected", [
    ("10:45:03.6", "+05:31:12", (161.265, 5.52)),
    ("10 45 03.6", "-05 31 12", (161.265, -5.52)),
    ("10h45m03.6s", "-5d31m12s", (161.265, -5.52)),
    ("161.265", "5.52", (161.265, 5.52)),
    (161.265, -5.52, (161.265, -5.52)),
    ("161.265deg", "-0.5deg", (161.265, -0.5)),
    (360.0, 0.0, (0.0, 0.0)),
    ("0:00:00", "-90", (0.0, -90.0)),
])
def test_positions_in_degrees_and_sexagesimal(ra, dec, expected):
    assert parse_position(ra, dec) == pytest.approx(expected, abs=1e-9)


def test_a_skycoord_or_one_string_is_a_position_too():
    assert parse_position(SkyCoord("10h45m03.6s +05d31m12s")) == pytest.approx((161.265, 5.52))
    assert parse_position("10:45:03.6 +05:31:12") == pytest.approx((161.265, 5.52))
    assert parse_position("10 45 03.6 -05 31 12") == pytest.approx((161.265, -5.52))


@pytest.mark.parametrize("radius, degrees", [
    ("5arcsec", 5 / 3600), ("2 arcmin", 2 / 60), ("0.1deg", 0.1), ('3"', 3 / 3600), ("1'", 1 / 60),
    (2 * u.arcsec, 2 / 3600), ("180deg", 180.0), ("1e-3 rad", np.degrees(1e-3)),
])
def test_radii_with_units(radius, degrees):
    assert parse_radius(radius) == pytest.approx(degrees)


@pytest.mark.parametrize("ra, dec, radius, message", [
    (10.0, 95.0, "5arcsec", "Dec .* out of range"),
    (10.0, "-90:00:01", "5arcsec", "Dec .* out of range"),
    ("25:00:00", 0.0, "5arcsec", "RA .* not an angle"),
    (400.0, 0.0, "5arcsec", "RA .* out of range"),
    (-1.0, 0.0, "5arcsec", "RA .* out of range"),
    ("nan", 0.0, "5arcsec", "RA .* out of range"),
    ("north", 0.0, "5arcsec", "RA .* not an angle"),
    (10.0, 0.0, "5", "no unit"),
    (10.0, 0.0, 5.0, "no unit"),
    (10.0, 0.0, "-5arcsec", "positive"),
    (10.0, 0.0, "0deg", "positive"),
    (10.0, 0.0, "200deg", "whole sky"),
    (10.0, 0.0, "5kg", "not an angle"),
    (10.0, 0.0, "five arcsec", "not an angle"),
])
def test_a_position_or_radius_that_makes_no_sense_is_a_clear_error(sky_sink, ra, dec, radius, message):
    with pytest.raises(QueryError, match=message):
        cone(sky_sink, ra, dec, radius)


def test_a_sink_without_sky_coordinates_says_so(tmp_path):
    blind = survey.Survey(n_fields=1, epochs=1, sources_per_ccd=20,
                          keys=("NUMBER", "EXT_NUMBER", "MAG_ISO", "X_IMAGE", "Y_IMAGE"))
    survey.write(tmp_path, blind)
    with pytest.raises(QueryError, match="no sky coordinates.*ALPHA_J2000"):
        cone(tmp_path, 150.0, 2.0, "1deg")
    with pytest.raises(QueryError, match="no sources table"):
        cone(tmp_path / "nowhere", 150.0, 2.0, "1deg")


def test_unknown_columns_are_named_with_a_suggestion(sky_sink):
    with pytest.raises(QueryError, match="MAG_ISOO.*did you mean MAG_ISO"):
        cone(sky_sink, 150.0, 2.0, "1arcmin", columns="ALPHA_J2000,MAG_ISOO")


# -- what a row carries -------------------------------------------------------------------------
def test_cone_rows_carry_the_image_path_obs_time_and_header_keys(sky_sink):
    region = REGIONS[0]
    found = cone(sky_sink, 150.0, 2.0, "0.3deg")
    assert found.colnames[0] == "separation_arcsec" and found["separation_arcsec"].unit == u.arcsec
    assert found.colnames[-2:] == ["obs_mjd", "obs_mjd_from"]
    assert {"path", "FILTER", "RA_DEG", "RUNID", "ALPHA_J2000"} <= set(found.colnames)
    assert found["ALPHA_J2000"].unit == u.deg and found["MAG_ISO"].unit == u.mag
    mjd_of = {e.path: e.mjd for e in region.exposures()}
    assert list(found["obs_mjd"]) == pytest.approx([mjd_of[p] for p in found["path"]])
    assert set(found["obs_mjd_from"]) == {"header"}
    filter_of = {e.path: e.filter for e in region.exposures()}
    assert list(found["FILTER"]) == [filter_of[p] for p in found["path"]]


def test_window_and_config_hash_select_rows(sky_sink):
    rows = read_sources(sky_sink, columns=["ingest_time", "config_hash"])
    newest = pc.max(rows["ingest_time"]).as_py()
    recent = cone(sky_sink, 150.0, 2.0, "1deg", window="2d", now=newest + timedelta(hours=1))
    everything = cone(sky_sink, 150.0, 2.0, "1deg")
    cutoff = newest + timedelta(hours=1) - timedelta(days=2)
    expected = [t for t in read_sources(sky_sink, columns=["ingest_time", "ALPHA_J2000"])
                ["ingest_time"].to_pylist() if t >= cutoff]
    assert 0 < len(recent) < len(everything) and len(expected) >= len(recent)
    assert all(t >= cutoff.isoformat(timespec="microseconds")[:26] for t in recent["ingest_time"])
    assert len(cone(sky_sink, 150.0, 2.0, "1deg", config_hash=REGIONS[0].config_hash[:6])) == len(everything)
    assert len(cone(sky_sink, 150.0, 2.0, "1deg", config_hash="ffffff")) == 0


def test_pandas_and_arrow_on_request(sky_sink):
    frame = cone(sky_sink, 150.0, 2.0, "2arcmin", format="pandas")
    table = cone(sky_sink, 150.0, 2.0, "2arcmin", format="arrow")
    assert list(frame.columns) == table.column_names and len(frame) == table.num_rows > 0
    assert frame.attrs["CONE_R"] == pytest.approx(120.0)


# -- light curves -------------------------------------------------------------------------------
def bright_object(sink: Path, region: survey.Survey) -> tuple[float, float]:
    """A bright source of the region's second exposure."""
    rows = read_sources(sink, filters=[("path", "=", region.exposure(1).path)])
    i = rows["MAG_ISO"].to_numpy().argsort()[3]  # bright, not saturated
    return rows["ALPHA_J2000"][i].as_py(), rows["DELTA_J2000"][i].as_py()


def test_light_curve_has_the_nearest_source_of_every_image_that_saw_it(sky_sink):
    region = REGIONS[0]
    ra, dec = bright_object(sky_sink, region)
    curve = lightcurve(sky_sink, ra, dec)  # 1 arcsec
    truth = brute_force(sky_sink, ra, dec, 1 * u.arcsec)
    assert len(curve) == len(set(truth["image_id"].to_pylist())) >= 2
    assert list(curve["path"]) == sorted(curve["path"], key={e.path: e.mjd for e in region.exposures()}.get)
    mjd_of = {e.path: e.mjd for e in region.exposures()}
    assert list(curve["obs_mjd"]) == pytest.approx([mjd_of[p] for p in curve["path"]])
    assert set(curve["obs_mjd_from"]) == {"header"}
    assert curve.colnames[:3] == ["obs_mjd", "obs_mjd_from", "FILTER"]
    assert {"MAG_ISO", "MAGERR_ISO", "FLUX_ISO", "FLUXERR_ISO", "path"} <= set(curve.colnames)
    filter_of = {e.path: e.filter for e in region.exposures()}
    assert list(curve["FILTER"]) == [filter_of[p] for p in curve["path"]]
    for image_id, sep in zip(curve["image_id"], curve["separation_arcsec"]):
        nearest = min(s for i, s in zip(truth["image_id"].to_pylist(), truth["sep"].to_pylist())
                      if i == image_id)
        assert sep == pytest.approx(nearest)


def test_light_curve_without_header_times_uses_the_ingest_time_and_says_so(tmp_path):
    region = survey.Survey(n_fields=2, header_times=False, **SMALL)
    survey.write(tmp_path, region, images_per_batch=2)
    ra, dec = bright_object(tmp_path, region)
    curve = lightcurve(tmp_path, ra, dec)
    assert len(curve) >= 2 and set(curve["obs_mjd_from"]) == {"ingest_time"}
    images = read_images(tmp_path, columns=["path", "ingest_time", "obs_mjd"])
    assert images["obs_mjd"].null_count == images.num_rows
    ingest = {p: t.timestamp() / 86400 + 40587 for p, t in zip(images["path"].to_pylist(),
                                                                images["ingest_time"].to_pylist())}
    assert list(curve["obs_mjd"]) == pytest.approx([ingest[p] for p in curve["path"]], abs=1e-9)


def test_mjd_obs_among_the_header_keys_is_read_from_the_sources_rows(tmp_path):
    region = survey.Survey(n_fields=2, fitskeys=("FILTER", "MJD-OBS"), **SMALL)
    survey.write(tmp_path, region, images_per_batch=2)
    ra, dec = bright_object(tmp_path, region)
    sky = Sky(tmp_path)
    curve = sky.lightcurve(ra, dec)
    assert set(curve["obs_mjd_from"]) == {"header"} and len(curve) >= 2
    assert sky.times.files_read == 0  # no images row needed


# -- files --------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:No table")  # astropy reading a Parquet file it did not write
def test_cone_files_open_in_astropy(sky_sink, tmp_path, capsys):
    args = ["cone", "10:00:00", "+02:00:00", "0.2deg", "--sink", str(sky_sink)]
    for suffix in (".fits", ".vot", ".parquet", ".csv"):
        out = tmp_path / f"cone{suffix}"
        assert cli.run([*args, "-o", str(out)]) == 0
        table = Table.read(out, format="ascii.csv" if suffix == ".csv" else None)
        assert len(table) > 0 and "separation_arcsec" in table.colnames
        assert set(table["obs_mjd_from"]) == {"header"}
        if suffix in (".fits", ".vot"):
            assert table["ALPHA_J2000"].unit == u.deg
            assert str(table["separation_arcsec"].unit) == "arcsec"
    assert cli.run(args) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith('"separation_arcsec"') and "sources within 720 arcsec" in captured.err


def test_cli_takes_a_negative_sexagesimal_dec_and_refuses_nonsense(sky_sink, capsys):
    assert cli.run(["cone", "00:00:00", "-20:00:00", "10arcmin", "--sink", str(sky_sink),
                     "--columns", "NUMBER,path"]) == 0
    out = capsys.readouterr()
    assert out.out.count("\n") > 1 and "(0.000000, -20.000000)" in out.err
    assert cli.run(["cone", "10.0", "2.0", "5", "--sink", str(sky_sink)]) == 2
    assert "has no unit" in capsys.readouterr().err
    assert cli.run(["lightcurve", "10.0", "-95", "--sink", str(sky_sink)]) == 2
    assert "Dec '-95' is out of range" in capsys.readouterr().err


def test_lightcurve_cli_writes_csv_votable_and_png(sky_sink, tmp_path, capsys):
    ra, dec = bright_object(sky_sink, REGIONS[0])
    base = ["lightcurve", str(ra), str(dec), "--sink", str(sky_sink)]
    assert cli.run([*base, "-o", str(tmp_path / "lc.vot")]) == 0
    assert len(Table.read(tmp_path / "lc.vot")) >= 2
    assert cli.run([*base, "--radius", "2arcsec", "-o", str(tmp_path / "lc.png")]) == 0
    assert (tmp_path / "lc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "time from the header for" in capsys.readouterr().err
    assert cli.run([*base, "-o", str(tmp_path / "lc.txt")]) == 2


def test_the_tables_returned_are_written_by_astropy_itself(sky_sink, tmp_path):
    found = cone(sky_sink, 150.0, 2.0, "2arcmin")
    assert found["path"][0] == found["path"].astype(str)[0] and found["path"][0].startswith("/data/")
    for name, fmt in (("here.vot", "votable"), ("here.fits", "fits"), ("here.ecsv", "ascii.ecsv")):
        found.write(tmp_path / name, format=fmt)
        back = Table.read(tmp_path / name, format=fmt)
        assert len(back) == len(found) and list(back["path"]) == list(found["path"])
    assert list(found.to_pandas()["MAG_ISO"]) == pytest.approx(list(found["MAG_ISO"]))


def test_rows_without_a_celestial_wcs_never_match_even_clustered(sky_sink, tmp_path):
    """An extension without a WCS has a null healpix (its ALPHA/DELTA are not on the sky)."""
    sink = tmp_path / "nowcs"
    rows = read_sources(sky_sink, filters=pc.starts_with(pc.field("path"), "/data/survey-1/"))
    blind = pc.equal(rows["EXT_NUMBER"], 3)
    healpix = pc.if_else(blind, pa.scalar(None, pa.int64()), rows["healpix"])
    rows = rows.set_column(rows.schema.get_field_index("healpix"), "healpix", healpix)
    part = parts.write_part(sources_path(sink), rows, batch_id=0, task_tag="t")
    transaction.commit(sources_path(sink), [part], app_id="nowcs", batch_id=0)
    maintenance.cluster_sources(str(sink), file_rows=4000, row_group_rows=512, sort_rows=6000)
    seen = rows.filter(blind)
    ra, dec = seen["ALPHA_J2000"][0].as_py(), seen["DELTA_J2000"][0].as_py()
    found = cone(sink, ra, dec, "0.5deg")
    assert len(found) > 0 and 3 not in set(found["EXT_NUMBER"])
    truth = brute_force(sink, ra, dec, 0.5 * u.deg)
    truth = truth.filter(pc.is_valid(truth["healpix"]))
    assert identities(found) == identities(truth.to_pydict())
