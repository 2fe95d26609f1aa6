"""The `dashboard`, `plot` and `moc` subcommands, for `sexstream.cli` to register.

    register(parser.add_subparsers())

Each sets `func`, which takes the parsed arguments and returns an exit code. `--sink`,
`--host` and `--port` default to the settings (`sexstream.settings.load()`, with the
`--settings` file when given).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def _settings(args: argparse.Namespace) -> Any:
    """The settings, from --settings (or a *.toml --config) over conf/sexstream.toml."""
    from sexstream.settings import load

    toml = getattr(args, "settings", None)
    config = getattr(args, "config", None)
    if not toml and config and str(config).endswith(".toml"):
        toml = config
    return load(toml)


def _sink(args: argparse.Namespace) -> str:
    return args.sink or _settings(args).sink


def _window(text: str) -> str:
    from sexstream.coverage import parse_window

    parse_window(text)  # argparse turns the ValueError into a usage error
    return text


def _add_sink(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sink", metavar="DIR", default=None,
                        help="folder holding the sources and images Delta tables "
                             "(default: the settings' paths.sink)")
    parser.add_argument("--settings", metavar="TOML", default=None,
                        help="a settings file (like conf/sexstream.toml)")


def _add_window(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--window", type=_window, default=default,
                        help=f"rolling window: 1h, 24h, 7d, night (last 16 h), all, or "
                             f"<N>[smhdw] (default: {default})")
    parser.add_argument("--axis", choices=("ingest", "obs"), default="ingest",
                        help="time the window applies to: ingest_time, or obs_mjd "
                             "(counted back from the latest observation)")


def register(subparsers: Any) -> None:
    """Add the `dashboard`, `plot` and `moc` subcommands to an argparse subparsers object."""
    p = subparsers.add_parser("dashboard", help="serve the live sky-coverage page",
                              description="Serve the live sky-coverage dashboard of the sink "
                                          "on a local web page, pushed at each commit.")
    _add_sink(p)
    p.add_argument("--host", default=None, help="address to bind (default: settings, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default: settings, 8765; 0: any)")
    p.set_defaults(func=run_dashboard)

    p = subparsers.add_parser("plot", help="draw the sky coverage as a static image",
                              description="Draw footprints and source density on an all-sky "
                                          "Mollweide map (RA increasing to the left).")
    _add_sink(p)
    _add_window(p, "24h")
    p.add_argument("--order", type=int, default=7,
                   help="HEALPix order of the density cells (default 7, ~27')")
    p.add_argument("--dpi", type=int, default=150, help="resolution of raster outputs")
    p.add_argument("-o", "--output", default="coverage.png",
                   help="image file; the format follows the suffix (default coverage.png)")
    p.set_defaults(func=run_plot)

    p = subparsers.add_parser("moc", help="write the coverage as an IVOA MOC",
                              description="Write the union of the image footprints as an IVOA "
                                          "MOC (FITS, loadable in Aladin; or JSON).")
    _add_sink(p)
    _add_window(p, "all")
    p.add_argument("--order", type=int, default=10,
                   help="MOC max order (default 10, ~3.4' cells)")
    p.add_argument("--json", action="store_true", help="write the JSON serialisation")
    p.add_argument("-o", "--output", default=None,
                   help="output file (default coverage.fits, or stdout with --json)")
    p.set_defaults(func=run_moc)


def run_dashboard(args: argparse.Namespace) -> int:
    """`sexstream dashboard`: serve until Ctrl-C."""
    from sexstream.dashboard.server import serve

    settings = _settings(args)
    sink = args.sink or settings.sink
    host = args.host or settings.dashboard_host
    port = settings.dashboard_port if args.port is None else args.port
    try:
        serve(sink, host, port, ready=lambda url: print(
            f"sexstream dashboard of {sink}: {url}  (Ctrl-C to stop)", flush=True))
    except OSError as exc:
        print(f"sexstream dashboard: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 2
    return 0


def run_plot(args: argparse.Namespace) -> int:
    """`sexstream plot`: write the static coverage map."""
    import matplotlib

    matplotlib.use("Agg")
    from sexstream.plot import coverage_figure

    figure = coverage_figure(_sink(args), window=args.window, axis=args.axis, order=args.order)
    figure.savefig(args.output, dpi=args.dpi, facecolor=figure.get_facecolor())
    print(f"wrote {args.output}")
    return 0


def run_moc(args: argparse.Namespace) -> int:
    """`sexstream moc`: write the footprints' MOC as FITS or JSON."""
    from sexstream.coverage import footprint_moc, read_images

    images = read_images(_sink(args), args.window, axis=args.axis)
    moc = footprint_moc(images, args.order)
    if args.json:
        text = moc.to_string(format="json")
        if args.output in (None, "-"):
            print(text)
        else:
            Path(args.output).write_text(text + "\n")
    else:
        output = args.output or "coverage.fits"
        moc.save(output, format="fits", overwrite=True)
    area = moc.sky_fraction * 41252.96
    if args.output not in (None, "-") or not args.json:
        print(f"wrote {args.output or 'coverage.fits'}: {images.num_rows} images, "
              f"{area:.3f} deg^2 ({moc.sky_fraction:.3e} of the sky) at order {args.order}")
    return 0
