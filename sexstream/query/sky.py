"""`Sky`: cone searches and light curves over a sink, answered from the live tables.

    >>> from sexstream.query import Sky
    >>> sky = Sky("var/sink")
    >>> here = sky.cone("10:45:03.6", "+05:31:12", "5arcsec")      # astropy Table
    >>> curve = sky.lightcurve(161.265, 5.52, radius="1arcsec")

A `Sky` keeps the tables' file lists and the files' footers between questions and
follows new commits at each question, so the second question is cheaper than the
first and the newest rows are always there. Positions: see `sexstream.query.position`.
"""
from __future__ import annotations

import difflib
import os
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa

from sexstream.coverage import parse_window
from sexstream.query import curve as lc
from sexstream.query import export
from sexstream.query.conesearch import SEPARATION, search
from sexstream.query.obstimes import ObsTimes, observation_times
from sexstream.query.position import QueryError, parse_position, parse_radius
from sexstream.query.skyindex import ScanStats, SkyIndex
from sexstream.tables import images_path, sources_path

#: What `format=` can ask for.
RESULT_FORMATS = ("astropy", "pandas", "arrow")


class Sky:
    """The sources of one sink, asked by position."""

    def __init__(self, sink: str | os.PathLike[str]) -> None:
        self.sink = os.path.abspath(str(sink))
        self.sources = SkyIndex(sources_path(sink))
        self.times = ObsTimes(images_path(sink))
        #: What the last question read (files, row groups, bytes).
        self.last_stats: ScanStats | None = None

    def refresh(self) -> None:
        """Follow both tables to their latest commit (each question does it first)."""
        if self.sources.refresh() < 0:
            raise QueryError(f"no sources table in {self.sink} (is it a sink? has anything "
                             "been committed to it yet?)")
        self.times.refresh()

    def columns(self) -> list[str]:
        """The sources table's columns."""
        self.refresh()
        return self.sources.schema.names

    def _check(self, wanted: list[str]) -> None:
        names = self.sources.schema.names
        for name in wanted:
            if name not in names:
                near = difflib.get_close_matches(name, names, n=1)
                hint = f"; did you mean {near[0]}?" if near else ""
                raise QueryError(f"no column {name!r} in the sources table{hint} (columns: "
                                 + ", ".join(names) + ")")

    def _rows(self, ra_deg: float, dec_deg: float, radius_deg: float, columns: list[str],
              config_hash: str | None, window: str | None, now: datetime | None,
              ) -> tuple[pa.Table, dict]:
        """The rows of `columns` in the cone, with obs_mjd; the tables are refreshed."""
        coordinates = self.sources.coordinates()
        self._check(columns)
        seconds = parse_window(window)
        since = None if seconds is None else (now or datetime.now(timezone.utc)) - timedelta(seconds=seconds)
        needed = list(dict.fromkeys([*columns, *coordinates, *(c for c in (
            "image_id", "ingest_time", "MJD-OBS") if c in self.sources.schema.names)]))
        rows, self.last_stats = search(self.sources, ra_deg, dec_deg, radius_deg, needed,
                                       since=since, config_hash=config_hash)
        mjd, origin = observation_times(rows, self.times)
        rows = rows.append_column("obs_mjd", mjd).append_column("obs_mjd_from", origin)
        meta = {"CONE_RA": ra_deg, "CONE_DEC": dec_deg, "CONE_R": radius_deg * 3600.0,
                "SINK": self.sink, "VERSION": self.sources.version}
        return rows, meta

    def cone(self, ra: Any, dec: Any = None, radius: Any = None, *,
             columns: list[str] | str | None = None, config_hash: str | None = None,
             window: str | None = None, now: datetime | None = None, format: str = "astropy"):
        """Every source within `radius` of (`ra`, `dec`), nearest first.

        Parameters
        ----------
        ra, dec : float (degrees), str (sexagesimal or with a unit) or astropy Angle;
            or `ra` a SkyCoord and `dec` None.
        radius : str or Quantity with an angular unit: '5arcsec', '2arcmin', '0.1deg'.
        columns : the sources columns to return (list or 'A,B'); default all of them.
        config_hash : keep rows whose config_hash starts with this.
        window : keep rows ingested in the last '1h', '24h', '7d', ... (default all).
        format : 'astropy' (Table with units), 'pandas' or 'arrow'.

        Returns
        -------
        `separation_arcsec` (arcsec), the columns, `obs_mjd` (days) and `obs_mjd_from`
        ('header': MJD-OBS/DATE-OBS of the image; 'ingest_time': the image had none).
        The table's meta: CONE_RA, CONE_DEC (degrees), CONE_R (arcsec), SINK and the
        sources table's VERSION that answered.
        """
        if radius is None:
            raise QueryError("a cone needs a radius: 5arcsec, 2arcmin or 0.1deg")
        if isinstance(columns, str):
            columns = [c.strip() for c in columns.split(",") if c.strip()]
        ra_deg, dec_deg = parse_position(ra, dec)
        radius_deg = parse_radius(radius)
        self.refresh()
        wanted = list(columns) if columns else self.sources.schema.names
        rows, meta = self._rows(ra_deg, dec_deg, radius_deg, wanted, config_hash, window, now)
        rows = rows.select([SEPARATION, *wanted, "obs_mjd", "obs_mjd_from"])
        return _result(rows, meta, format)

    def lightcurve(self, ra: Any, dec: Any = None, radius: Any = "1arcsec", *,
                   config_hash: str | None = None, window: str | None = None,
                   now: datetime | None = None, format: str = "astropy"):
        """One point per image that saw a source within `radius` of (`ra`, `dec`): the
        nearest one, in time order.

        Columns: `obs_mjd` (days) and `obs_mjd_from` ('header' or 'ingest_time'), the
        filter, the MAG_*/FLUX_* columns with their errors, the coordinates, FLAGS,
        `separation_arcsec`, `path` and `image_id` (those the table has). Arguments as
        for `cone`.
        """
        ra_deg, dec_deg = parse_position(ra, dec)
        radius_deg = parse_radius(radius)
        self.refresh()
        wanted = lc.columns_for(self.sources.schema.names, self.sources.coordinates())
        rows, meta = self._rows(ra_deg, dec_deg, radius_deg, wanted, config_hash, window, now)
        curve = lc.arrange(lc.nearest_per_image(rows), self.sources.coordinates())
        return _result(curve, meta, format)


def _result(rows: pa.Table, meta: dict, format: str):
    if format == "arrow":
        return rows.replace_schema_metadata({k: str(v) for k, v in meta.items()})
    if format == "pandas":
        frame = export.to_pandas(rows)
        frame.attrs.update(meta)
        return frame
    if format == "astropy":
        return export.to_astropy(rows, meta)
    raise ValueError(f"format must be one of {RESULT_FORMATS}, not {format!r}")


def cone(sink: str | os.PathLike[str], ra: Any, dec: Any = None, radius: Any = None, **options):
    """`Sky(sink).cone(...)`: one cone search (see `Sky.cone`)."""
    return Sky(sink).cone(ra, dec, radius, **options)


def lightcurve(sink: str | os.PathLike[str], ra: Any, dec: Any = None, radius: Any = "1arcsec",
               **options):
    """`Sky(sink).lightcurve(...)`: one light curve (see `Sky.lightcurve`)."""
    return Sky(sink).lightcurve(ra, dec, radius, **options)
