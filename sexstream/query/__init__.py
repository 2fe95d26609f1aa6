"""Questions about the sky, answered from a sink's live tables: cone searches and light
curves (`Sky`, `cone`, `lightcurve`), positions as people type them (`parse_position`,
`parse_radius`, `QueryError`), and the files TOPCAT, Aladin and astropy open.

The names are imported when first used, so that `sexstream --help` stays quick.
"""
from __future__ import annotations

from typing import Any

__all__ = ["QueryError", "Sky", "cone", "lightcurve", "parse_position", "parse_radius"]


def __getattr__(name: str) -> Any:
    if name in ("Sky", "cone", "lightcurve"):
        from sexstream.query import sky

        return getattr(sky, name)
    if name in ("QueryError", "parse_position", "parse_radius"):
        from sexstream.query import position

        return getattr(position, name)
    raise AttributeError(f"module 'sexstream.query' has no attribute {name!r}")
