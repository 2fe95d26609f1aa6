"""The sky model of the synthetic exposures: magnitudes, PSF (Moffat or Gaussian), Sersic
galaxies convolved with the PSF, postage stamps added to a frame, and detector noise.

Pixel positions are 0-based; fluxes and levels in ADU; sizes in pixels unless a name
says arcsec. `sexstream.synthetic` builds exposures (headers, WCS, files) on top.
"""
from __future__ import annotations

import math

import numpy as np

PIXEL_SCALE = 0.187      # arcsec / pixel
GAIN = 1.6               # e- / ADU
READ_NOISE = 5.0         # e-
SATURATE = 65535.0       # ADU
SNR_FLOOR = 10.0         # faintest point source: S/N in a 1-FWHM-radius aperture
MOFFAT_BETA = 3.0
POISSON_EXACT_BELOW = 100.0  # e-: exact Poisson draws below, Gaussian limit above
# Stamp half-widths (pixels); every side 2*h+1 factors into 3, 5, 7, 11 for fast FFTs.
HALF_SIZES = np.array([7, 10, 12, 16, 22, 31, 40, 62, 87, 121])
STAMP_BUDGET = 4_000_000  # pixels of stamps evaluated at once


def _power_law_mags(rng: np.random.Generator, n: int, bright: float, faint: float,
                    slope: float) -> np.ndarray:
    """`n` magnitudes in [bright, faint] with dN/dm proportional to 10**(slope*m)."""
    lo, hi = 10 ** (slope * bright), 10 ** (slope * faint)
    return np.log10(lo + rng.random(n) * (hi - lo)) / slope


def _psf(r2: np.ndarray, fwhm: float, psf: str) -> np.ndarray:
    """Unnormalised PSF at squared radius `r2` (pixels^2) for `fwhm` pixels."""
    if psf == "moffat":
        alpha2 = (fwhm / (2 * math.sqrt(2 ** (1 / MOFFAT_BETA) - 1))) ** 2
        return (1 + r2 / alpha2) ** -MOFFAT_BETA
    if psf == "gaussian":
        return np.exp(-r2 / (2 * (fwhm / 2.3548) ** 2))
    raise ValueError(f"psf must be 'moffat' or 'gaussian', not {psf!r}")


def _psf_radius(peak: np.ndarray, floor: float, fwhm: float, psf: str) -> np.ndarray:
    """Radius (pixels) where a PSF of `peak` ADU falls to `floor` ADU."""
    ratio = np.maximum(peak / floor, 1.0)
    if psf == "moffat":
        alpha = fwhm / (2 * math.sqrt(2 ** (1 / MOFFAT_BETA) - 1))
        return alpha * np.sqrt(ratio ** (1 / MOFFAT_BETA) - 1)
    return fwhm / 2.3548 * np.sqrt(2 * np.log(ratio))


def _half_size(radius: np.ndarray) -> np.ndarray:
    """The smallest stamp half-width in `HALF_SIZES` covering `radius` pixels."""
    return HALF_SIZES[np.minimum(np.searchsorted(HALF_SIZES, np.ceil(radius)),
                                 len(HALF_SIZES) - 1)]


