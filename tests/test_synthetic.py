"""The synthetic sky generator: reproducible files, MegaCam-like headers and WCS, and
sources that the real SExtractor finds where the truth table says they are."""
from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table, vstack
from astropy.time import Time
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

from sexstream import synthetic
from sexstream.synthetic import GAIN, PIXEL_SCALE, READ_NOISE, SATURATE

REPO = Path(__file__).resolve().parent.parent
SEX = shutil.which("source-extractor")
SEX_SHARE = Path("/usr/share/source-extractor")
SMALL = {"nx": 256, "ny": 256}


def _nearest(ra1: np.ndarray, dec1: np.ndarray, ra2: np.ndarray,
             dec2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each position 1 (degrees): the index of the nearest position 2 and the
    separation (arcsec)."""
    def unit(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        ra, dec = np.radians(np.asarray(ra, float)), np.radians(np.asarray(dec, float))
        return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], -1)
    a, b = unit(ra1, dec1), unit(ra2, dec2)
    idx = (a @ b.T).argmax(axis=1)
    chord = np.linalg.norm(a - b[idx], axis=1)
    return idx, np.degrees(2 * np.arcsin(chord / 2)) * 3600


def _extract(image: Path, workdir: Path) -> Table:
    """Run the real SExtractor on `image` in `workdir`; its FITS_1.0 catalog, all
    extensions stacked with an EXT column (1-based HDU index for MEFs, else 0)."""
    params = workdir / "cat.param"
    params.write_text("NUMBER\nALPHA_J2000\nDELTA_J2000\nFLUX_AUTO\n")
    subprocess.run([SEX, str(image), "-c", str(SEX_SHARE / "default.sex"),
                    "-FILTER_NAME", str(SEX_SHARE / "default.conv"),
                    "-PARAMETERS_NAME", str(params), "-CATALOG_TYPE", "FITS_1.0",
                    "-CATALOG_NAME", "out.cat", "-VERBOSE_TYPE", "QUIET"],
                   cwd=workdir, check=True, timeout=120)
    with fits.open(workdir / "out.cat") as cat:
        tables = [Table(hdu.data) for hdu in cat[1:]]
    for i, t in enumerate(tables):
        t["EXT"] = i + 1 if len(tables) > 1 else 0
    return tables[0] if len(tables) == 1 else vstack(tables)


def test_same_seed_writes_byte_identical_files(tmp_path: Path) -> None:
    a = synthetic.make_exposure(tmp_path / "a.fits", seed=7, n_ccd=2, nx=128, ny=200)
    b = synthetic.make_exposure(tmp_path / "b.fits", seed=7, n_ccd=2, nx=128, ny=200)
    c = synthetic.make_exposure(tmp_path / "c.fits", seed=8, n_ccd=2, nx=128, ny=200)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_primary_header_has_observation_keys_of_the_right_types(tmp_path: Path) -> None:
    path = synthetic.make_exposure(tmp_path / "x.fits", seed=3, filter="g", exptime=120.0,
                                   **SMALL)
    with fits.open(path) as hdul:
        h, data = hdul[0].header, hdul[0].data
    for key in ("RA_DEG", "DEC_DEG", "EXPTIME", "MJD-OBS", "GAIN", "SATURATE"):
        assert type(h[key]) is float, key
    for key in ("FILTER", "RUNID", "DATE-OBS", "OBJECT", "TELESCOP", "INSTRUME"):
        assert type(h[key]) is str, key
    assert h["FILTER"] == "g.MP9401" and h["EXPTIME"] == 120.0
    assert (h["TELESCOP"], h["INSTRUME"]) == ("CFHT 3.6m", "MegaPrime")
    assert re.fullmatch(r"\d\d[AB]Q\d\d", h["RUNID"])
    assert 0 <= h["RA_DEG"] < 360 and -30 <= h["DEC_DEG"] <= 70
    assert abs(Time(h["DATE-OBS"], scale="utc").mjd - h["MJD-OBS"]) < 1e-8
    assert (h["GAIN"], h["SATURATE"]) == (GAIN, SATURATE)
    assert data.dtype == np.dtype(">f4") and data.shape == (256, 256)


def test_chosen_pointing_is_crval_and_crpix_maps_to_it(tmp_path: Path) -> None:
    path = synthetic.make_exposure(tmp_path / "x.fits", ra=150.1, dec=2.2, seed=1,
                                   nx=300, ny=500)
    header = fits.getheader(path)
    assert (header["RA_DEG"], header["DEC_DEG"]) == (150.1, 2.2)
    assert (header["CTYPE1"], header["CTYPE2"]) == ("RA---TAN", "DEC--TAN")
    w = WCS(header)
    ra, dec = w.all_pix2world(header["CRPIX1"], header["CRPIX2"], 1)
    assert ra == pytest.approx(150.1, abs=1e-9) and dec == pytest.approx(2.2, abs=1e-9)
    assert header["CRPIX1"] == 150.5 and header["CRPIX2"] == 250.5  # the CCD centre
    scales = proj_plane_pixel_scales(w) * 3600
    assert scales == pytest.approx([0.187, 0.187], rel=1e-6)
    # North up, east left: +y raises Dec, +x lowers RA.
    (ra0, ra1), (dec0, dec1) = w.all_pix2world([150, 151], [250, 251], 0)
    assert dec1 > dec0 and ra1 < ra0


def test_mef_lays_36_ccds_side_by_side_in_a_9_by_4_mosaic(tmp_path: Path) -> None:
    nx, ny = 32, 72
    path = synthetic.make_exposure(tmp_path / "m.fits", ra=210.0, dec=54.0, seed=2,
                                   n_ccd=36, nx=nx, ny=ny)
    with fits.open(path) as hdul:
        assert hdul[0].data is None and hdul[0].header["NEXTEND"] == 36
        exts = hdul[1:]
        assert [e.header["EXTNAME"] for e in exts] == [f"ccd{k:02d}" for k in range(36)]
        assert all(e.data.shape == (ny, nx) and e.data.dtype.kind == "f" for e in exts)
        assert all(e.header["SATURATE"] == SATURATE and e.header["GAIN"] == GAIN
                   for e in exts)
        wcses = [WCS(e.header) for e in exts]
    # Corners of every CCD, projected on one tangent plane of our own at the pointing.
    plane = WCS(naxis=2)
    plane.wcs.ctype, plane.wcs.crval = ["RA---TAN", "DEC--TAN"], [210.0, 54.0]
    plane.wcs.crpix, plane.wcs.cdelt = [1.0, 1.0], [-1 / 3600, 1 / 3600]  # arcsec, 0 at pointing
    boxes = []
    for w in wcses:
        ra, dec = w.all_pix2world([-0.5, nx - 0.5, nx - 0.5, -0.5],
                                  [-0.5, -0.5, ny - 0.5, ny - 0.5], 0)
        x, y = plane.all_world2pix(ra, dec, 0)
        boxes.append((x.min(), x.max(), y.min(), y.max()))
    boxes = np.array(boxes)
    for i in range(36):
        for j in range(i + 1, 36):
            a, b = boxes[i], boxes[j]
            overlap_x = min(a[1], b[1]) - max(a[0], b[0])
            overlap_y = min(a[3], b[3]) - max(a[2], b[2])
            assert overlap_x < 0 or overlap_y < 0, (i, j)
    centres = np.c_[(boxes[:, 0] + boxes[:, 1]) / 2, (boxes[:, 2] + boxes[:, 3]) / 2]
    assert len(np.unique(np.round(centres[:, 0]))) == 9
    assert len(np.unique(np.round(centres[:, 1]))) == 4
    assert centres.mean(axis=0) == pytest.approx([0, 0], abs=0.01)  # arcsec
    step = (nx + synthetic.CCD_GAP) * PIXEL_SCALE
    assert abs(centres[1, 0] - centres[0, 0]) == pytest.approx(step, rel=1e-3)


def test_truth_rows_are_placed_where_the_image_peaks(tmp_path: Path) -> None:
    hdul, truth = synthetic.render(seed=11, nx=400, ny=400, n_stars=30, n_galaxies=0,
                                   saturated_fraction=0.1)
    data = hdul[0].data
    stars = truth[~truth["saturated"]]
    brightest = stars[np.argmax(stars["flux"])]
    x, y = int(round(brightest["x"])), int(round(brightest["y"]))
    x0, y0 = max(x - 3, 0), max(y - 3, 0)
    box = data[y0:y + 4, x0:x + 4]
    py, px = np.unravel_index(np.argmax(box), box.shape)
    assert abs(px + x0 - brightest["x"]) <= 1 and abs(py + y0 - brightest["y"]) <= 1
    saturated = truth[truth["saturated"]]
    assert len(saturated) == 3
    for row in saturated:
        assert data[int(round(row["y"])), int(round(row["x"]))] == SATURATE
    assert data.max() == SATURATE


@pytest.mark.parametrize("filter, exptime", [("r", 300.0), ("u", 2.0)])
def test_background_has_the_sky_level_and_poisson_plus_read_noise(filter: str,
                                                                  exptime: float) -> None:
    hdul, truth = synthetic.render(seed=5, nx=512, ny=512, n_stars=0, n_galaxies=0,
                                   filter=filter, exptime=exptime)
    assert len(truth) == 0
    data, sky = hdul[0].data.astype(float), hdul[0].header["SKYLEVEL"]
    sigma = math.sqrt(sky * GAIN + READ_NOISE ** 2) / GAIN
    assert data.mean() == pytest.approx(sky, abs=5 * sigma / 512)
    assert data.std() == pytest.approx(sigma, rel=0.02)
    if sky * GAIN < 10:  # the exact-Poisson branch: counts are whole electrons + read noise
        assert np.mean(np.abs(data * GAIN - np.rint(data * GAIN)) < 0.05) < 0.2


@pytest.mark.skipif(SEX is None, reason="source-extractor is not installed")
@pytest.mark.parametrize("n_ccd", [1, 3])
def test_sextractor_finds_bright_stars_at_their_true_sky_positions(tmp_path: Path,
                                                                  n_ccd: int) -> None:
    path = synthetic.make_exposure(tmp_path / "sky.fits", seed=21, n_ccd=n_ccd, nx=500,
                                   ny=600, n_stars=60, n_galaxies=40, ra=33.3, dec=-5.5)
    _, truth = synthetic.render(seed=21, n_ccd=n_ccd, nx=500, ny=600, n_stars=60,
                                n_galaxies=40, ra=33.3, dec=-5.5)
    cat = _extract(path, tmp_path)
    inside = ((truth["x"] > 10) & (truth["x"] < 490) & (truth["y"] > 10)
              & (truth["y"] < 590))
    faint_cut = np.median(truth["flux"][truth["kind"] == "star"])
    bright = truth[(truth["kind"] == "star") & ~truth["saturated"] & inside
                   & (truth["flux"] > faint_cut)]
    assert len(bright) >= 20 * n_ccd
    idx, sep = _nearest(bright["ra"], bright["dec"], cat["ALPHA_J2000"], cat["DELTA_J2000"])
    matched = sep < 1.0
    assert matched.mean() >= 0.9
    assert np.all(cat["EXT"][idx[matched]] == bright["hdu"][matched])
    ratio = cat["FLUX_AUTO"][idx[matched]] / bright["flux"][matched]
    assert 0.85 < np.median(ratio) < 1.05
    # The 1" tolerance means something: the same stars 3" away are not matched.
    _, off = _nearest(bright["ra"], bright["dec"] + 3 / 3600, cat["ALPHA_J2000"],
                      cat["DELTA_J2000"])
    assert np.mean(off < 1.0) < 0.1


def test_make_exposure_never_clobbers_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = synthetic.make_exposure(tmp_path / "x.fits", seed=1, **SMALL)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        synthetic.make_exposure(path, seed=2, **SMALL)
    assert path.read_bytes() == before
    synthetic.make_exposure(path, seed=2, overwrite=True, **SMALL)
    assert path.read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.fits"]


def test_make_night_walks_the_sky_with_increasing_mjd(tmp_path: Path) -> None:
    paths = synthetic.make_night(tmp_path / "n1", 4, seed=9, exptime=60.0, **SMALL)
    again = synthetic.make_night(tmp_path / "n2", 4, seed=9, exptime=60.0, **SMALL)
    assert [p.name for p in paths] == [p.name for p in again]
    assert all(p.read_bytes() == q.read_bytes() for p, q in zip(paths, again))
    headers = [fits.getheader(p) for p in paths]
    mjd = np.array([h["MJD-OBS"] for h in headers])
    assert np.allclose(np.diff(mjd) * 86400, 60.0 + 40.0)
    assert [h["EXPNUM"] for h in headers] == list(range(headers[0]["EXPNUM"],
                                                        headers[0]["EXPNUM"] + 4))
    assert [p.name for p in paths] == [f"{h['EXPNUM']}p.fits" for h in headers]
    assert len({h["RUNID"] for h in headers}) == 1
    ra, dec = [h["RA_DEG"] for h in headers], [h["DEC_DEG"] for h in headers]
    step = (256 + synthetic.CCD_GAP) * PIXEL_SCALE  # arcsec, the default
    for i in range(3):
        _, s = _nearest(ra[i + 1:i + 2], dec[i + 1:i + 2], ra[i:i + 1], dec[i:i + 1])
        assert s[0] == pytest.approx(step, rel=0.01)


def test_make_sky_script_prints_the_files_it_wrote(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "make_sky.py"),
                          str(tmp_path / "raw"), "-n", "2", "--seed", "3", "--nx", "64",
                          "--ny", "96", "--ccds", "2", "--ra", "10", "--dec", "20"],
                         capture_output=True, text=True, check=True, timeout=60)
    printed = [Path(line) for line in out.stdout.splitlines()]
    assert len(printed) == 2 and all(p.is_file() for p in printed)
    assert sorted(printed) == sorted((tmp_path / "raw").iterdir())
    first = fits.getheader(printed[0])
    assert (first["RA_DEG"], first["DEC_DEG"]) == (10.0, 20.0)
    assert len(fits.open(printed[0])) == 3
