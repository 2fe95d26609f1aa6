"""`Plan.relative_cost`: the expected cost of a plan relative to one plain pass (the
figures of scripts/bench_psf.py, see sexstream.cost)."""
from __future__ import annotations

import pytest

from sexstream import cost, extractor, settings


def relative(**choice) -> float:
    return extractor.prepare(settings.load(fitskeys=(), **choice)).relative_cost


def test_relative_cost_adds_the_measured_terms_of_what_a_plan_does(tmp_path):
    assert relative(keys=("NUMBER", "FLUX_AUTO")) == 1.0
    assert relative(keys=("NUMBER", "MAG_PSF", "SPREAD_MODEL"), psf="auto") == pytest.approx(
        1 + cost.RECIPE + cost.PSF_FIT + cost.MODEL_FIT)
    assert relative(keys=("NUMBER", "MAG_DETMODEL"), psf="auto") == pytest.approx(1 + cost.RECIPE + cost.DETMODEL_FIT)
    assert relative(keys=("NUMBER", "IMAFLAGS_ISO"), flag="hdu:MASK", weight="hdu:VARIANCE") == 1 + cost.MAPS
    (tmp_path / "ref.csv").write_text("ra,dec\n1,2\n")
    assert relative(keys=("NUMBER_ASSOC",), assoc=str(tmp_path / "ref.csv")) == 1 + cost.ASSOC
    # model fitting dominates: it is what scheduling must see
    assert relative(keys=("SPREAD_MODEL",), psf="auto") > 10 * relative(keys=("MAG_PSF",), psf="auto")
