"""Synthetic CFHT-MegaCam-like exposures: stars, galaxies, sky and noise in FITS files.

A seeded generator of images for tests, demos and benchmarks. Every random draw comes
from ``numpy.random.default_rng(seed)``, so one seed always gives a byte-identical file.
Sources are rendered as small postage stamps added to the frame, never evaluated over
the full frame, so a full 2048 x 4612 CCD takes a fraction of a second.

Conventions: pixel positions in the truth table are 0-based (the centre of
``data[0, 0]`` is (0, 0), astropy's ``origin=0``); FITS CRPIX and SExtractor's
X_IMAGE/Y_IMAGE are 1-based. Fluxes are in ADU, angles in degrees unless a name says
arcsec, exposure times in seconds.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from astropy.io import fits
from astropy.table import Table, vstack
from astropy.time import Time
from astropy.wcs import WCS

from sexstream.skymodel import (GAIN, PIXEL_SCALE, READ_NOISE, SATURATE, add_sources,  # noqa: F401
                                draw_sources, noisy)

CCD_GAP = 80             # pixels between neighbouring CCDs of a mosaic
MOSAIC_COLUMNS = 9       # MegaCam's 9 x 4 layout
DENSITY = 27.0           # detectable sources / arcmin^2 (~2,500 per 2048 x 4612 CCD)
STAR_FRACTION = 0.4      # share of stars among those sources


@dataclass(frozen=True)
class Band:
    """A MegaCam filter: its FILTER value, zero point (mag of 1 ADU/s) and dark sky
    (mag/arcsec^2)."""

    name: str
    zeropoint: float
    sky: float


BANDS = {"u": Band("u.MP9301", 25.2, 22.7), "g": Band("g.MP9401", 26.5, 22.0),
         "r": Band("r.MP9601", 26.2, 21.0), "i": Band("i.MP9702", 25.9, 20.2),
         "z": Band("z.MP9801", 25.0, 19.4)}


def band(filter: str) -> Band:
    """The `Band` of a short ('r') or full ('r.MP9601') MegaCam filter name."""
    for key, b in BANDS.items():
        if filter in (key, b.name):
            return b
    raise ValueError(f"unknown filter {filter!r}; known: {sorted(BANDS)}")


def wcs_header(ra: float, dec: float, crpix: tuple[float, float],
               rotation: float = 0.0, scale: float = PIXEL_SCALE) -> fits.Header:
    """A TAN WCS: sky (`ra`, `dec`, degrees) at 1-based pixel `crpix`, `scale`
    arcsec/pixel, north up and east left when `rotation` (degrees) is 0."""
    s, t = scale / 3600.0, math.radians(rotation)
    h = fits.Header()
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CUNIT1"], h["CUNIT2"] = "deg", "deg"
    h["CRVAL1"], h["CRVAL2"] = float(ra), float(dec)
    h["CRPIX1"], h["CRPIX2"] = float(crpix[0]), float(crpix[1])
    h["CD1_1"], h["CD1_2"] = -s * math.cos(t), s * math.sin(t)
    h["CD2_1"], h["CD2_2"] = s * math.sin(t), s * math.cos(t)
    h["RADESYS"], h["EQUINOX"] = "ICRS", 2000.0
    return h


def mosaic_crpix(k: int, n_ccd: int, nx: int, ny: int) -> tuple[float, float]:
    """CRPIX (1-based pixels) of CCD `k` of `n_ccd` so that all CCDs share one tangent
    plane centred on the pointing: rows of up to 9 CCDs, `CCD_GAP` pixels apart."""
    cols = min(n_ccd, MOSAIC_COLUMNS)
    rows = -(-n_ccd // cols)
    width, height = cols * nx + (cols - 1) * CCD_GAP, rows * ny + (rows - 1) * CCD_GAP
    x0, y0 = (k % cols) * (nx + CCD_GAP), (k // cols) * (ny + CCD_GAP)
    return (width - 1) / 2 - x0 + 1, (height - 1) / 2 - y0 + 1


def _observation(rng: np.random.Generator, ra: float | None, dec: float | None,
                 mjd: float | None, runid: str | None, expnum: int | None
                 ) -> dict[str, Any]:
    """Pointing (degrees), MJD-OBS (days), DATE-OBS, RUNID and EXPNUM: the given
    values, or draws from `rng` for those that are None. Draws always happen, so
    fixing one value leaves every other draw (and the sources) unchanged."""
    draws = (rng.uniform(0, 360),
             rng.uniform(math.sin(math.radians(-30)), math.sin(math.radians(70))),
             rng.uniform(60310.25, 61400.25), int(rng.integers(1, 100)),
             int(rng.integers(2_000_000, 3_000_000)))
    mjd = float(draws[2] if mjd is None else mjd)
    time = Time(mjd, format="mjd", scale="utc")
    year, month = time.datetime.year, time.datetime.month
    semester = "A" if 2 <= month <= 7 else "B"
    return {"ra": float(draws[0] if ra is None else ra) % 360.0,
            "dec": float(math.degrees(math.asin(draws[1])) if dec is None else dec),
            "mjd": mjd, "date": time.isot,
            "runid": runid or f"{(year - (month == 1)) % 100:02d}{semester}Q{draws[3]:02d}",
            "expnum": draws[4] if expnum is None else int(expnum)}


def _primary_header(obs: dict[str, Any], b: Band, exptime: float, fwhm: float,
                    sky: float, magzp: float, object: str | None) -> fits.Header:
    """The observation's keys, MegaCam style (see `render` for units)."""
    h = fits.Header()
    for key, value, comment in [
            ("OBJECT", object or f"synthetic {obs['ra']:.3f} {obs['dec']:+.3f}", "target"),
            ("TELESCOP", "CFHT 3.6m", ""), ("INSTRUME", "MegaPrime", ""),
            ("DETECTOR", "MegaCam", "synthetic (sexstream.synthetic)"),
            ("RUNID", obs["runid"], "CFHT run"), ("EXPNUM", obs["expnum"], "odometer"),
            ("FILTER", b.name, ""), ("EXPTIME", float(exptime), "[s]"),
            ("MJD-OBS", obs["mjd"], "[d] start of exposure"),
            ("DATE-OBS", obs["date"], "UTC start of exposure"),
            ("RA_DEG", obs["ra"], "[deg] pointing"), ("DEC_DEG", obs["dec"], "[deg] pointing"),
            ("GAIN", GAIN, "[e-/ADU]"), ("RDNOISE", READ_NOISE, "[e-]"),
            ("SATURATE", SATURATE, "[ADU]"), ("MAGZPT", round(magzp, 4), "mag of 1 ADU"),
            ("SKYLEVEL", round(sky, 3), "[ADU] mean sky"),
            ("FWHM", float(fwhm), "[arcsec] PSF FWHM")]:
        h[key] = (value, comment)
    return h


