"""Positions and radii as people type them: degrees, sexagesimal, angles with units.

    >>> parse_position("10:45:03.6", "+05:31:12")
    (161.265, 5.52)
    >>> parse_radius("5arcsec")          # degrees
    0.001388888888888889

RA given as a bare number is in degrees; sexagesimal RA (`10:45:03.6`, `10 45 03.6`,
`10h45m03.6s`) is in hours, as catalogs write it. Dec is in degrees either way
(`-5.52`, `-05:31:12`, `-5d31m12s`). A radius needs a unit (`5arcsec`, `2arcmin`,
`0.1deg`, `1e-3 rad`, or an astropy Quantity). Anything that is not a position on the
sky raises `QueryError` (a ValueError) saying what was expected.
"""
from __future__ import annotations

import math
import re
from typing import Any

from astropy import units as u
from astropy.coordinates import Angle

#: Largest radius a cone may have: the whole sky, degrees.
MAX_RADIUS_DEG = 180.0
_SEXAGESIMAL_HOURS = re.compile(r"[:\shms]")
_DEGREE_MARK = re.compile(r"d|deg|°")
_SYMBOLS = {"″": "arcsec", '"': "arcsec", "′": "arcmin", "'": "arcmin", "°": "deg"}


class QueryError(ValueError):
    """A question about the sky that has no answer as asked (bad position, radius,
    column, or a sink that cannot answer it). The message says what to give instead."""


def _number(value: Any) -> float | None:
    """`value` as a float when it is a plain number (or a numeric string), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def parse_ra(value: Any) -> float:
    """Right ascension in degrees, in [0, 360).

    A number (or numeric string) is degrees; a sexagesimal string is hours; strings
    with a degree mark (`150d15m`, `150.25deg`) or an astropy Angle/Quantity keep their
    unit. Raises QueryError outside 0-360 degrees (0h-24h)."""
    number = _number(value)
    if number is None:
        number = _angle(value, "RA", hours=True)
    if not math.isfinite(number) or not 0.0 <= number <= 360.0:
        raise QueryError(f"RA {value!r} is out of range: RA must lie within 0-360 degrees "
                         "(0h-24h)")
    return number % 360.0


def parse_dec(value: Any) -> float:
    """Declination in degrees, in [-90, 90]; a number, a sexagesimal string in degrees,
    or an astropy Angle/Quantity. Raises QueryError outside -90..+90."""
    number = _number(value)
    if number is None:
        number = _angle(value, "Dec", hours=False)
    if not math.isfinite(number) or abs(number) > 90.0:
        raise QueryError(f"Dec {value!r} is out of range: Dec must lie within -90..+90 degrees")
    return number


def _angle(value: Any, what: str, hours: bool) -> float:
    """Degrees of a sexagesimal string or an astropy angle; QueryError if it is neither."""
    if isinstance(value, u.Quantity):
        if not value.unit.is_equivalent(u.deg) or not value.isscalar:
            raise QueryError(f"{what} {value!r} is not an angle")
        return float(value.to_value(u.deg))
    if not isinstance(value, str) or not value.strip():
        raise QueryError(f"{what} {value!r} is not an angle")
    text = value.strip()
    unit = u.hourangle if hours and _SEXAGESIMAL_HOURS.search(text) and not _DEGREE_MARK.search(text) \
        else u.deg
    try:
        return float(Angle(text, unit=unit).deg)
    except (ValueError, TypeError, u.UnitsError) as exc:
        example = ("degrees (161.265) or sexagesimal hours (10:45:03.6, 10h45m03.6s)" if hours
                   else "degrees (-5.52) or sexagesimal degrees (-05:31:12, -5d31m12s)")
        raise QueryError(f"{what} {value!r} is not an angle ({exc}); give {example}") from None


def parse_position(ra: Any, dec: Any = None) -> tuple[float, float]:
    """(RA, Dec) in degrees of a position: two values, or one astropy SkyCoord (`dec`
    None), or one string holding both ("10:45:03.6 +05:31:12")."""
    if dec is None:
        if hasattr(ra, "icrs"):
            icrs = ra.icrs
            return parse_ra(float(icrs.ra.deg)), parse_dec(float(icrs.dec.deg))
        parts = str(ra).split()
        if len(parts) == 2:
            return parse_ra(parts[0]), parse_dec(parts[1])
        if len(parts) == 6:
            return parse_ra(" ".join(parts[:3])), parse_dec(" ".join(parts[3:]))
        raise QueryError(f"position {ra!r} needs an RA and a Dec")
    return parse_ra(ra), parse_dec(dec)


def parse_radius(value: Any) -> float:
    """A cone's radius in degrees, from a string with a unit (`5arcsec`, `2 arcmin`,
    `0.1deg`, `3"`) or an astropy Quantity. Must be > 0 and <= 180 degrees; a bare
    number is refused (which unit would it be?)."""
    if _number(value) is not None:
        raise QueryError(f"radius {value!r} has no unit: write it as 5arcsec, 2arcmin or 0.1deg")
    if isinstance(value, str):
        text = value.strip()
        for symbol, name in _SYMBOLS.items():
            text = text.replace(symbol, name)
        try:
            value = u.Quantity(text)
        except (ValueError, TypeError) as exc:
            raise QueryError(f"radius {value!r} is not an angle ({exc}); write it as 5arcsec, "
                             "2arcmin or 0.1deg") from None
    if not isinstance(value, u.Quantity) or not value.isscalar or not value.unit.is_equivalent(u.deg):
        raise QueryError(f"radius {value!r} is not an angle: write it as 5arcsec, 2arcmin or 0.1deg")
    degrees = float(value.to_value(u.deg))
    if not math.isfinite(degrees) or degrees <= 0.0:
        raise QueryError(f"radius {value!r} must be a positive angle")
    if degrees > MAX_RADIUS_DEG:
        raise QueryError(f"radius {value!r} is more than the whole sky (180 deg)")
    return degrees
