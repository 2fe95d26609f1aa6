#!/usr/bin/env python3
"""Fault tolerance, proven: run a real `sexstream run` daemon under faults and audit the sink.

    scripts/chaos.py rounds [--seed N] [--rounds R] [--images N] [--cluster] [--root DIR]
    scripts/chaos.py burst  [--images 2000] [--size 64] [--max-files-per-trigger 250]
    scripts/chaos.py disk-full [--size-kib 384]

`rounds`: a writer drops generated images (and bad ones: text named .fits, truncated
FITS; and images the faulty SExtractor double segfaults on, exits 1 on, hangs on) while
the daemon is killed -9 at random moments, inside SExtractor and at the crash hooks
(after the parts, between the two commits, after the commits), stopped with SIGTERM,
loses Spark workers (--cluster: a 2-worker standalone cluster on 127.0.0.1) and loses
its checkpoint folder. Then it drains, and the sink is audited against the truth and
direct SExtractor runs. Prints a table; exit status 0 only when nothing was lost,
duplicated or wrong. A failing seed replays with the same --seed (same arrivals, same
faults in the same order). The long run of the README's reliability section:

    scripts/chaos.py rounds --seed 7 --rounds 60 --images 320 --cluster

`burst`: thousands of tiny images at once: bounded batches, the driver's RSS, the lag.
`disk-full`: the sink on a small tmpfs that fills up (root only), then grows.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the harness

from chaos.rounds import ChaosConfig, ChaosRun  # noqa: E402


def _root(args: argparse.Namespace, what: str) -> Path:
    return Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix=f"sexstream-{what}-"))


def cmd_rounds(args: argparse.Namespace) -> int:
    config = ChaosConfig(seed=args.seed, rounds=args.rounds, images=args.images,
                         cluster=args.cluster, nx=args.size, ny=args.size, timeout=args.timeout,
                         sigterm_share=args.sigterm_share,
                         max_files_per_trigger=args.max_files_per_trigger)
    root = _root(args, "chaos")
    print(f"chaos run in {root} (log: {root / 'daemon.log'})", flush=True)
    report = ChaosRun(config, root, say=lambda s: print(s, flush=True)).run()
    print(report.table())
    return 0 if report.ok else 1


def cmd_burst(args: argparse.Namespace) -> int:
    from chaos.overload import run_burst

    root = _root(args, "burst")
    print(f"burst in {root}", flush=True)
    report = run_burst(root, n=args.images, size=args.size, seed=args.seed,
                       max_files=args.max_files_per_trigger, files_per_task=args.files_per_task,
                       say=lambda s: print(s, flush=True))
    print(report.table())
    return 0 if report.ok else 1


def cmd_disk_full(args: argparse.Namespace) -> int:
    from chaos.diskfull import run_disk_full

    root = _root(args, "diskfull")
    print(f"disk-full run in {root}", flush=True)
    report = run_disk_full(root, size_kib=args.size_kib, seed=args.seed,
                           say=lambda s: print(s, flush=True))
    print(report.table())
    return 0 if report.ok else (77 if report.skipped else 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("rounds", help="seeded rounds of faults, then an audit")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--images", type=int, default=30)
    p.add_argument("--cluster", action="store_true", help="2-worker standalone cluster, worker losses")
    p.add_argument("--size", type=int, default=256, help="image side, pixels")
    p.add_argument("--timeout", type=float, default=4.0, help="SExtractor --timeout, seconds")
    p.add_argument("--sigterm-share", type=float, default=1 / 6)
    p.add_argument("--max-files-per-trigger", type=int, default=6)
    p.set_defaults(func=cmd_rounds)
    p = sub.add_parser("burst", help="thousands of tiny images at once")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--max-files-per-trigger", type=int, default=250)
    p.add_argument("--files-per-task", type=int, default=25)
    p.set_defaults(func=cmd_burst)
    p = sub.add_parser("disk-full", help="the sink on a small tmpfs (root only)")
    p.add_argument("--size-kib", type=int, default=384)
    p.set_defaults(func=cmd_disk_full)
    for p in sub.choices.values():
        p.add_argument("--seed", type=int, default=1)
        p.add_argument("--root", help="work folder (default: a new temp folder, kept)")
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