def _truth_table(src: dict[str, np.ndarray], hdu: int, wcs: WCS, fwhm: float,
                 sky: float, magzp: float) -> Table:
    """The truth rows of one CCD's sources (see `render` for the columns)."""
    ra, dec = wcs.all_pix2world(src["x"], src["y"], 0)
    return Table({
        "hdu": np.full(len(src["x"]), hdu, np.int16),
        "kind": np.where(src["is_star"], "star", "galaxy"),
        "x": src["x"], "y": src["y"], "ra": ra, "dec": dec,
        "flux": src["flux"], "mag": magzp - 2.5 * np.log10(src["flux"]),
        "peak": src["peak"], "saturated": src["peak"] + sky >= SATURATE,
        "fwhm": np.where(src["is_star"], fwhm, np.nan),
        "r_eff": src["r_eff_px"] * PIXEL_SCALE, "sersic_n": src["sersic_n"],
        "axis_ratio": src["axis_ratio"], "pa": src["pa"]},
        units={"x": "pix", "y": "pix", "ra": "deg", "dec": "deg", "flux": "adu",
               "mag": "mag", "peak": "adu", "fwhm": "arcsec", "r_eff": "arcsec",
               "pa": "deg"})


def render(*, ra: float | None = None, dec: float | None = None, seed: int = 0,
           nx: int = 2048, ny: int = 4612, n_ccd: int = 1, mef: bool | None = None,
           filter: str = "r", runid: str | None = None, mjd: float | None = None,
           exptime: float = 300.0, n_stars: int | None = None,
           n_galaxies: int | None = None, density: float = DENSITY, fwhm: float = 0.8,
           psf: str = "moffat", saturated_fraction: float = 0.02, rotation: float = 0.0,
           expnum: int | None = None, object: str | None = None,
           ) -> tuple[fits.HDUList, Table]:
    """Render one exposure in memory: its HDUList and the truth table of its sources.

    Parameters
    ----------
    ra, dec : float, optional
        Pointing (degrees, ICRS); random over the CFHT sky (-30 < dec < 70) if None.
    seed : int
        Seed of ``numpy.random.default_rng``; the same arguments give the same bytes.
    nx, ny : int
        Size of each CCD (pixels); MegaCam's are 2048 x 4612.
    n_ccd : int
        CCDs, laid out in rows of 9 (MegaCam's 9 x 4) on one tangent plane.
    mef : bool, optional
        Multi-extension file (empty primary + one image extension per CCD); default
        ``n_ccd > 1``. A single-HDU file holds one CCD in its primary HDU.
    filter : str
        'u', 'g', 'r', 'i', 'z' or a full MegaCam name such as 'r.MP9601'.
    runid, mjd, expnum, object : optional
        Header values (RUNID like '26BQ01', MJD-OBS in days, EXPNUM, OBJECT); drawn
        from the seed if None.
    exptime : float
        Exposure time (seconds); sets the sky level and the source counts.
    n_stars, n_galaxies : int, optional
        Sources per CCD; by default `density` (sources / arcmin^2) times the CCD area,
        `STAR_FRACTION` of them stars.
    fwhm : float
        PSF full width at half maximum (arcsec).
    psf : str
        'moffat' (beta = 3) or 'gaussian'.
    saturated_fraction : float
        Share of stars made brighter than SATURATE (their cores are clipped).
    rotation : float
        Position angle of the CCD y axis east of north (degrees).

    Returns
    -------
    hdul : astropy.io.fits.HDUList
        float32 images in ADU, sky included.
    truth : astropy.table.Table
        One row per source: hdu (index of its HDU in the file), kind ('star' or
        'galaxy'), x, y (0-based pixels), ra, dec (degrees), flux (ADU, total), mag
        (``-2.5 log10(flux) + MAGZPT``), peak (noiseless ADU above sky), saturated,
        fwhm or r_eff (arcsec), sersic_n, axis_ratio, pa (degrees).
    """
    rng = np.random.default_rng(seed)
    obs = _observation(rng, ra, dec, mjd, runid, expnum)
    ra, dec = obs["ra"], obs["dec"]
    b, mef = band(filter), n_ccd > 1 if mef is None else mef
    if n_ccd > 1 and not mef:
        raise ValueError("several CCDs need a multi-extension file (mef=True)")
    magzp = b.zeropoint + 2.5 * math.log10(exptime)
    sky = 10 ** (-0.4 * (b.sky - b.zeropoint)) * PIXEL_SCALE ** 2 * exptime
    sigma = math.sqrt(sky * GAIN + READ_NOISE ** 2) / GAIN
    total = density * nx * ny * (PIXEL_SCALE / 60) ** 2
    n_stars = round(total * STAR_FRACTION) if n_stars is None else n_stars
    n_galaxies = round(total) - round(total * STAR_FRACTION) if n_galaxies is None else n_galaxies
    fwhm_px = fwhm / PIXEL_SCALE

    primary = _primary_header(obs, b, exptime, fwhm, sky, magzp, object)
    hdus: list[fits.PrimaryHDU | fits.ImageHDU] = [] if not mef else [
        fits.PrimaryHDU(header=primary + fits.Header([("NEXTEND", n_ccd, "CCDs")]))]
    rows = []
    for k, ccd_rng in enumerate(rng.spawn(n_ccd)):
        crpix = mosaic_crpix(k, n_ccd, nx, ny) if mef else ((nx + 1) / 2, (ny + 1) / 2)
        header = wcs_header(ra, dec, crpix, rotation)
        src = draw_sources(ccd_rng, n_stars, n_galaxies, nx, ny, sky, sigma, fwhm_px,
                            psf, saturated_fraction)
        model = np.full((ny, nx), sky, dtype=np.float32)
        add_sources(model, src, np.flatnonzero(src["is_star"]), fwhm_px, psf)
        add_sources(model, src, np.flatnonzero(~src["is_star"]), fwhm_px, psf)
        data = noisy(ccd_rng, model)
        if mef:
            name = f"ccd{k:02d}"
            header.update([("EXTNAME", name), ("CCDNAME", name), ("CCDNUM", k),
                           ("INHERIT", True), ("GAIN", GAIN, "[e-/ADU]"),
                           ("RDNOISE", READ_NOISE, "[e-]"), ("SATURATE", SATURATE, "[ADU]"),
                           ("EXPTIME", float(exptime), "[s]"), ("FILTER", b.name)])
            hdus.append(fits.ImageHDU(data, header))
        else:
            hdus.append(fits.PrimaryHDU(data, primary + header))
        rows.append(_truth_table(src, len(hdus) - 1, WCS(header), fwhm, sky, magzp))
    return fits.HDUList(hdus), rows[0] if len(rows) == 1 else vstack(rows)


