"""The fixed population of objects on the synthetic sky of `sexstream.survey`.

Objects live in nested HEALPix cells at OBJECT_ORDER; a cell's objects (how many, where
inside it, how bright, which colour, variable or not) are drawn from hashes of (seed,
cell, object), never from a shared random stream, so any exposure can draw the cells
it covers, in any order, and finds the same objects as every other exposure there.

Angles in degrees, magnitudes in the r band (other bands through the colour index),
periods in days.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy import units as u
from astropy_healpix import HEALPix

#: Order of the HEALPix cells that hold the population (~3.4' cells).
OBJECT_ORDER = 10
#: The brightest and faintest objects (r band).
BRIGHT, FAINT = 15.0, 25.0
#: dN/dm grows as 10**(COUNT_SLOPE * m).
COUNT_SLOPE = 0.3


def brighter_than(mag: float) -> float:
    """The fraction of the population brighter than `mag` (r band)."""
    lo, hi = 10 ** (COUNT_SLOPE * BRIGHT), 10 ** (COUNT_SLOPE * FAINT)
    return float(np.clip((10 ** (COUNT_SLOPE * mag) - lo) / (hi - lo), 0.0, 1.0))


_M1, _M2, _GOLD = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)


def hashed_uniform(keys: np.ndarray, stream: int) -> np.ndarray:
    """Uniform [0, 1) draws that depend only on (key, stream): splitmix64 of the key."""
    z = keys.astype(np.uint64) * _GOLD + np.uint64((stream * int(_M1)) & 0xFFFFFFFFFFFFFFFF)
    z ^= z >> np.uint64(30)
    z *= _M1
    z ^= z >> np.uint64(27)
    z *= _M2
    z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


@dataclass
class Objects:
    """The fixed population in some HEALPix cells: true positions and properties."""

    ra: np.ndarray
    dec: np.ndarray
    mag_r: np.ndarray
    colour: np.ndarray
    star: np.ndarray
    amplitude: np.ndarray
    period: np.ndarray
    phase: np.ndarray
    size: np.ndarray

    def take(self, mask: np.ndarray) -> "Objects":
        return Objects(**{k: v[mask] for k, v in vars(self).items()})


def objects_in(cells: np.ndarray, density: float, seed: int, variable_fraction: float) -> Objects:
    """The objects of nested HEALPix `cells` at OBJECT_ORDER: always the same for a seed.

    `density` is the mean number of objects per square degree; each cell holds between
    0.6 and 1.4 times its share."""
    hp = HEALPix(nside=1 << OBJECT_ORDER, order="nested")
    mean = density * hp.pixel_area.to_value(u.deg ** 2)
    cells = np.asarray(cells, np.int64)
    base = (np.int64(seed) << 40) | (cells << 12)
    counts = np.floor(mean * (0.6 + 0.8 * hashed_uniform(base, 99))).astype(np.int64)
    counts = np.minimum(counts, 4095)
    owner = np.repeat(np.arange(len(cells)), counts)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    keys = base[owner] + (np.arange(len(owner)) - starts)
    draw = lambda stream: hashed_uniform(keys, stream)  # noqa: E731
    lon, lat = hp.healpix_to_lonlat(cells[owner], dx=draw(1), dy=draw(2))
    lo, hi = 10 ** (COUNT_SLOPE * BRIGHT), 10 ** (COUNT_SLOPE * FAINT)
    mag = np.log10(lo + draw(3) * (hi - lo)) / COUNT_SLOPE
    variable = draw(5) < variable_fraction
    return Objects(
        ra=lon.to_value(u.deg), dec=lat.to_value(u.deg), mag_r=mag, colour=0.3 + 1.1 * draw(4),
        star=draw(9) < 0.25, amplitude=np.where(variable, 0.1 + 0.9 * draw(6), 0.0),
        period=10 ** (-0.7 + 2.7 * draw(7)), phase=draw(8), size=1.0 + 2.0 * draw(10))
