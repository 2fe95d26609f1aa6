"""`sexstream retry-failed`: after a cause was fixed (permissions, a timeout), measure the
recorded failures again.

The failures are the paths whose verdict in the sink is "failed" (or "incomplete" with
`--incomplete`), whose reason matches `--reason`, still present on disk. They are
journaled into the daemon's checkpoint flagged `force` (measured even though their bytes
were measured before): a running daemon picks them up within a trigger, a stopped one
when it starts.
"""
from __future__ import annotations

import argparse
import os
import re

from sexstream.journal import Entry, Journal, journal_folder
from sexstream.sink import Sink


def select_failures(sink: str, *, reason: str | None = None, statuses=("failed",),
                    paths: list[str] | None = None) -> list[tuple[str, str, str]]:
    """(path, status, reason) of every path whose verdict (under any config) has one of
    `statuses` and a reason matching the regex `reason` (case-insensitive), still present
    on disk; once per path."""
    s = Sink(sink)
    s.sync()
    pattern = re.compile(reason, re.IGNORECASE) if reason else None
    wanted = {os.path.abspath(p) for p in paths} if paths else None
    out: dict[str, tuple[str, str, str]] = {}
    for v in s.index.with_status(statuses):
        if wanted is not None and v.path not in wanted:
            continue
        if pattern is not None and not pattern.search(v.reason or ""):
            continue
        if v.path not in out and os.path.lexists(v.path):
            out[v.path] = (v.path, v.status, v.reason or "")
    return list(out.values())


def cmd_retry_failed(args: argparse.Namespace) -> int:
    from sexstream.flags import settings_from_args

    settings = settings_from_args(args, sink=args.sink, checkpoint=args.checkpoint)
    statuses = ("failed", "incomplete") if args.incomplete else ("failed",)
    found = select_failures(settings.sink, reason=args.reason, statuses=statuses, paths=args.paths)
    for path, status, why in found:
        print(f"{'would requeue' if args.dry_run else 'requeue'} [{status}] {path}: {why}")
    if found and not args.dry_run:
        folder = journal_folder(settings.checkpoint)
        Journal(folder).append([Entry.of(p, force=True, why="retry-failed") for p, _, _ in found])
        print(f"{len(found)} image(s) requeued into {folder}; the daemon of that checkpoint "
              "measures them again (now, or when it next starts)")
    elif not found:
        print("no recorded failure matches")
    return 0


def register(sub) -> None:
    p = sub.add_parser("retry-failed", help="requeue recorded failures after you fixed the cause",
                       description="Requeue every image whose verdict is 'failed' (and matches "
                       "--reason) into the daemon's checkpoint, flagged to be measured again even "
                       "though its bytes were already measured. The running daemon picks them up "
                       "within a trigger; a stopped one when it starts.")
    p.add_argument("paths", nargs="*", metavar="PATH", help="only these raw files")
    p.add_argument("--sink", help="folder of the Delta tables")
    p.add_argument("--checkpoint", help="the daemon's checkpoint folder (its arrivals journal gets the list)")
    p.add_argument("--reason", metavar="PATTERN", help="regex matched on the recorded reason")
    p.add_argument("--incomplete", action="store_true", help="also requeue images recorded incomplete")
    p.add_argument("--dry-run", action="store_true", help="list what would be requeued")
    p.add_argument("--settings", metavar="TOML")
    p.set_defaults(func=cmd_retry_failed)
