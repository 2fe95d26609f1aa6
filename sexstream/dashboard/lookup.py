"""The dashboard's questions about the sky: a cone search where the user clicked, and the
light curve of a source they picked, as the compact JSON the page draws.

    GET /api/cone?ra=161.6&dec=2.23&radius=8.5arcsec[&limit=200]
    GET /api/lightcurve?ra=161.5993&dec=2.2351[&radius=1arcsec]

Answered by one `sexstream.query.Sky` kept for the server's life (file lists and
footers stay warm). A question that makes no sense is a 400 with `{"error": ...}`.
Angles in degrees, `sep` in arcsec, times as MJD.
"""
from __future__ import annotations

import json
import math
import threading
import time
from http import HTTPStatus
from pathlib import Path
from typing import Any

#: The largest cone the page may ask for (a click at the widest zoom), degrees.
MAX_RADIUS_DEG = 1.0
#: Rows listed at most (the nearest), whatever the cone holds.
MAX_ROWS = 500


def _number(value: float | None, digits: int) -> float | None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return round(float(value), digits)


class SkyLookup:
    """Cone searches and light curves over one sink, for the HTTP threads."""

    def __init__(self, sink: str | Path) -> None:
        self.sink = Path(sink)
        self._sky = None
        self._lock = threading.Lock()
        self._asking = threading.Lock()  # one question at a time: its read figures are its own

    def _get_sky(self):
        with self._lock:
            if self._sky is None:
                from sexstream.query.sky import Sky

                self._sky = Sky(self.sink)
            return self._sky

    def answer(self, route: str, query: dict[str, list[str]]) -> tuple[HTTPStatus, bytes]:
        """(status, JSON body) of `/api/cone` or `/api/lightcurve` with its query string."""
        from sexstream.query.position import QueryError, parse_radius

        t0 = time.perf_counter()
        try:
            one = lambda name, default=None: (query.get(name) or [default])[0]  # noqa: E731
            ra, dec = one("ra"), one("dec")
            if ra is None or dec is None:
                raise QueryError("ra and dec are required")
            radius = one("radius", "1arcsec")
            if parse_radius(radius) > MAX_RADIUS_DEG:
                raise QueryError(f"radius {radius} is larger than the page's {MAX_RADIUS_DEG:g} deg: "
                                 "use `sexstream cone` for wider cones")
            limit = min(int(one("limit", MAX_ROWS)), MAX_ROWS)
            with self._asking:
                body = (self.cone(ra, dec, radius, limit) if route == "/api/cone"
                        else self.lightcurve(ra, dec, radius))
        except (QueryError, ValueError) as exc:
            return HTTPStatus.BAD_REQUEST, json.dumps({"error": str(exc)}).encode()
        body["ms"] = round((time.perf_counter() - t0) * 1000, 1)
        return HTTPStatus.OK, json.dumps(body, separators=(",", ":"), allow_nan=False).encode()

    def _read(self) -> dict[str, Any]:
        stats = self._get_sky().last_stats
        return {"files": stats.files_opened, "of": stats.files, "bytes": stats.bytes_read,
                "fraction": round(stats.fraction_read, 6)}

    def cone(self, ra: str, dec: str, radius: str, limit: int) -> dict[str, Any]:
        """The nearest `limit` sources in the cone and how many it holds."""
        from sexstream.query import curve

        sky = self._get_sky()
        names = sky.columns()
        coordinates = sky.sources.coordinates()
        band = curve.filter_column(names)
        photometry = [c for c in curve.photometry_columns(names) if c.startswith("MAG")][:2]
        wanted = [*coordinates, *photometry, *(c for c in (band, "path", "image_id") if c)]
        rows = sky.cone(ra, dec, radius, columns=list(dict.fromkeys(wanted)), format="arrow")
        meta = {k.decode(): v.decode() for k, v in rows.schema.metadata.items()}
        shown = rows.slice(0, limit).to_pydict()
        get = lambda name: shown.get(name) or [None] * len(shown["path"])  # noqa: E731
        out = [[_number(s, 3), _number(a, 7), _number(d, 7), _number(m, 4), _number(e, 4), f,
                p.rsplit("/", 1)[-1], p, _number(t, 6), o, i]
               for s, a, d, m, e, f, p, t, o, i in zip(
                   get("separation_arcsec"), get(coordinates[0]), get(coordinates[1]),
                   get(photometry[0] if photometry else ""), get(photometry[1] if len(photometry) > 1 else ""),
                   get(band or ""), get("path"), get("obs_mjd"), get("obs_mjd_from"), get("image_id"))]
        return {"ra": float(meta["CONE_RA"]), "dec": float(meta["CONE_DEC"]),
                "radius_arcsec": float(meta["CONE_R"]), "total": rows.num_rows, "rows": out,
                "mag": photometry[0] if photometry else None, "read": self._read()}

    def lightcurve(self, ra: str, dec: str, radius: str) -> dict[str, Any]:
        """One point per image: [mjd, time source, filter, value, error, path]."""
        from sexstream.query import curve as lc

        sky = self._get_sky()
        points = sky.lightcurve(ra, dec, radius, format="arrow")
        meta = {k.decode(): v.decode() for k, v in points.schema.metadata.items()}
        try:
            value, error, is_mag = lc.plotted(points)
        except ValueError:
            value, error, is_mag = None, None, False
        band = lc.filter_column(points.column_names)
        data = points.to_pydict()
        n = points.num_rows
        col = lambda name: data[name] if name else [None] * n  # noqa: E731
        out = [[_number(t, 6), o, f, _number(v, 5), _number(e, 5), p]
               for t, o, f, v, e, p in zip(col("obs_mjd"), col("obs_mjd_from"), col(band),
                                           col(value), col(error), col("path"))]
        return {"ra": float(meta["CONE_RA"]), "dec": float(meta["CONE_DEC"]),
                "radius_arcsec": float(meta["CONE_R"]), "value": value, "error": error,
                "is_mag": is_mag, "points": out, "read": self._read()}
