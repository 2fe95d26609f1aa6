"""The `cone` and `lightcurve` subcommands, for `sexstream.cli` to register.

    sexstream cone 10:45:03.6 +05:31:12 5arcsec --sink var/sink -o here.fits
    sexstream lightcurve 161.265 5.52 --radius 1arcsec -o curve.png

CSV goes to stdout unless `-o` names a file (.csv, .parquet, .fits, .vot; .png for a
light curve); a one-line summary goes to stderr. A negative sexagesimal Dec works as
it is (`-05:31:12`), without `--`.
"""
from __future__ import annotations

import argparse
import re
import sys
from typing import Any

#: Arguments that argparse must take as values, not options: negative numbers and
#: negative sexagesimal or unit-suffixed angles (-05:31:12, -5d31m12s, -5.5deg).
_NEGATIVE_ANGLE = re.compile(r"^-\d[\d.:hdms°'\" ]*(deg|arcmin|arcsec)?$|^-\.\d+$")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("ra", metavar="RA", help="degrees (161.265) or sexagesimal hours (10:45:03.6)")
    p.add_argument("dec", metavar="DEC", help="degrees (5.52) or sexagesimal degrees (+05:31:12)")
    p.add_argument("--sink", metavar="DIR", help="the sink folder (default: the settings' paths.sink)")
    p.add_argument("--settings", metavar="TOML", help="a settings file (like conf/sexstream.toml)")
    p.add_argument("--config-hash", metavar="H", help="only rows measured with this config "
                   "(its hash, or the start of it; `sexstream status` shows them)")
    p.add_argument("--window", metavar="W", help="only rows ingested in the last 1h, 24h, 7d, "
                   "night, ... (default: all)")
    p.add_argument("-o", "--output", metavar="OUT", help="OUT.csv, OUT.parquet, OUT.fits or OUT.vot "
                   "(VOTable); default: CSV on stdout")
    p._negative_number_matcher = _NEGATIVE_ANGLE  # argparse's own hook for "-5"-like values


def register(subparsers: Any) -> None:
    """Add the `cone` and `lightcurve` subcommands to an argparse subparsers object."""
    p = subparsers.add_parser(
        "cone", help="every source within a radius of a position (CSV, Parquet, FITS, VOTable)",
        description="Every source of the sink within RADIUS of (RA, DEC), nearest first, with "
                    "its separation (separation_arcsec), its image's path, observation time "
                    "(obs_mjd, obs_mjd_from) and header keys.")
    _add_common(p)
    p.add_argument("radius", metavar="RADIUS", help="with a unit: 5arcsec, 2arcmin, 0.1deg")
    p.add_argument("--columns", metavar="K,..", help="sources columns to keep (default: all)")
    p.set_defaults(func=run_cone)

    p = subparsers.add_parser(
        "lightcurve", help="one point per image that saw a source at a position",
        description="The light curve at (RA, DEC): for each image with a source within the "
                    "radius, the nearest one, with its time (MJD from the header, else the "
                    "ingest time: obs_mjd_from says which), filter and photometry. -o *.png "
                    "draws it (one colour per filter, magnitudes upwards).")
    _add_common(p)
    p.add_argument("--radius", default="1arcsec", help="match radius with a unit (default 1arcsec)")
    p.set_defaults(func=run_lightcurve)


def _sink(args: argparse.Namespace) -> str:
    if args.sink:
        return args.sink
    from sexstream.settings import load

    return load(args.settings).sink


def _say(text: str) -> None:
    print(text, file=sys.stderr)


def _read_note(sky: Any) -> str:
    s = sky.last_stats
    return (f"read {s.files_opened} of {s.files} files, {s.bytes_read / 1e6:.2f} MB "
            f"= {100 * s.fraction_read:.2f} % of the table")


def run_cone(args: argparse.Namespace) -> int:
    """`sexstream cone`."""
    from sexstream.query import export
    from sexstream.query.sky import Sky

    export.format_of(args.output)  # an unknown suffix fails before the search
    sky = Sky(_sink(args))
    rows = sky.cone(args.ra, args.dec, args.radius, columns=args.columns,
                    config_hash=args.config_hash, window=args.window, format="arrow")
    meta = {k.decode(): v.decode() for k, v in (rows.schema.metadata or {}).items()}
    fmt = export.write(rows.replace_schema_metadata(None), args.output, meta=meta)
    where = "" if args.output in (None, "-") else f" -> {args.output} ({fmt})"
    _say(f"# {rows.num_rows} sources within {float(meta['CONE_R']):g} arcsec of "
         f"({float(meta['CONE_RA']):.6f}, {float(meta['CONE_DEC']):+.6f}){where}; {_read_note(sky)}")
    return 0


def run_lightcurve(args: argparse.Namespace) -> int:
    """`sexstream lightcurve`."""
    from sexstream.query import export
    from sexstream.query import curve as lc
    from sexstream.query.sky import Sky

    fmt = export.format_of(args.output)
    sky = Sky(_sink(args))
    curve = sky.lightcurve(args.ra, args.dec, args.radius, config_hash=args.config_hash,
                           window=args.window, format="arrow")
    meta = {k.decode(): v.decode() for k, v in (curve.schema.metadata or {}).items()}
    curve = curve.replace_schema_metadata(None)
    if fmt == "png":
        import matplotlib

        matplotlib.use("Agg")
        title = (f"({float(meta['CONE_RA']):.5f}, {float(meta['CONE_DEC']):+.5f}), "
                 f"{curve.num_rows} images within {float(meta['CONE_R']):g}\"")
        lc.figure(curve, title).savefig(args.output, dpi=120)
    else:
        export.write(curve, args.output, meta=meta)
    origins = curve["obs_mjd_from"].to_pylist()
    where = "" if args.output in (None, "-") else f" -> {args.output} ({fmt})"
    _say(f"# {curve.num_rows} points at ({float(meta['CONE_RA']):.6f}, {float(meta['CONE_DEC']):+.6f}) within "
         f"{float(meta['CONE_R']):g} arcsec{where}; time from the header for "
         f"{origins.count('header')}, from the ingest time for {origins.count('ingest_time')}; "
         f"{_read_note(sky)}")
    return 0
