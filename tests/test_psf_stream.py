"""`--psf auto` through `sexstream replay` and the daemon: rows equal to PSFEx's recipe run
by hand, each image's model kept in the sink with its provenance, a starless frame a
failed row."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest
from astropy.io import fits

from daemon_harness import SEXSTREAM, Daemon, drop, read_table
from psf_oracle import assert_equal_printed, psf_data, recipe_model, run_by_hand
from sexstream import synthetic

pytestmark = pytest.mark.spark

KEYS = ["NUMBER", "MAG_PSF", "SPREAD_MODEL"]
FLAGS = ["--keys", ",".join(KEYS), "--fitskeys", "", "--psf", "auto"]


@pytest.fixture(scope="module")
def night(tmp_path_factory) -> dict:
    """Two generated CCDs and a frame without stars; the recipe by hand on the CCDs."""
    root = tmp_path_factory.mktemp("psf_night")
    ccds = synthetic.make_night(root / "night", 2, seed=17, nx=384, ny=768)
    starless = synthetic.make_exposure(root / "night" / "starless.fits", seed=8, nx=256, ny=256, n_stars=0,
                                       n_galaxies=0)
    oracle = {}
    for i, p in enumerate(ccds):
        model = recipe_model(p, root / f"hand{i}")
        oracle[str(p)] = (model, run_by_hand(str(p), KEYS, root / f"hand{i}", "-PSF_NAME", str(model)))
    return {"folder": root / "night", "ccds": ccds, "starless": starless, "oracle": oracle}


def assert_like_the_recipe(sink: Path, night: dict) -> None:
    images = read_table(sink, "images").set_index("path")
    sources = read_table(sink, "sources")
    for path, (model, (names, printed)) in night["oracle"].items():
        rows = sources[sources.path == path].sort_values("NUMBER").to_dict("records")
        assert_equal_printed(rows, KEYS, names, printed)
        image = images.loc[path]
        assert image.status == "ok" and image.psf_model.startswith(f"artifacts/psf/{image.config_hash}/")
        kept = sink / image.psf_model
        with fits.open(kept) as hdul:
            assert hdul[0].header["SXSCFG"] == image.config_hash and hdul[0].header["SXSPATH"] == path
            assert hdul[0].header["SXSID"] == image.image_id
        for mine, theirs in zip(psf_data(kept), psf_data(model)):
            assert (mine == theirs).all()
    bad = images.loc[str(night["starless"])]
    assert bad.status == "failed" and "No source with appropriate FWHM found" in bad.reason
    assert pd.isna(bad.psf_model)


def test_replay_with_psf_auto_equals_the_recipe_by_hand_and_keeps_each_model(night, tmp_path):
    sink = tmp_path / "sink"
    proc = subprocess.run([*SEXSTREAM, "replay", str(night["folder"]), "--sink", str(sink), *FLAGS,
                           "--progress-every", "0"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]  # the starless frame failed
    assert "2 ok, 1 failed" in proc.stdout
    assert_like_the_recipe(sink, night)


def test_daemon_with_psf_auto_equals_the_recipe_by_hand(night, tmp_path):
    d = Daemon(tmp_path, extra=FLAGS)
    try:
        d.start()
        dropped = [drop(p, d.raw) for p in [*night["ccds"], night["starless"]]]
        d.wait_for_paths(dropped, timeout=600)
        assert d.terminate() == 0
    finally:
        d.stop()
    oracle = {str(d.raw / Path(p).name): v for p, v in night["oracle"].items()}
    assert_like_the_recipe(d.sink, {**night, "oracle": oracle, "starless": d.raw / night["starless"].name})
