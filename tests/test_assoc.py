"""ASSOC lists: a CSV or FITS reference table with RA/Dec or pixel columns makes
VECTOR_ASSOC and NUMBER_ASSOC work; the oracle is SExtractor run by hand with the whole
list written as its ASCII ASSOC list."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from daemon_harness import SEXSTREAM
from psf_oracle import assert_equal_printed, run_by_hand
from sexstream import assoc, extractor, settings, synthetic

KEYS = ["NUMBER", "X_IMAGE", "Y_IMAGE", "VECTOR_ASSOC(5)", "NUMBER_ASSOC"]


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    """A generated CCD and its truth table (positions of every source drawn)."""
    folder = tmp_path_factory.mktemp("assoc")
    hdul, truth = synthetic.render(seed=12, nx=500, ny=400)
    hdul.writeto(folder / "ccd.fits")
    return folder / "ccd.fits", truth


def hand_list(rows: np.ndarray, path: Path) -> Path:
    """The by-hand ASSOC list: one line per reference row, every column."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, rows, fmt="%.12g")
    return path


def by_hand(image: Path, rows: np.ndarray, coords: str, tmp_path: Path, selection: str = "ALL"):
    return run_by_hand(str(image), KEYS, tmp_path, "-ASSOC_NAME", str(hand_list(rows, tmp_path / "ref.list")),
                       "-ASSOC_PARAMS", "2,3", "-ASSOC_DATA", "0", "-ASSOCCOORD_TYPE", coords,
                       "-ASSOCSELEC_TYPE", selection)


def test_csv_with_ra_dec_gives_vector_assoc_like_sextractor_by_hand(field, tmp_path):
    image, truth = field
    rng = np.random.default_rng(3)
    far = rng.uniform(0, 360, 300), rng.uniform(-80, 80, 300)  # a big list: most rows elsewhere
    ref = Table({"source_id": np.arange(len(truth) + 300) * 7 + 11,
                 "ra": np.concatenate([truth["ra"], far[0]]), "dec": np.concatenate([truth["dec"], far[1]]),
                 "mag": np.concatenate([truth["mag"], rng.uniform(15, 22, 300)]),
                 "kind": np.concatenate([truth["kind"], ["far"] * 300])})
    ref.write(tmp_path / "ref.csv", format="ascii.csv")
    result = extractor.extract(image, extractor.prepare(settings.load(
        keys=tuple(KEYS), fitskeys=(), assoc=str(tmp_path / "ref.csv"))))
    assert result.record["status"] == "ok", result.record["reason"]
    # row number, ra, dec, then the numeric columns in order (the string column is left out)
    whole = np.column_stack([np.arange(1, len(ref) + 1), ref["ra"], ref["dec"], ref["source_id"], ref["mag"]])
    names, printed = by_hand(image, whole, "WORLD", tmp_path / "hand")
    rows = result.sources.to_pylist()
    assert_equal_printed(rows, KEYS, names, printed)
    matched = [r for r in rows if r["NUMBER_ASSOC"]]
    assert len(matched) > 0.8 * len(rows) and len(rows) - len(matched) > 0  # unmatched rows are kept
    for r in matched:  # VECTOR_ASSOC joins back to the file by its row number
        row = int(r["VECTOR_ASSOC"][0])
        assert r["VECTOR_ASSOC"][3] == ref["source_id"][row - 1]
        assert np.hypot(truth["x"][row - 1] + 1 - r["X_IMAGE"], truth["y"][row - 1] + 1 - r["Y_IMAGE"]) < 2.5


def test_fits_table_with_pixel_columns_and_matched_only(field, tmp_path):
    image, truth = field
    ref = Table({"X_IMAGE": truth["x"] + 1.0, "Y_IMAGE": truth["y"] + 1.0, "flux": truth["flux"]})
    ref.write(tmp_path / "ref.fits")
    plan = extractor.prepare(settings.load(keys=tuple(KEYS), fitskeys=(), assoc=str(tmp_path / "ref.fits"),
                                           overrides=(("ASSOCSELEC_TYPE", "MATCHED"),)))
    result = extractor.extract(image, plan)
    assert result.record["status"] == "ok", result.record["reason"]
    whole = np.column_stack([np.arange(1, len(ref) + 1), ref["X_IMAGE"], ref["Y_IMAGE"], ref["flux"]])
    names, printed = by_hand(image, whole, "PIXEL", tmp_path / "hand", "MATCHED")
    rows = result.sources.to_pylist()
    assert_equal_printed(rows, KEYS, names, printed)
    assert rows and all(r["NUMBER_ASSOC"] > 0 for r in rows)  # the user's MATCHED wins


def test_assoc_usage_errors_exit_2_and_the_list_is_part_of_the_config(field, tmp_path):
    image, _ = field
    Table({"a": [1.0], "b": [2.0]}).write(tmp_path / "nopos.csv", format="ascii.csv")
    Table({"ra": [1.0], "dec": [2.0]}).write(tmp_path / "one.csv", format="ascii.csv")
    Table({"ra": [1.0], "dec": [2.5]}).write(tmp_path / "two.csv", format="ascii.csv")
    cases = {("--keys", "NUMBER,NUMBER_ASSOC"): "NUMBER_ASSOC needs an ASSOC list: give --assoc FILE",
             ("--keys", "VECTOR_ASSOC(2)", "--assoc", str(tmp_path / "nopos.csv")): "no RA/Dec or x/y columns",
             ("--keys", "NUMBER_ASSOC", "--assoc", str(tmp_path / "one.csv"), "--assoc-columns", "ra,zz"):
                 "--assoc-columns 'ra,zz'",
             ("--keys", "NUMBER_ASSOC", "--assoc", str(tmp_path / "none.csv")): "ASSOC list not found"}
    for args, message in cases.items():
        proc = subprocess.run([*SEXSTREAM, "extract", str(image), *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
    hashes = {extractor.prepare(settings.load(keys=("NUMBER_ASSOC",), fitskeys=(), assoc=str(tmp_path / f))).config_hash
              for f in ("one.csv", "two.csv")}
    assert len(hashes) == 2
    picked = assoc.load(tmp_path / "nopos.csv", "a,b")
    assert (picked.coords, picked.columns) == ("WORLD", ("ROW", "a", "b"))
