"""The Spark-side subcommands of `sexstream`: run, status (and replay, compact, retry-failed
where their modules exist). Imports pyspark only when a command runs."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from sexstream.cli import add_selection_flags, settings_from_args
from sexstream.settings import DEFAULT_TOML

log = logging.getLogger("sexstream")

#: How many generated exposures seed an empty raw folder of the embedded default.
SEED_EXPOSURES = 3


def add_spark_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sink", help="folder of the Delta tables (sources, images)")
    p.add_argument("--master", help="Spark master: local[*] (default), spark://host:7077, yarn, k8s://...")
    p.add_argument("--max-files-per-trigger", type=int, dest="max_files_per_trigger",
                   help="at most this many images per micro-batch")
    p.add_argument("--files-per-task", type=int, dest="files_per_task",
                   help="images handed to one Spark task (default 0: auto, one each up to 3 tasks per core)")
    p.add_argument("--ui", action="store_true", help="enable Spark's web UI")
    p.add_argument("--verbose", "-v", action="store_true")


def _seed_if_empty(settings) -> None:
    """On a first start of the embedded default, give the newcomer something to see."""
    from sexstream import synthetic

    raw = Path(settings.raw)
    default_raw = (Path.cwd() / "var" / "raw").resolve()
    if raw.resolve() != default_raw or (raw.exists() and any(raw.iterdir())):
        return
    raw.mkdir(parents=True, exist_ok=True)
    paths = synthetic.make_night(raw, SEED_EXPOSURES, seed=2026, nx=1024, ny=2048)
    log.info("seeded the empty raw folder %s with %d generated exposures", raw, len(paths))


def cmd_run(args: argparse.Namespace) -> int:
    from streaming.job import configure_logging, run_daemon

    configure_logging(args.verbose)
    settings = settings_from_args(
        args, raw=args.raw, sink=args.sink, checkpoint=args.checkpoint, trigger=args.trigger,
        master=args.master, max_files_per_trigger=args.max_files_per_trigger,
        files_per_task=args.files_per_task, dashboard_host=args.host, dashboard_port=args.port)
    if not args.no_seed:
        _seed_if_empty(settings)
    return run_daemon(settings, dashboard=args.dashboard, ui=args.ui)


def cmd_status(args: argparse.Namespace) -> int:
    from sexstream import status

    settings = settings_from_args(args, sink=args.sink)
    report = status.report(settings.sink, recent=args.recent)
    if args.json:
        print(json.dumps(report, indent=1, default=str))
    else:
        print(status.render(report))
    return 0


def register(sub) -> None:
    p = sub.add_parser("run", help="the ingestion daemon: watch the raw folder, append catalogs",
                       description="Watch a raw-download folder and append every new FITS image's "
                       "catalog to the Delta tables <sink>/sources and <sink>/images, exactly once. "
                       f"Defaults come from {DEFAULT_TOML}. SIGTERM/SIGINT finish the batch in "
                       "progress and stop; a restart resumes where it stopped.")
    p.add_argument("--raw", help="the raw-download folder to watch (never modified)")
    p.add_argument("--checkpoint", help="Spark's checkpoint folder for this query")
    p.add_argument("--trigger", type=float, help="seconds between polls of the raw folder")
    p.add_argument("--dashboard", action="store_true", help="also serve the live dashboard")
    p.add_argument("--host", help="dashboard address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="dashboard port (default 8765)")
    p.add_argument("--no-seed", action="store_true",
                   help="do not seed an empty default raw folder with generated exposures")
    add_spark_flags(p)
    add_selection_flags(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="what the sink holds: images ok/failed, sources, last batch")
    p.add_argument("--sink")
    p.add_argument("--settings", metavar="TOML")
    p.add_argument("--json", action="store_true")
    p.add_argument("--recent", type=int, default=10, help="recent failures to list")
    p.set_defaults(func=cmd_status)

    for name in ("streaming.replay", "streaming.arrivals", "streaming.jvmarchive"):
        try:
            module = __import__(name, fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
