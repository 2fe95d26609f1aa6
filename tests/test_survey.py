"""The synthetic survey: deterministic exposures, the same objects at every visit, rows
written through the daemon's own write path (types of docs/tables.md, idempotent commits)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from sexstream import survey
from sexstream.tables import open_table, read_images, read_sources, sources_path

SMALL = dict(n_fields=4, epochs=3, sources_per_ccd=150.0, fields_per_stripe=2)


def test_an_exposure_is_the_same_whatever_was_written_before():
    s = survey.Survey(**SMALL)
    first, record = survey.observe(s, s.exposure(5))
    again, _ = survey.observe(s, s.exposure(5))
    assert first.equals(again) and record["n_sources"] == first.num_rows > 300
    other, _ = survey.observe(survey.Survey(**{**SMALL, "seed": 1}), s.exposure(5))
    assert not other.equals(first)


def test_a_field_observed_again_shows_the_same_objects():
    s = survey.Survey(**SMALL)
    a, b = s.exposure(0), s.exposure(s.n_fields)  # field 0, epochs 0 and 1
    assert a.field == b.field == 0 and b.mjd - a.mjd >= s.cadence and a.filter != b.filter
    rows_a, _ = survey.observe(s, a)
    rows_b, _ = survey.observe(s, b)
    bright = lambda t: t.filter(pa.compute.less(t["MAG_ISO"], 20.0))  # noqa: E731
    ra_a, dec_a = (bright(rows_a)[c].to_numpy() for c in ("ALPHA_J2000", "DELTA_J2000"))
    ra_b, dec_b = (bright(rows_b)[c].to_numpy() for c in ("ALPHA_J2000", "DELTA_J2000"))
    nearest = [np.min(np.hypot((ra_b - r) * np.cos(np.radians(d)), dec_b - d)) * 3600
               for r, d in zip(ra_a, dec_a)]
    assert np.median(nearest) < 0.2  # arcsec: the same objects, measured again


def test_rows_are_the_daemons_and_writing_them_again_commits_nothing(tmp_path):
    s = survey.Survey(**SMALL)
    report = survey.write(tmp_path, s, images_per_batch=5)
    assert report.images == 12 and report.batches == 3
    sources, images = read_sources(tmp_path), read_images(tmp_path)
    assert sources.num_rows == report.rows == sum(images["n_sources"].to_pylist())
    types = dict(zip(sources.schema.names, sources.schema.types))
    assert types["NUMBER"] == pa.int32() and types["EXT_NUMBER"] == pa.int16()
    assert types["MAG_ISO"] == pa.float32() and types["ALPHA_J2000"] == pa.float64()
    assert types["healpix"] == pa.int64() and types["ingest_time"] == pa.timestamp("us", "UTC")
    assert sources.column_names[-6:] == ["path", "image_id", "config_hash", "healpix", "batch_id",
                                         "ingest_time"]
    assert set(images["status"].to_pylist()) == {"ok"}
    assert all(len(fp) == 8 for fp in images["footprints"].to_pylist())
    assert sorted(images["obs_mjd"].to_pylist()) == sorted(e.mjd for e in s.exposures())
    version = open_table(sources_path(tmp_path)).version()
    assert survey.write(tmp_path, s, 5, 10, images_per_batch=5).rows == 0  # skipped: resumed
    assert open_table(sources_path(tmp_path)).version() == version
    assert read_sources(tmp_path).num_rows == sources.num_rows


def test_unknown_keys_are_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="cannot fill.*VIGNET"):
        survey.Survey(keys=("NUMBER", "VIGNET"))


def test_for_rows_sizes_the_footprint():
    s = survey.Survey.for_rows(1e6, epochs=5)
    assert s.n_fields == int(np.ceil(1e6 / (800 * 8) / 5))


def test_a_survey_written_in_unaligned_slices_has_every_exposure_once(tmp_path):
    s = survey.Survey(**SMALL)
    first = survey.write(tmp_path, s, 0, 7, images_per_batch=5)
    rest = survey.write(tmp_path, s, 7, None, images_per_batch=5)
    assert first.images + rest.images == s.n_exposures
    images = read_images(tmp_path, columns=["path"])["path"].to_pylist()
    assert sorted(images) == sorted(e.path for e in s.exposures())
    assert read_sources(tmp_path, columns=["NUMBER"]).num_rows == first.rows + rest.rows