def write_atomic(hdul: fits.HDUList, path: str | os.PathLike[str],
                 overwrite: bool = False) -> Path:
    """Write `hdul` to a hidden temporary name in `path`'s folder, then move it into
    place in one rename, so a watcher never sees a partial file.

    Raises FileExistsError if `path` exists and `overwrite` is False."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        hdul.writeto(tmp, overwrite=True)
        if overwrite:
            os.replace(tmp, path)
            return path
        try:
            os.link(tmp, path)  # atomic, and never clobbers
        except FileExistsError:
            raise
        except OSError:  # a file system without hard links
            if path.exists():
                raise FileExistsError(path) from None
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def make_exposure(path: str | os.PathLike[str], *, overwrite: bool = False,
                  **kwargs: Any) -> Path:
    """Render one exposure (see `render` for the keyword arguments) and write it to
    `path` atomically. Returns the path written."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    hdul, _ = render(**kwargs)
    return write_atomic(hdul, path, overwrite)


def iter_night(folder: str | os.PathLike[str], n: int, *, seed: int,
               ra: float | None = None, dec: float | None = None,
               mjd: float | None = None, runid: str | None = None,
               step: float | None = None, exptime: float = 300.0, overhead: float = 40.0,
               overwrite: bool = False, **kwargs: Any) -> Iterator[Path]:
    """Write `n` exposures of one night into `folder`, yielding each path once written.

    Pointings follow a random walk from (`ra`, `dec`) (degrees; random if None) in
    steps of `step` degrees (default: the width of the mosaic, so fields nearly
    touch). MJD-OBS starts at `mjd` (days) and grows by `exptime` + `overhead`
    seconds per exposure; EXPNUM grows by one and names the file ``<EXPNUM>p.fits``.
    Other keyword arguments go to `render`."""
    rng = np.random.default_rng(seed)
    start = _observation(rng, ra, dec, mjd, runid, None)
    ra, dec, mjd = start["ra"], start["dec"], start["mjd"]
    if step is None:
        cols = min(kwargs.get("n_ccd", 1), MOSAIC_COLUMNS)
        step = cols * (kwargs.get("nx", 2048) + CCD_GAP) * PIXEL_SCALE / 3600
    seeds = rng.integers(0, 2 ** 63, size=n)
    angles = rng.uniform(0, 2 * math.pi, size=n)
    for i in range(n):
        expnum = start["expnum"] + i
        yield make_exposure(Path(folder) / f"{expnum}p.fits", overwrite=overwrite,
                            ra=ra, dec=dec, seed=int(seeds[i]), runid=start["runid"],
                            mjd=mjd, expnum=expnum, exptime=exptime, **kwargs)
        mjd += (exptime + overhead) / 86400
        dec_next = dec + step * math.cos(angles[i])
        if abs(dec_next) > 85:
            dec_next = dec - step * math.cos(angles[i])
        ra = (ra + step * math.sin(angles[i]) / math.cos(math.radians(dec))) % 360
        dec = dec_next


