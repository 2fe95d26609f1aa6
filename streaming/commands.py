"""The Spark-side subcommands of `sexstream`: run, replay and jvm-archive. Registering
them imports nothing heavy; pyspark is imported when a command runs."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sexstream.flags import add_selection_flags, settings_from_args
from streaming import jvmarchive, replay

log = logging.getLogger("sexstream")

#: How many generated exposures seed an empty raw folder of the embedded default.
SEED_EXPOSURES = 3


def add_spark_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sink", help="folder of the Delta tables (sources, images)")
    p.add_argument("--master", help="Spark master: local[*] (default), spark://host:7077, yarn, k8s://...")
    p.add_argument("--max-files-per-trigger", type=int, dest="max_files_per_trigger",
                   help="at most this many images per micro-batch")
    p.add_argument("--files-per-task", type=int, dest="files_per_task",
                   help="images handed to one Spark task (default 0: auto, up to 2 tasks per core of about equal bytes)")
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
    from streaming.daemon import configure_logging, run_daemon

    settings = settings_from_args(
        args, raw=args.raw, sink=args.sink, checkpoint=args.checkpoint, trigger=args.trigger,
        master=args.master, max_files_per_trigger=args.max_files_per_trigger,
        files_per_task=args.files_per_task, dashboard_host=args.host, dashboard_port=args.port,
        metrics_host=args.metrics_host, metrics_port=args.metrics_port, log_format=args.log_format)
    configure_logging(args.verbose, settings.log_format)
    if not args.no_seed:
        _seed_if_empty(settings)
    # `hooks` is no flag: a program that drives the daemon (the chaos suite) sets it
    return run_daemon(settings, dashboard=args.dashboard, ui=args.ui, hooks=getattr(args, "hooks", ()))


def register(sub) -> None:
    p = sub.add_parser("run", help="the ingestion daemon: watch the raw folder, append catalogs",
                       description="Watch a raw-download folder and append every new FITS image's "
                       "catalog to the Delta tables <sink>/sources and <sink>/images, exactly once. "
                       "Defaults come from the packaged conf/sexstream.toml. SIGTERM/SIGINT finish "
                       "the batch in progress and stop (exit 0); a restart resumes where it stopped. "
                       "Exit 1 when the stream failed, 2 for a usage or configuration error.")
    p.add_argument("--raw", help="the raw-download folder to watch (never modified)")
    p.add_argument("--checkpoint", help="Spark's checkpoint folder for this query")
    p.add_argument("--trigger", type=float, help="seconds between polls of the raw folder")
    p.add_argument("--dashboard", action="store_true", help="also serve the live dashboard")
    p.add_argument("--host", help="dashboard address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="dashboard port (default 8765)")
    p.add_argument("--no-seed", action="store_true",
                   help="do not seed an empty default raw folder with generated exposures")
    p.add_argument("--metrics-port", type=int, metavar="N",
                   help="serve /metrics (Prometheus), /healthz and /readyz on this port (default 0: off)")
    p.add_argument("--metrics-host", metavar="ADDR", help="address of that server (default 127.0.0.1)")
    p.add_argument("--log-format", choices=("text", "json"),
                   help="text (default, stderr) or json: one JSON object per line on stdout")
    add_spark_flags(p)
    add_selection_flags(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("replay", help="a bounded run over backlog folders (resumable)",
                       description=replay.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", metavar="DIR", help="backlog folders (globs allowed)")
    p.add_argument("--max-files-per-batch", type=int, dest="max_files_per_batch",
                   help="at most this many images per committed batch")
    p.add_argument("--force", action="store_true",
                   help="measure images again even if the sink holds them with this config "
                   "(a fresh checkpoint: an interrupted --force run starts over)")
    p.add_argument("--checkpoint", help="override the derived checkpoint folder")
    p.add_argument("--progress-every", type=float, default=10.0,
                   help="seconds between progress lines when not on a terminal")
    add_spark_flags(p)
    add_selection_flags(p)
    p.set_defaults(func=replay.cmd_replay)

    jvmarchive.register(sub)
