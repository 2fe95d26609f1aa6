"""Weight and flag maps: a calexp-like MEF (IMAGE, MASK, VARIANCE) measured as one image
with its variance and mask, sidecar maps, the choice of the image HDU; the oracle is
SExtractor run by hand on the planes extracted to files of their own."""
from __future__ import annotations

import bz2
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from conftest import needs_real
from psf_oracle import assert_equal_printed, run_by_hand
from sexstream import extractor, planes, settings, synthetic

KEYS = ["NUMBER", "EXT_NUMBER", "X_IMAGE", "Y_IMAGE", "FLUX_AUTO", "FLUXERR_AUTO", "MAG_ISO",
        "IMAFLAGS_ISO(1)", "NIMAFLAGS_ISO(1)", "FLAGS_WEIGHT", "FLAGS", "ALPHA_J2000", "DELTA_J2000"]
ORACLE_KEYS = [k for k in KEYS if k != "EXT_NUMBER"]


def split_planes(calexp: Path, folder: Path) -> dict[str, Path]:
    """The calexp's IMAGE, MASK and VARIANCE planes, each as a file of its own (by hand)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    with fits.open(calexp) as hdul:
        for name in ("IMAGE", "MASK", "VARIANCE"):
            out[name] = folder / f"{name.lower()}.fits"
            fits.PrimaryHDU(hdul[name].data, hdul[name].header).writeto(out[name])
    return out


def measure(path: Path, **choice) -> extractor.ImageResult:
    plan = extractor.prepare(settings.load(keys=tuple(KEYS), fitskeys=("FILTER",), **choice))
    return extractor.extract(path, plan)


def assert_calexp_measured_like_by_hand(calexp: Path, tmp_path: Path) -> list[dict]:
    result = measure(calexp, weight="hdu:VARIANCE", flag="hdu:MASK")
    assert result.record["status"] == "ok", result.record["reason"]
    assert result.record["n_extensions"] == 1
    assert [fp["hdu"] for fp in result.record["footprints"]] == [1]
    rows = result.sources.to_pylist()
    assert {r["EXT_NUMBER"] for r in rows} == {1}
    files = split_planes(calexp, tmp_path / "planes")
    names, printed = run_by_hand(str(files["IMAGE"]), ORACLE_KEYS, tmp_path / "hand", "-WEIGHT_TYPE", "MAP_VAR",
                                 "-WEIGHT_IMAGE", str(files["VARIANCE"]), "-FLAG_IMAGE", str(files["MASK"]))
    assert_equal_printed(rows, ORACLE_KEYS, names, printed)
    assert any(r["IMAFLAGS_ISO"][0] for r in rows) and any(r["NIMAFLAGS_ISO"][0] for r in rows)
    # the variance is used: errors differ from the same plane measured without it
    names, bare = run_by_hand(str(files["IMAGE"]), ["FLUXERR_AUTO"], tmp_path / "bare")
    assert [float(t[0]) for t in bare] != pytest.approx([r["FLUXERR_AUTO"] for r in rows], rel=1e-3)
    return rows


def test_generated_calexp_gives_one_extension_with_its_variance_and_mask(tmp_path):
    calexp = synthetic.make_calexp(tmp_path / "calexp.fits", seed=9, nx=400, ny=300)
    rows = assert_calexp_measured_like_by_hand(calexp, tmp_path)
    assert len(rows) > 15 and rows[0]["FILTER"] == "r.MP9601"  # header keys of the primary


@needs_real
def test_real_decam_ccd_as_a_calexp_gives_one_extension_with_its_variance_and_mask(real_dir, tmp_path):
    """A real DECam CCD (sfft/DEC-OBS04a.mini.fits) laid out as a calexp, its variance
    from its own GAIN and RDNOISE, its mask from its SATURATE, bad columns and edges."""
    with fits.open(real_dir / "sfft" / "DEC-OBS04a.mini.fits") as hdul:
        head = hdul[0].header
        layout = synthetic.calexp(hdul[0].data, head, gain=head["GAIN"], read_noise=head["RDNOISE"],
                                  saturate=head["SATURATE"], seed=4)
        layout.writeto(tmp_path / "calexp.fits")
    rows = assert_calexp_measured_like_by_hand(tmp_path / "calexp.fits", tmp_path)
    assert len(rows) > 10


def test_without_maps_each_plane_is_measured_as_an_image(tmp_path):
    calexp = synthetic.make_calexp(tmp_path / "calexp.fits", seed=9, nx=400, ny=300)
    plan = extractor.prepare(settings.load(keys=("NUMBER", "EXT_NUMBER"), fitskeys=()))
    result = extractor.extract(calexp, plan)
    assert result.record["n_extensions"] == 3  # IMAGE, MASK and VARIANCE, as today


def test_sidecar_maps_by_pattern_and_a_missing_one_is_a_failed_row(tmp_path):
    calexp = synthetic.make_calexp(tmp_path / "src.fits", seed=10, nx=300, ny=300)
    files = split_planes(calexp, tmp_path / "night")
    image = tmp_path / "night" / "ccd7.fits"
    files["IMAGE"].rename(image)
    with fits.open(files["VARIANCE"]) as hdul:  # an inverse-variance weight map, as DECam ships them
        fits.PrimaryHDU((1 / hdul[0].data).astype(np.float32)).writeto(tmp_path / "night" / "ccd7.wht.fits")
    (tmp_path / "night" / "ccd7.flag.fits.bz2").write_bytes(bz2.compress(files["MASK"].read_bytes()))
    choice = {"weight": "{stem}.wht.fits", "flag": "{stem}.flag.fits.bz2"}
    result = measure(image, **choice)
    assert result.record["status"] == "ok", result.record["reason"]
    names, printed = run_by_hand(str(image), ORACLE_KEYS, tmp_path / "hand", "-WEIGHT_TYPE", "MAP_WEIGHT",
                                 "-WEIGHT_IMAGE", str(tmp_path / "night" / "ccd7.wht.fits"),
                                 "-FLAG_IMAGE", str(files["MASK"]))
    assert_equal_printed(result.sources.to_pylist(), ORACLE_KEYS, names, printed)
    other = tmp_path / "night" / "ccd8.fits"
    other.symlink_to(image)
    missing = measure(other, **choice)
    assert missing.record["status"] == "failed"
    assert missing.record["reason"] == (f"weight map not found: {tmp_path / 'night' / 'ccd8.wht.fits'} "
                                        "(from --weight {stem}.wht.fits)")


def test_image_hdu_says_which_plane_is_the_image(tmp_path):
    calexp = synthetic.make_calexp(tmp_path / "calexp.fits", seed=9, nx=400, ny=300)
    with fits.open(calexp) as hdul:
        hdul.append(fits.ImageHDU(hdul["IMAGE"].data * 0 + 1000, name="BACKGROUND"))
        hdul.writeto(tmp_path / "four.fits")
    ambiguous = measure(tmp_path / "four.fits", weight="hdu:VARIANCE", flag="hdu:MASK")
    assert ambiguous.record["status"] == "failed"
    assert "2 image HDUs besides the maps" in ambiguous.record["reason"]
    assert "--image-hdu" in ambiguous.record["reason"]
    chosen = measure(tmp_path / "four.fits", weight="hdu:VARIANCE", flag="hdu:MASK", image_hdu="IMAGE")
    plain = measure(calexp, weight="hdu:VARIANCE", flag="hdu:MASK")
    assert chosen.record["status"] == "ok" and chosen.record["n_extensions"] == 1
    assert chosen.sources.drop_columns(["path", "image_id", "config_hash"]).equals(
        plain.sources.drop_columns(["path", "image_id", "config_hash"]))
    wrong = measure(calexp, flag="hdu:NOPE")
    assert wrong.record["status"] == "failed"
    assert wrong.record["reason"] == "flag map hdu:NOPE: no HDU named NOPE (HDUs 0:-, 1:IMAGE, 2:MASK, 3:VARIANCE)"


def test_weight_type_defaults_and_usage_errors():
    assert planes.from_settings(weight="hdu:VARIANCE").weight_type == "MAP_VAR"
    assert planes.from_settings(weight="hdu:3").weight_type == "MAP_WEIGHT"
    assert planes.from_settings(weight="{stem}.rms.fits", weight_type="map_rms").weight_type == "MAP_RMS"
    assert planes.sidecar("{stem}.weight.fits", Path("/d/c4d_1.fits.fz")) == Path("/d/c4d_1.weight.fits")
    for kwargs, message in (({"weight_type": "MAP_VAR"}, "--weight-type needs --weight"),
                            ({"weight": "x", "weight_type": "VAR"}, "unknown weight type"),
                            ({"flag": "hdu:"}, "needs an EXTNAME or an HDU index"),
                            ({"flag": "{ext}.fits"}, "{stem}, {name} and {dir} only")):
        with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
            planes.from_settings(**kwargs)
    with pytest.raises(ValueError, match="give the WEIGHT_IMAGE once"):
        extractor.prepare(settings.load(keys=("NUMBER",), fitskeys=(), weight="hdu:VARIANCE",
                                        overrides=(("WEIGHT_IMAGE", "/tmp/w.fits"),)))
    base = extractor.prepare(settings.load(keys=("NUMBER",), fitskeys=()))
    hashes = {extractor.prepare(settings.load(keys=("NUMBER",), fitskeys=(), **c)).config_hash
              for c in ({"weight": "hdu:VARIANCE"}, {"weight": "hdu:VARIANCE", "weight_type": "MAP_RMS"},
                        {"flag": "hdu:MASK"}, {"image_hdu": "1"})}
    assert len(hashes | {base.config_hash}) == 5