def _offsets(fx: np.ndarray, fy: np.ndarray, half: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel offsets (n, 2*half+1, 2*half+1) from sub-pixel centres `fx`, `fy`."""
    k = np.arange(-half, half + 1, dtype=np.float32)
    return (k[None, None, :] - fx[:, None, None].astype(np.float32),
            k[None, :, None] - fy[:, None, None].astype(np.float32))


def _stamps(src: dict[str, np.ndarray], sel: np.ndarray, fx: np.ndarray, fy: np.ndarray,
            half: int, fwhm: float, psf: str) -> np.ndarray:
    """Unnormalised stamps (n, 2*half+1, 2*half+1) of sources `sel` centred at
    sub-pixel offsets `fx`, `fy`: the PSF for stars; for galaxies, elliptical Sersic
    profiles sampled at pixel centres and convolved (FFT) with the PSF."""
    dx, dy = _offsets(fx, fy, half)
    if src["is_star"][sel[0]]:
        return _psf(dx * dx + dy * dy, fwhm, psf)
    pa = np.radians(src["pa"][sel]).astype(np.float32)[:, None, None]
    q = src["axis_ratio"][sel].astype(np.float32)[:, None, None]
    n = src["sersic_n"][sel].astype(np.float32)[:, None, None]
    re = src["r_eff_px"][sel].astype(np.float32)[:, None, None]
    u = dx * np.cos(pa) + dy * np.sin(pa)
    v = (dy * np.cos(pa) - dx * np.sin(pa)) / q
    bn = 2 * n - 1 / 3 + 0.009876 / n
    gal = np.exp(-bn * (np.sqrt(u * u + v * v) / re) ** (1 / n))
    gal /= gal.sum(axis=(1, 2), keepdims=True)
    k = np.arange(-half, half + 1, dtype=np.float32) ** 2
    kernel = _psf(k[:, None] + k[None, :], fwhm, psf)
    kernel = np.fft.ifftshift(kernel / kernel.sum())
    size = (2 * half + 1,) * 2
    out = np.fft.irfft2(np.fft.rfft2(gal) * np.fft.rfft2(kernel), s=size)
    return np.maximum(out, 0).astype(np.float32)


def add_sources(image: np.ndarray, src: dict[str, np.ndarray], idx: np.ndarray,
                 fwhm: float, psf: str) -> None:
    """Add sources `idx` of `src` (all stars or all galaxies) to `image` as stamps
    scaled to their flux; record each noiseless peak (ADU above sky) in src['peak']."""
    ny, nx = image.shape
    ix, iy = np.rint(src["x"]).astype(np.int64), np.rint(src["y"]).astype(np.int64)
    fx, fy = src["x"] - ix, src["y"] - iy
    for half in np.unique(src["half"][idx]):
        group = idx[src["half"][idx] == half]
        side = 2 * int(half) + 1
        for sel in np.array_split(group, -(-len(group) * side * side // STAMP_BUDGET)):
            cube = _stamps(src, sel, fx[sel], fy[sel], int(half), fwhm, psf)
            cube *= (src["flux"][sel] / cube.sum(axis=(1, 2))).astype(np.float32)[:, None, None]
            src["peak"][sel] = cube.max(axis=(1, 2))
            for stamp, x, y in zip(cube, ix[sel] - half, iy[sel] - half):
                xa, ya = max(x, 0), max(y, 0)
                xb, yb = min(x + side, nx), min(y + side, ny)
                if xa < xb and ya < yb:
                    image[ya:yb, xa:xb] += stamp[ya - y:yb - y, xa - x:xb - x]


def draw_sources(rng: np.random.Generator, n_stars: int, n_galaxies: int, nx: int,
                  ny: int, sky: float, sigma: float, fwhm: float, psf: str,
                  saturated_fraction: float) -> dict[str, np.ndarray]:
    """Positions (pixels), fluxes (ADU) and shapes of one CCD's sources, stars first.

    Fluxes run from `SNR_FLOOR` for a point source on sky noise `sigma` (ADU/pixel) up
    to a peak of 80 % of the headroom below SATURATE; a `saturated_fraction` of the
    stars is made 1.2 to 50 times brighter than saturation."""
    n = n_stars + n_galaxies
    headroom = SATURATE - sky
    if headroom <= 50 * sigma:
        raise ValueError(f"sky of {sky:.0f} ADU leaves no room below SATURATE; "
                         "shorten the exposure")
    r2 = np.add.outer(np.arange(-30.0, 31) ** 2, np.arange(-30.0, 31) ** 2)
    core = _psf(r2, fwhm, psf)
    peak_fraction = core.max() / core.sum()
    faint = SNR_FLOOR * sigma * math.sqrt(math.pi) * fwhm / 0.85
    m_faint, m_bright = -2.5 * math.log10(faint), -2.5 * math.log10(0.8 * headroom / peak_fraction)
    src = {"x": rng.uniform(0, nx - 1, n), "y": rng.uniform(0, ny - 1, n),
           "is_star": np.arange(n) < n_stars, "flux": np.empty(n),
           "peak": np.zeros(n, np.float32)}
    star_mag = _power_law_mags(rng, n_stars, m_bright, m_faint, 0.15)
    n_sat = int(round(saturated_fraction * n_stars))
    over = 10 ** rng.uniform(math.log10(1.2), math.log10(50.0), n_sat)
    star_mag[rng.permutation(n_stars)[:n_sat]] = -2.5 * np.log10(over * headroom / peak_fraction)
    m_gal = m_faint - 2.5 * math.log10(1.5)
    gal_mag = _power_law_mags(rng, n_galaxies, m_gal - 7.0, m_gal, 0.3)
    src["flux"] = 10 ** (-0.4 * np.concatenate([star_mag, gal_mag]))
    r_eff = 0.45 * 10 ** (-0.1 * (gal_mag - m_gal) + rng.normal(0, 0.15, n_galaxies))
    r_eff = np.clip(r_eff, 0.2, 4.0) / PIXEL_SCALE
    sersic = np.where(rng.random(n_galaxies) < 0.6, 1.0, rng.uniform(0.5, 2.5, n_galaxies))
    nan = np.full(n_stars, np.nan)
    src["r_eff_px"] = np.concatenate([nan, r_eff])
    src["sersic_n"] = np.concatenate([nan, sersic])
    src["axis_ratio"] = np.concatenate([nan, rng.uniform(0.3, 1.0, n_galaxies)])
    src["pa"] = np.concatenate([nan, rng.uniform(0, 180, n_galaxies)])
    star_half = _psf_radius(src["flux"][:n_stars] * peak_fraction, 0.05 * sigma, fwhm, psf)
    gal_half = (3 + sersic) * r_eff + 2 * fwhm
    src["half"] = _half_size(np.maximum(np.concatenate([star_half, gal_half]), 1.5 * fwhm))
    return src


def noisy(rng: np.random.Generator, model: np.ndarray) -> np.ndarray:
    """Poisson (in e-) plus read noise on a noiseless `model` (ADU), clipped at SATURATE.

    Exact Poisson draws where fewer than `POISSON_EXACT_BELOW` e- are expected, its
    Gaussian limit (mean = variance = expected e-) elsewhere: much faster on a sky of
    thousands of e-, and indistinguishable there."""
    normal = rng.standard_normal(model.shape, dtype=np.float32)
    data = model * np.float32(1 / GAIN)
    data += np.float32((READ_NOISE / GAIN) ** 2)
    np.sqrt(data, out=data)
    data *= normal
    data += model
    if model.min() * GAIN < POISSON_EXACT_BELOW:
        low = model * np.float32(GAIN) < POISSON_EXACT_BELOW
        electrons = model[low] * GAIN
        data[low] = (rng.poisson(electrons) + READ_NOISE * normal[low]) / GAIN
    return np.minimum(data, np.float32(SATURATE), out=data)
