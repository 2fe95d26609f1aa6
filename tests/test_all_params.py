"""Every parameter `source-extractor -dp` lists: what each needs (checked against the
binary itself), refused up front without its input, measured with it.

Cost, kept CI-sized: the needs table is checked with one bare SExtractor run per key on a
256x256 image (428 runs, ~5 s); the measurement runs sexstream twice (every key but the
7 *_DETMODEL ones in one run, those in dual-image mode in another), with a PSFEx model, a
flag map, an ASSOC list and a SOM file (~4 s); each key alone goes through `prepare`.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from astropy.io import fits

from conftest import SYSTEM_SHARE
from daemon_harness import SEXSTREAM
from sexstream import binary, extractor, requirements, settings, synthetic
from sexstream.requirements import MissingInputError

#: What SExtractor says when an input is missing, by need.
MESSAGES = {"psf": "PSF file not found", "flag": "cannot open flag.fits",
            "assoc": "Assoc-list file not found", "som": "SOM file not found"}


def write_som(path: Path) -> Path:
    """A minimal SOM file in the format SExtractor's som_load reads (a SOM binary table:
    INPAXISn, SOMAXISn and training keys, one WEIGHTS vector): 4 Gaussian 7x7 prototypes on
    a 2x2 map. No public tool writes these; it exists so that FLUX_SOMFIT can be measured."""
    yy, xx = np.mgrid[-3:4, -3:4]
    protos = [np.exp(-(xx ** 2 + yy ** 2) / (2 * s * s)) for s in (0.8, 1.2, 1.8, 2.5)]
    weights = np.array([p / p.sum() for p in protos], dtype=np.float32).reshape(1, -1)
    table = fits.BinTableHDU.from_columns([fits.Column("WEIGHTS", f"{weights.size}E", array=weights)], name="SOM")
    for key, value in (("INPNAXIS", 2), ("INPAXIS1", 7), ("INPAXIS2", 7), ("INPNEXTR", 0), ("SOMNAXIS", 2),
                       ("SOMAXIS1", 2), ("SOMAXIS2", 2), ("SOMLRATE", 0.5), ("SOMKERNW", 1.0),
                       ("SOMNPASS", 1), ("SOMNSWEE", 1)):
        table.header[key] = value
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)
    return path


@pytest.fixture(scope="module")
def names() -> list[str]:
    found = list(binary.parameters(binary.find_binary()))
    assert len(found) == 428
    return found


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    """A small generated image with everything any key needs beside it."""
    folder = tmp_path_factory.mktemp("all_params")
    hdul, truth = synthetic.render(seed=6, nx=256, ny=256)
    image = folder / "tiny.fits"
    hdul.writeto(image)
    flags = np.zeros(hdul[0].data.shape, np.int16)
    flags[:, 100:110] = 3
    fits.PrimaryHDU(flags).writeto(folder / "tiny.flag.fits")
    truth["ra", "dec", "mag"].write(folder / "ref.csv", format="ascii.csv")
    return {"image": image, "flag": "{stem}.flag.fits", "assoc": str(folder / "ref.csv"),
            "som": str(write_som(folder / "test.som"))}


def provided(inputs: dict) -> dict:
    """Settings that give every input."""
    return {"psf": "auto", "flag": inputs["flag"], "assoc": inputs["assoc"],
            "overrides": (("SOM_NAME", inputs["som"]),)}


def test_the_needs_table_is_sextractor_s_own(names, inputs, tmp_path):
    """Each key alone, the binary with the packaged defaults and no input: it stops with
    the missing input's message exactly when `requirements.need_of` says it needs one."""
    wrong = []
    for name in names:
        (tmp_path / "one.param").write_text(name + "\n")
        proc = subprocess.run([shutil.which("source-extractor"), str(inputs["image"]), "-c",
                               str(SYSTEM_SHARE / "default.sex"), "-PARAMETERS_NAME", "one.param",
                               "-FILTER_NAME", str(SYSTEM_SHARE / "default.conv"),
                               "-STARNNW_NAME", str(SYSTEM_SHARE / "default.nnw"),
                               "-CATALOG_TYPE", "FITS_1.0", "-CATALOG_NAME", "one.cat", "-VERBOSE_TYPE", "QUIET"],
                              cwd=tmp_path, capture_output=True, text=True)
        need = requirements.need_of(name)
        said = next((n for n, m in MESSAGES.items() if m in proc.stderr), None)
        if said != (need.name if need else None) or (need is None and proc.returncode != 0):
            wrong.append((name, need and need.name, said, proc.returncode))
    assert wrong == []
    counts = {}
    for name in names:
        need = requirements.need_of(name)
        counts[need.name if need else None] = counts.get(need.name if need else None, 0) + 1
    assert counts == {None: 217, "psf": 206, "flag": 2, "assoc": 2, "som": 1}


