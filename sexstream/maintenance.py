"""`sexstream compact`: merge the many small files streaming leaves, remove orphans.

Streaming commits one or a few small Parquet files per table and micro-batch; a night
of short batches leaves thousands. `compact` first commits the images rows a driver that
died between a batch's two commits left pending (`Sink.recover`), then rewrites the small
files into large ones (delta-rs optimize: a commit that removes the small files and adds
the merged ones, so readers never see a row twice), vacuums (files no longer in the
table, and orphans of batches that died before their commit, once older than the
retention), and removes the Delta log files older than the log retention (30 days by
default; the commits themselves never list the log). The daemon runs it on a schedule
(`maintenance.every`).

The retention protects parts that a running batch has written but not yet committed:
never set it below the longest batch you run (at least 1 hour is enforced).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

MIN_RETENTION_HOURS = 1.0


@dataclass
class CompactReport:
    table: str
    files_before: int
    files_after: int
    removed_by_vacuum: int

    def line(self) -> str:
        return (f"{self.table}: {self.files_before} -> {self.files_after} files, "
                f"{self.removed_by_vacuum} unreferenced files vacuumed")


def compact(sink: str, *, retention_hours: float = 168.0, target_size: int | None = None,
            dry_run: bool = False) -> list[CompactReport]:
    """Optimize (compact) and vacuum every table of `sink`; returns one report per table."""
    from sexstream.schema import TABLES
    from sexstream.sink import Sink
    from sexstream.tables import open_table, table_path

    if retention_hours < MIN_RETENTION_HOURS:
        raise ValueError(f"retention below {MIN_RETENTION_HOURS:g} h could delete the parts of a batch "
                         "in progress")
    if not dry_run:
        Sink(sink).recover()
    reports = []
    for name in TABLES:
        path = table_path(sink, name)
        table = open_table(path)
        if table is None:
            continue
        before = len(table.file_uris())
        if not dry_run:
            table.optimize.compact(target_size=target_size)
            table = open_table(path)
        removed = table.vacuum(retention_hours=int(retention_hours), dry_run=dry_run,
                               enforce_retention_duration=False, full=True)
        if not dry_run:
            table.cleanup_metadata()
        reports.append(CompactReport(name, before, len(table.file_uris()), len(removed)))
    return reports


def cmd_compact(args: argparse.Namespace) -> int:
    from sexstream.flags import settings_from_args

    settings = settings_from_args(args, sink=args.sink)
    for report in compact(settings.sink, retention_hours=args.retention_hours, dry_run=args.dry_run):
        print(report.line())
    return 0


def register(sub) -> None:
    p = sub.add_parser("compact", help="merge small files and vacuum orphans (delta-rs optimize)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sink")
    p.add_argument("--settings", metavar="TOML")
    p.add_argument("--retention-hours", type=float, default=168.0,
                   help="vacuum unreferenced files older than this (default 168 = 7 days; min 1)")
    p.add_argument("--dry-run", action="store_true", help="report what vacuum would remove; change nothing")
    p.set_defaults(func=cmd_compact)
