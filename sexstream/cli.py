"""The `sexstream` command's parser and its Spark-free subcommands.

`build_parser(registrars)` makes the parser: extract and params here, then every
module's `register(subparsers)` -- the core's (compact, status, retry-failed, dashboard,
plot, moc, cone, lightcurve) and those the caller adds. The program itself is `streaming.cli:main`, which
adds the Spark commands (run, replay, jvm-archive): the core never imports the shell.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Iterable

from sexstream import settings as settings_mod
from sexstream.flags import add_selection_flags, settings_from_args


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

    from sexstream import requirements

    b = binary_mod.find_binary(args.binary or settings_mod.load().binary)
    found = params.search(binary_mod.parameters(b), args.pattern)
    if args.needs:
        found = [p for p in found if (n := requirements.need_of(p.name)) and n.name == args.needs]
    if args.json:
        print(json.dumps([{"name": p.name, "description": p.description, "unit": p.unit,
                           "vector_axes": p.vector_axes, "needs": _need_name(p.name),
                           "needs_text": requirements.describe(p.name)} for p in found], indent=1))
        return 0
    for p in found:
        vec = {1: "(n)", 2: "(n,m)"}.get(p.vector_axes, "")
        unit = f" [{p.unit}]" if p.unit else ""
        need = requirements.need_of(p.name)
        print(f"{p.name + vec:<22} {p.description}{unit}" + (f" -- {need.short()}" if need else ""))
    print(f"# {len(found)} of {len(binary_mod.parameters(b))} parameters "
          f"(SExtractor {b.version}, {b.path})", file=sys.stderr)
    return 0


def _need_name(name: str) -> str | None:
    from sexstream import requirements

    need = requirements.need_of(name)
    return need.name if need else None


def build_parser(registrars: Iterable[Callable] = ()) -> argparse.ArgumentParser:
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
    p.add_argument("--needs", choices=("psf", "flag", "assoc", "som"),
                   help="only the parameters that need this input (a PSF model, a flag map, an "
                   "ASSOC list, a SOM file); each line says what a parameter needs")
    p.add_argument("--binary")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_params)

    for register in (*_core_registrars(), *registrars):
        register(sub)
    return parser


def _core_registrars() -> list[Callable]:
    from sexstream import maintenance, retry, status
    from sexstream.dashboard import commands as dashboard_commands
    from sexstream.query import commands as query_commands

    return [maintenance.register, status.register, retry.register, dashboard_commands.register,
            query_commands.register]


def run(argv: list[str] | None = None, registrars: Iterable[Callable] = ()) -> int:
    """Parse `argv` and run the command; its exit status (2 for a usage error)."""
    parser = build_parser(registrars)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"sexstream {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # the Spark-free commands alone: python -m sexstream.cli cone ...
    sys.exit(run())