def test_each_key_alone_is_refused_without_its_input_and_accepted_with_it(names, inputs):
    for name in names:
        need = requirements.need_of(name)
        bare = settings.load(keys=(name,), fitskeys=())
        if need is None:
            extractor.prepare(bare)
        else:
            with pytest.raises(MissingInputError) as caught:
                extractor.prepare(bare)
            assert str(caught.value).startswith(f"{name} needs {need.what}") and need.flag in str(caught.value)
            extractor.prepare(settings.load(keys=(name,), fitskeys=(), **provided(inputs)))


def test_the_cli_refuses_with_exit_2_and_params_says_what_each_key_needs(inputs):
    proc = subprocess.run([*SEXSTREAM, "extract", str(inputs["image"]), "--keys", "NUMBER,FLUX_SOMFIT"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "sexstream extract: error: FLUX_SOMFIT needs a SOM file: give --set SOM_NAME=FILE"
    listing = subprocess.run([*SEXSTREAM, "params", "--needs", "flag"], capture_output=True, text=True).stdout
    assert listing.splitlines() == [
        "IMAFLAGS_ISO(n)        FLAG-image flags OR'ed over the iso. profile -- needs a flag map (--flag)",
        "NIMAFLAGS_ISO(n)       Number of flagged pixels entering IMAFLAGS_ISO -- needs a flag map (--flag)"]
    spread = subprocess.run([*SEXSTREAM, "params", "^SPREAD_MODEL$"], capture_output=True, text=True).stdout
    assert spread.strip().endswith("-- needs a PSF model (--psf)")


def test_all_428_keys_measure_with_their_inputs(names, inputs):
    detmodel = [n for n in names if requirements.is_detmodel(n)]
    single = [n for n in names if n not in detmodel]
    plain = extractor.extract(inputs["image"], extractor.prepare(settings.load(keys=("NUMBER",), fitskeys=())))
    n_sources = plain.record["n_sources"]
    assert n_sources >= 10
    for keys in (single, ["NUMBER", *detmodel]):
        plan = extractor.prepare(settings.load(keys=tuple(keys), fitskeys=(), **provided(inputs)))
        assert plan.dual == (keys[1] in detmodel)
        result = extractor.extract(inputs["image"], plan)
        assert result.record["status"] == "ok", result.record["reason"]
        table = result.sources
        assert table.num_rows == n_sources
        assert [k.name for k in plan.keys] == [c for c in table.column_names if c in set(keys)]
        empty = [k for k in keys if table[k].null_count == table.num_rows
                 or pa.types.is_null(table[k].type)]
        assert empty == []
    # the inputs were used: flags, matches and PSF fits have values
    got = extractor.extract(inputs["image"], extractor.prepare(settings.load(
        keys=("IMAFLAGS_ISO", "NUMBER_ASSOC", "MAG_PSF", "FLUX_SOMFIT"), fitskeys=(), **provided(inputs)))).sources
    assert any(v[0] for v in got["IMAFLAGS_ISO"].to_pylist())
    assert sum(got["NUMBER_ASSOC"].to_pylist()) >= 1
    assert all(v[0] < 0 for v in got["MAG_PSF"].to_pylist()[:5]) and all(got["FLUX_SOMFIT"].to_pylist()[:5])
