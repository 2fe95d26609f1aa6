"""PSF models: `--psf auto` (PSFEx's two-pass recipe on each image) and `--psf FILE`,
against the recipe run by hand with the packages' defaults."""
from __future__ import annotations

import csv
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from daemon_harness import SEXSTREAM
from psf_oracle import PSFEX_SHARE, assert_equal_printed, psf_data, recipe_model, run_by_hand
from sexstream import extractor, psf, settings, synthetic

KEYS = ["NUMBER", "MAG_PSF", "SPREAD_MODEL"]


@pytest.fixture(scope="module")
def ccd(tmp_path_factory) -> Path:
    """A generated CCD (512 x 1024 pixels, ~130 sources, ~50 of them stars)."""
    return synthetic.make_exposure(tmp_path_factory.mktemp("psf") / "ccd.fits", seed=5, nx=512, ny=1024)


@pytest.fixture(scope="module")
def hand_model(ccd, tmp_path_factory) -> Path:
    return recipe_model(ccd, tmp_path_factory.mktemp("by_hand"))


def test_extract_psf_auto_equals_the_recipe_run_by_hand(ccd, hand_model, tmp_path):
    out = tmp_path / "out.csv"
    proc = subprocess.run([*SEXSTREAM, "extract", str(ccd), "--keys", ",".join(KEYS), "--psf", "auto",
                           "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(out.open()))
    names, printed = run_by_hand(str(ccd), KEYS, tmp_path / "hand", "-PSF_NAME", str(hand_model))
    assert len(rows) > 100
    assert_equal_printed(rows, KEYS, names, printed)
    spread = np.array([float(r["SPREAD_MODEL"]) for r in rows])
    assert (np.abs(spread) < 0.003).sum() > 20 and (spread > 0.01).sum() > 20  # stars and galaxies


def test_the_model_is_psfex_s_own_with_provenance_in_its_header(ccd, hand_model):
    plan = extractor.prepare(settings.load(keys=("NUMBER", "MAG_PSF"), fitskeys=(), psf="auto"))
    result = extractor.extract(ccd, plan)
    assert result.record["status"] == "ok", result.record["reason"]
    model = result.artifacts["psf"]
    for mine, theirs in zip(psf_data(model), psf_data(hand_model)):
        np.testing.assert_array_equal(mine, theirs)
    with fits.open(__import__("io").BytesIO(model)) as hdul:
        head = hdul[0].header
        assert head["SXSCFG"] == plan.config_hash == result.record["config_hash"]
        assert head["SXSPATH"] == str(ccd) and head["SXSHASH"] == result.record["content_hash"]
        assert head["SXSID"] == result.record["image_id"] and head["PSFEXVER"] == "3.21.1"
        assert hdul[1].header["ACCEPTED"] > 10


def test_the_engine_keeps_each_model_in_the_sink_and_its_row_names_it(ccd, hand_model, tmp_path):
    """The Spark-free engine (what `run` and `replay` run on executors): the model is an
    artifact of the sink, named by the images row, written again identically on a re-run."""
    from sexstream.engine import Engine, Item, SerialRunner
    from sexstream.sink import Sink
    from sexstream.tables import read_table

    plan = extractor.prepare(settings.load(keys=("NUMBER", "MAG_PSF"), fitskeys=(), psf="auto"))
    sink = Sink(tmp_path / "sink")
    stats = Engine(sink, plan, app_id="psf-1").run(0, [Item(str(ccd))], SerialRunner())
    assert (stats.ok, stats.failed) == (1, 0)
    row = read_table(sink.path("images")).to_pylist()[0]
    assert row["psf_model"] == f"artifacts/psf/{plan.config_hash}/{row['image_id']}.psf"
    kept = tmp_path / "sink" / row["psf_model"]
    for mine, theirs in zip(psf_data(kept), psf_data(hand_model)):
        np.testing.assert_array_equal(mine, theirs)
    assert fits.getheader(kept)["SXSCFG"] == row["config_hash"]


def test_psf_file_measures_with_the_given_model(ccd, hand_model, tmp_path):
    keys = ["NUMBER", "MAG_PSF", "MAGERR_PSF", "XPSF_IMAGE"]
    plan = extractor.prepare(settings.load(keys=tuple(keys), fitskeys=(), psf=str(hand_model)))
    result = extractor.extract(ccd, plan)
    assert result.record["status"] == "ok", result.record["reason"]
    assert result.artifacts == {}  # the user's own model is not copied into the sink
    names, printed = run_by_hand(str(ccd), keys, tmp_path, "-PSF_NAME", str(hand_model))
    assert_equal_printed(result.sources.to_pylist(), keys, names, printed)
    # the model's bytes are part of the config: another model, another hash
    other = tmp_path / "other.psf"
    with fits.open(hand_model) as hdul:
        hdul[1].data["PSF_MASK"] *= 1.01
        hdul.writeto(other)
    again = extractor.prepare(settings.load(keys=tuple(KEYS), fitskeys=(), psf=str(other)))
    auto = extractor.prepare(settings.load(keys=tuple(KEYS), fitskeys=(), psf="auto"))
    assert len({plan.config_hash, again.config_hash, auto.config_hash}) == 3


def test_a_mosaic_gets_one_model_per_ccd_like_the_recipe_by_hand(tmp_path):
    mosaic = synthetic.make_exposure(tmp_path / "mef.fits", seed=21, nx=384, ny=768, n_ccd=2)
    model = recipe_model(mosaic, tmp_path / "hand")
    assert len(psf_data(model)) == 2
    keys = ["NUMBER", "EXT_NUMBER", "MAG_PSF", "FLUX_PSF"]
    result = extractor.extract(mosaic, extractor.prepare(settings.load(keys=tuple(keys), fitskeys=(), psf="auto")))
    assert result.record["status"] == "ok", result.record["reason"]
    assert len(psf_data(result.artifacts["psf"])) == 2
    names, printed = run_by_hand(str(mosaic), keys, tmp_path / "hand", "-PSF_NAME", str(model))
    assert_equal_printed(result.sources.to_pylist(), keys, names, printed)
    assert set(result.sources["EXT_NUMBER"].to_pylist()) == {1, 2}


def test_a_frame_without_stars_is_a_failed_row_with_psfex_s_reason(tmp_path):
    """PSFEx only warns and writes an empty model (ACCEPTED = 0): sexstream makes it a
    failed row, with what PSFEx said."""
    plan = extractor.prepare(settings.load(keys=("NUMBER", "MAG_PSF"), fitskeys=(), psf="auto"))
    said = {0: "No source with appropriate FWHM found", 2: "not enough samples"}
    for galaxies, message in said.items():
        frame = synthetic.make_exposure(tmp_path / f"g{galaxies}.fits", seed=8, nx=256, ny=256, n_stars=0,
                                        n_galaxies=galaxies)
        result = extractor.extract(frame, plan)
        assert result.record["status"] == "failed"
        assert result.record["reason"].startswith("no PSF model: PSFEx accepted no star in extension 1")
        assert message in result.record["reason"], result.record["reason"]
        assert result.record["attempts"] == 1 and result.sources is None and result.artifacts == {}


def test_detmodel_keys_measure_in_dual_image_mode_like_sextractor_by_hand(tmp_path):
    """SExtractor 2.25 dies of SIGSEGV on *_DETMODEL keys in single-image mode; with the
    image as its own detection image they measure, and the other columns do not change."""
    ccd = synthetic.make_exposure(tmp_path / "small.fits", seed=5, nx=384, ny=384)
    hand_model = recipe_model(ccd, tmp_path / "model")
    keys = ["NUMBER", "MAG_DETMODEL", "FLUX_DETMODEL", "MAG_MODEL", "FLUX_AUTO"]
    single = subprocess.run([shutil.which("source-extractor"), str(ccd), "-c", "/usr/share/source-extractor/default.sex",
                             "-PSF_NAME", str(hand_model), "-PARAMETERS_NAME", "/dev/stdin"], input="MAG_DETMODEL\n",
                            capture_output=True, text=True, cwd=tmp_path)
    assert single.returncode == -11  # SIGSEGV: why sexstream runs these in dual-image mode
    plan = extractor.prepare(settings.load(keys=tuple(keys), fitskeys=(), psf=str(hand_model)))
    assert plan.dual
    result = extractor.extract(ccd, plan)
    assert result.record["status"] == "ok", result.record["reason"]
    names, printed = run_by_hand(f"{ccd},{ccd}", keys, tmp_path / "dual", "-PSF_NAME", f"{hand_model},{hand_model}")
    assert_equal_printed(result.sources.to_pylist(), keys, names, printed)
    plain = ["NUMBER", "MAG_MODEL", "FLUX_AUTO"]
    names, printed = run_by_hand(str(ccd), plain, tmp_path / "single", "-PSF_NAME", str(hand_model))
    assert_equal_printed(result.sources.to_pylist(), plain, names, printed)


def test_packaged_prepsfex_param_lacks_snr_win_that_default_psfex_needs(tmp_path):
    """The trap the recipe works around, pinned on the installed packages."""
    image = synthetic.make_exposure(tmp_path / "tiny.fits", seed=6, nx=256, ny=256)
    assert "SNR_WIN" not in (PSFEX_SHARE / "prepsfex.param").read_text()
    subprocess.run([shutil.which("source-extractor"), str(image), "-c", str(PSFEX_SHARE / "prepsfex.sex"),
                    "-PARAMETERS_NAME", str(PSFEX_SHARE / "prepsfex.param"),
                    "-FILTER_NAME", str(PSFEX_SHARE / "default.conv"), "-VERBOSE_TYPE", "QUIET"],
                   cwd=tmp_path, check=True, capture_output=True)
    proc = subprocess.run([shutil.which("psfex"), "prepsfex.cat", "-c", str(PSFEX_SHARE / "default.psfex"),
                           *psf.QUIET_OPTIONS], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode != 0 and "SNR_WIN not found" in proc.stderr
    assert psf.prepass_param_text(PSFEX_SHARE / "prepsfex.param").split() == [
        "VIGNET(35,35)", "X_IMAGE", "Y_IMAGE", "FLUX_APER", "FLUXERR_APER", "FLUX_RADIUS", "ELONGATION",
        "FLAGS", "SNR_WIN"]


def test_psf_usage_errors_exit_2_before_any_image(ccd, hand_model, tmp_path):
    with fits.open(hand_model) as hdul:
        hdul[1].header["ACCEPTED"] = 0
        hdul.writeto(tmp_path / "empty.psf")
    cases = {("--keys", "NUMBER", "--psf", str(tmp_path / "empty.psf")): "is an empty PSF model",
             ("--keys", "NUMBER", "--set", "CHECKIMAGE_TYPE=PSFPROTOS", "--set", "CHECKIMAGE_NAME=p.fits"):
                 "CHECKIMAGE_TYPE PSFPROTOS needs a PSF model",
             ("--keys", "NUMBER,SPREAD_MODEL"): "SPREAD_MODEL needs a PSF model: give --psf auto",
             ("--keys", "NUMBER", "--psf", str(ccd)): "is not a PSFEx model",
             ("--keys", "NUMBER", "--psf", str(tmp_path / "none.psf")): "PSF model not found",
             ("--keys", "MAG_PSF", "--psf", "auto", "--set", f"PSF_NAME={ccd}"): "--psf or PSF_NAME, not both"}
    for args, message in cases.items():
        proc = subprocess.run([*SEXSTREAM, "extract", str(ccd), *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
