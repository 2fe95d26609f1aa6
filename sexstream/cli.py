"""The `sexstream` command: extract, params, run, replay, status, dashboard, plot, moc, ...

Spark-free subcommands live here; the Spark ones import `streaming` only when called.
"""
from __future__ import annotations

import argparse
import json
import sys

from sexstream import settings as settings_mod
from sexstream.settings import Settings, split_list


def add_selection_flags(p: argparse.ArgumentParser) -> None:
    """Flags shared by every command that runs SExtractor."""
    p.add_argument("--keys", help="SExtractor output parameters, comma-separated "
                   "(vectors with a size: FLUX_APER(3)); default from conf/sexstream.toml")
    p.add_argument("--fitskeys", help="FITS header keys copied on every row, comma-separated")
    p.add_argument("--config", metavar="FILE",
                   help="a settings file (*.toml) or a SExtractor config file (e.g. default.sex)")
    p.add_argument("--settings", metavar="TOML", help="a settings file (like conf/sexstream.toml)")
    p.add_argument("--sex-config", metavar="FILE", help="a SExtractor config file (default.sex)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                   help="override a SExtractor config parameter (repeatable): --set DETECT_THRESH=3")
    p.add_argument("--binary", help="SExtractor executable (default: source-extractor, sex or "
                   "sextractor on PATH)")
    p.add_argument("--timeout", type=float, help="seconds per image before SExtractor is killed")
    p.add_argument("--max-image-bytes", type=int, dest="max_image_bytes",
                   help="larger inputs (raw or decompressed) are recorded as failed, never extracted")


def settings_from_args(args: argparse.Namespace, **more) -> Settings:
    """The settings object from conf/sexstream.toml, a --settings/--config file and flags."""
    toml = getattr(args, "settings", None)
    sex_config = getattr(args, "sex_config", None)
    config = getattr(args, "config", None)
    if config:
        if config.endswith(".toml"):
            toml = toml or config
        else:
            sex_config = sex_config or config
    overrides = []
    for item in getattr(args, "overrides", []) or []:
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise ValueError(f"--set takes NAME=VALUE, got {item!r}")
        overrides.append((name.strip().upper(), value.strip()))
    keys = getattr(args, "keys", None)
    fitskeys = getattr(args, "fitskeys", None)
    return settings_mod.load(
        toml,
        keys=tuple(split_list(keys)) if keys else None,
        fitskeys=tuple(split_list(fitskeys)) if fitskeys is not None else None,
        config=sex_config,
        overrides=tuple(overrides) or None,
        binary=getattr(args, "binary", None),
        timeout=getattr(args, "timeout", None),
        max_image_bytes=getattr(args, "max_image_bytes", None),
        **more,
    )


def _flatten_for_csv(table):
    import pyarrow as pa

    cols = {}
    for name in table.column_names:
        col = table[name]
        if pa.types.is_list(col.type) or pa.types.is_struct(col.type):
            cols[name] = pa.array([None if v is None else json.dumps(v) for v in col.to_pylist()],
                                  pa.string())
        else:
            cols[name] = col
    return pa.table(cols)


def cmd_extract(args: argparse.Namespace) -> int:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from sexstream import extractor

    plan = extractor.prepare(settings_from_args(args))
    tables, failed = [], 0
    for image in args.images:
        result = extractor.extract(image, plan)
        if result.record["status"] != "ok":
            failed += 1
            print(f"sexstream: {image}: {result.record['status']}: {result.record['reason']}",
                  file=sys.stderr)
        elif result.sources is not None:
            tables.append(result.sources)
    if tables:
        table = pa.concat_tables(tables, promote_options="permissive")
    else:
        table = pa.table({k.name: pa.array([], pa.float64()) for k in plan.keys})
    out = args.output
    if out and out.endswith(".parquet"):
        pq.write_table(table, out)
    else:
        sink = out if out else sys.stdout.buffer
        pacsv.write_csv(_flatten_for_csv(table), sink)
    return 1 if failed else 0


def cmd_params(args: argparse.Namespace) -> int:
    from sexstream import binary as binary_mod
    from sexstream import params

    b = binary_mod.find_binary(args.binary or settings_mod.load().binary)
    found = params.search(binary_mod.parameters(b), args.pattern)
    if args.json:
        print(json.dumps([{"name": p.name, "description": p.description, "unit": p.unit,
                           "vector_axes": p.vector_axes} for p in found], indent=1))
        return 0
    for p in found:
        vec = {1: "(n)", 2: "(n,m)"}.get(p.vector_axes, "")
        unit = f" [{p.unit}]" if p.unit else ""
        print(f"{p.name + vec:<22} {p.description}{unit}")
    print(f"# {len(found)} of {len(binary_mod.parameters(b))} parameters "
          f"(SExtractor {b.version}, {b.path})", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sexstream",
        description="Live FITS images -> SExtractor catalogs in Delta Lake tables.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("extract", help="run SExtractor on images, print or write the catalog")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    add_selection_flags(p)
    p.add_argument("--output", "-o", metavar="OUT", help="OUT.parquet or OUT.csv (default: CSV on stdout)")
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("params", help="list SExtractor's output parameters (searchable)")
    p.add_argument("pattern", nargs="?", help="text or regex matched on names and descriptions")
    p.add_argument("--binary")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_params)

    for module in _command_modules():
        module.register(sub)
    return parser


def _command_modules():
    """Modules that add their own subcommands (`register(subparsers)`)."""
    import importlib

    mods = []
    for name in ("sexstream.maintenance", "streaming.commands", "sexstream.dashboard.commands",
                 "sexstream.query.commands"):
        try:
            mods.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name and not name.startswith(exc.name):
                raise
    return mods


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"sexstream {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
