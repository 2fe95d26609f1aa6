"""`sexstream compact`: merge the many small files streaming leaves, remove orphans.

Streaming commits one or a few small Parquet files per table and micro-batch; a night
of 1 s batches leaves thousands. `compact` rewrites them into large files (delta-rs
optimize: a commit that removes the small files and adds the merged ones, so readers
never see a row twice) and then vacuums: files no longer in the table, and orphans of
batches that died before their commit, once older than the retention.

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
    from sexstream.tables import open_table

    if retention_hours < MIN_RETENTION_HOURS:
        raise ValueError(f"retention below {MIN_RETENTION_HOURS:g} h could delete the parts of a batch "
                         "in progress")
    reports = []
    for name in TABLES:
        path = f"{sink}/{name}"
        table = open_table(path)
        if table is None:
            continue
        before = len(table.file_uris())
        if not dry_run:
            table.optimize.compact(target_size=target_size)
            table = open_table(path)
        removed = table.vacuum(retention_hours=int(retention_hours), dry_run=dry_run,
                               enforce_retention_duration=False, full=True)
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