def make_night(folder: str | os.PathLike[str], n: int, *, seed: int,
               **kwargs: Any) -> list[Path]:
    """Write `n` exposures of one night into `folder` (see `iter_night`); returns
    their paths in observing order."""
    return list(iter_night(folder, n, seed=seed, **kwargs))


#: Bits of the calexp-like MASK plane (LSST's names and values).
MASK_BITS = {"BAD": 1, "SAT": 2, "EDGE": 16}


def calexp(data: np.ndarray, header: fits.Header, *, gain: float = GAIN, read_noise: float = READ_NOISE,
           saturate: float = SATURATE, seed: int = 0, bad_columns: int = 3, edge: int = 8) -> fits.HDUList:
    """An LSST/HSC ``calexp``-like file of one CCD: an empty primary HDU, then IMAGE (the
    pixels, ADU, with `header`'s WCS), MASK (int32 bits, `MASK_BITS`: `bad_columns`
    seeded BAD columns, SAT where the pixel reaches `saturate` ADU, EDGE on an `edge`
    pixels border) and VARIANCE (ADU^2: pixel / `gain` + (`read_noise` / `gain`)^2,
    `gain` in e-/ADU, `read_noise` in e-)."""
    rng = np.random.default_rng(seed)
    image = np.asarray(data, dtype=np.float32)
    mask = np.zeros(image.shape, np.int32)
    mask[:, rng.choice(image.shape[1], size=bad_columns, replace=False)] |= MASK_BITS["BAD"]
    mask[image >= saturate] |= MASK_BITS["SAT"]
    for border in (np.s_[:edge, :], np.s_[-edge:, :], np.s_[:, :edge], np.s_[:, -edge:]):
        mask[border] |= MASK_BITS["EDGE"]
    variance = (np.clip(image, 0, None) / gain + (read_noise / gain) ** 2).astype(np.float32)
    wcs_keys = fits.Header([c for c in header.cards if c.keyword not in
                            ("SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "")])
    primary = fits.PrimaryHDU(header=fits.Header([c for c in wcs_keys.cards if c.keyword in
                                                  ("OBJECT", "TELESCOP", "INSTRUME", "FILTER", "EXPTIME",
                                                   "MJD-OBS", "DATE-OBS", "RUNID")]))
    planes = fits.Header([("MP_" + k, v) for k, v in MASK_BITS.items()])
    return fits.HDUList([primary, fits.ImageHDU(image, wcs_keys, name="IMAGE"),
                         fits.ImageHDU(mask, planes, name="MASK"), fits.ImageHDU(variance, name="VARIANCE")])


def make_calexp(path: str | os.PathLike[str], *, overwrite: bool = False, **kwargs: Any) -> Path:
    """Render one single-CCD exposure (see `render`) and write it as a `calexp`-like file
    (IMAGE, MASK, VARIANCE HDUs) to `path` atomically. Returns the path written."""
    hdul, _ = render(**{"mef": False, **kwargs})
    return write_atomic(calexp(hdul[0].data, hdul[0].header, seed=kwargs.get("seed", 0)), path, overwrite)
