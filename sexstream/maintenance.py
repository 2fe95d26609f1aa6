"""`sexstream compact`: merge the many small files streaming leaves, remove orphans.

Streaming commits one or a few small Parquet files per table and micro-batch; a night
of short batches leaves thousands. `compact` first commits the images rows a driver that
died between a batch's two commits left pending (`Sink.recover`), then rewrites the small
files into large ones (a commit that removes the small files and adds the merged ones, so
readers never see a row twice), vacuums (files no longer in the table, and orphans of
batches that died before their commit, once older than the retention), and removes the
Delta log files older than the log retention (30 days by default; the commits themselves
never list the log). The daemon runs it on a schedule (`maintenance.every`).

The sources table is not merely merged but clustered by its `healpix` column
(`cluster_sources`, see `sexstream.layout`), so that a cone search or a light curve
reads a small fraction of it; the images table is compacted by delta-rs optimize.

The retention protects parts that a running batch has written but not yet committed:
never set it below the longest batch you run (at least 1 hour is enforced).
"""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field

MIN_RETENTION_HOURS = 1.0
#: Clustering (see `cluster_sources`): rows per file and per row group of a sorted run,
#: rows sorted in memory at once, runs of about the same size merged together.
FILE_ROWS = 524_288
ROW_GROUP_ROWS = 16_384
SORT_ROWS = 2_000_000
FANOUT = 4


@dataclass
class CompactReport:
    table: str
    files_before: int
    files_after: int
    removed_by_vacuum: int
    detail: str | None = None

    def line(self) -> str:
        return (f"{self.table}: {self.files_before} -> {self.files_after} files, "
                f"{self.removed_by_vacuum} unreferenced files vacuumed"
                + (f"\n  {self.detail}" if self.detail else ""))


@dataclass
class ClusterReport:
    """What `cluster_sources` did: the tail it sorted, the runs it merged, the cost."""

    tail_files: int = 0
    tail_rows: int = 0
    runs_before: int = 0
    runs_after: int = 0
    rows_written: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    commits: int = 0
    seconds: float = 0.0
    skipped: str | None = None
    steps: list[str] = field(default_factory=list)

    def line(self) -> str:
        if self.skipped:
            return f"sources: not clustered ({self.skipped})"
        return (f"sources: clustered by healpix: {self.tail_files} tail files ({self.tail_rows} rows) "
                f"sorted, runs {self.runs_before} -> {self.runs_after}, {self.rows_written} rows "
                f"written ({self.bytes_written / 1e6:.1f} MB) in {self.commits} commits, "
                f"{self.seconds:.1f} s")


def run_level(rows: int, base_rows: int, fanout: int = FANOUT) -> int:
    """The tier of a sorted run of `rows` rows: 0 up to `base_rows`, then +1 per
    factor `fanout`."""
    return 0 if rows <= base_rows else int(math.log(rows / base_rows, fanout))


def cluster_sources(sink: str, *, file_rows: int = FILE_ROWS, row_group_rows: int = ROW_GROUP_ROWS,
                    sort_rows: int = SORT_ROWS, fanout: int = FANOUT, min_tail_rows: int = 0,
                    full: bool = False) -> "ClusterReport":
    """Cluster the sources table by `healpix` so that cone searches and light curves read
    a small fraction of it (a step the maintenance schedule and `compact` run).

    1. The tail (files appended since the last run, any order) is sorted into runs of
       at most about `sort_rows` rows, when it holds at least `min_tail_rows` rows.
    2. Runs are tiered by size (`run_level` with base `file_rows`): whenever `fanout`
       runs share a tier they are merged into one; with `full`, all runs are merged.

    Cost: each row is written once by step 1 and about once per tier it climbs,
    log_fanout(rows / file_rows) tiers (5 at 10^8 rows), reading what it writes;
    memory about `sort_rows` rows (step 1) or one row group per run plus one output
    file (step 2). A cone then meets at most (fanout - 1) runs per tier, and the tail
    files that statistics cannot rule out. A checkpoint is written after the
    rewrites: opening the table then reads the runs' few add actions, not the
    replaced tail's thousands (45 -> 5 ms at 10^7 rows). Removed files stay on disk,
    for time travel, until `vacuum` (the retention of `compact`). Measured figures:
    README, Performance.
    """
    import pyarrow as pa

    from sexstream import layout
    from sexstream.tables import open_table, sources_path

    t0 = time.perf_counter()
    report = ClusterReport()
    path = sources_path(sink)
    table = open_table(path)
    if table is None:
        report.skipped = "no table"
        return report
    if "healpix" not in pa.schema(table.schema().to_arrow()).names:
        report.skipped = "no healpix column: select sky coordinates among the keys"
        return report
    runs, tail = layout.runs_of(layout.data_files(table))
    report.runs_before = len(runs)
    report.tail_files, report.tail_rows = len(tail), sum(f.rows for f in tail)

    def record(step, what: str) -> bool:
        if step.committed:
            report.commits += 1
            report.rows_written += step.rows
            report.bytes_read += step.bytes_read
            report.bytes_written += step.bytes_written
            report.steps.append(f"{what}: {step.removed} -> {step.added} files, {step.rows} rows")
        return step.committed

    if tail and report.tail_rows >= max(min_tail_rows, 1):
        share = report.tail_rows / math.ceil(report.tail_rows / sort_rows)  # groups of equal size
        group: list = []
        for f in tail:
            group.append(f)
            if sum(g.rows for g in group) >= share or f is tail[-1]:
                record(layout.sort_tail(path, group, file_rows=file_rows,
                                        row_group_rows=row_group_rows), "sort tail")
                group = []
    else:
        report.tail_files = report.tail_rows = 0
    while True:
        runs, _ = layout.runs_of(layout.data_files(open_table(path)))
        tiers: dict[int, list[list]] = {}
        for files in runs.values():
            tiers.setdefault(run_level(sum(f.rows for f in files), file_rows, fanout), []).append(files)
        due = [level for level, group in sorted(tiers.items()) if len(group) >= fanout]
        if full and len(runs) > 1:
            merging = list(runs.values())
        elif due:
            merging = tiers[due[0]]
        else:
            break
        if not record(layout.merge_runs(path, merging, file_rows=file_rows,
                                        row_group_rows=row_group_rows), f"merge {len(merging)} runs"):
            break
        full = False
    report.runs_after = len(runs)
    if report.commits:
        open_table(path).create_checkpoint()  # readers then replay the runs, not the old tail
    report.seconds = time.perf_counter() - t0
    return report


def compact(sink: str, *, retention_hours: float = 168.0, target_size: int | None = None,
            dry_run: bool = False, cluster: bool = True, full: bool = False,
            log_retention_hours: float | None = None) -> list[CompactReport]:
    """Cluster (sources, see `cluster_sources`; `full` merges every run into one) or
    optimize (images), then vacuum every table of `sink` and remove its expired log
    entries (older than `log_retention_hours`, set as the table's history window, see
    `keep_log`; None: the table's own, Delta's defaults of 30 days of log and 7 days of
    tombstones); returns one report per table."""
    from sexstream.schema import SOURCES, TABLES
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
        clustered = None
        if not dry_run:
            if keep_log(table, log_retention_hours):  # first: the checkpoint below honours it
                table = open_table(path)
            clustered = cluster_sources(sink, full=full) if cluster and name == SOURCES else None
            if clustered is None or clustered.skipped:
                table.optimize.compact(target_size=target_size)
                open_table(path).create_checkpoint()
            table = open_table(path)
        removed = table.vacuum(retention_hours=int(retention_hours), dry_run=dry_run,
                               enforce_retention_duration=False, full=True)
        if not dry_run:
            table.cleanup_metadata()
        reports.append(CompactReport(name, before, len(table.file_uris()), len(removed),
                                     clustered.line() if clustered else None))
    return reports


#: The table properties that say how far back a table's history reaches: log entries
#: (time travel) and tombstones (the removed files a checkpoint still lists).
HISTORY_PROPERTIES = ("delta.logRetentionDuration", "delta.deletedFileRetentionDuration")


def keep_log(table, hours: float | None) -> bool:
    """Keep `hours` of the table's history: its delta.logRetentionDuration (log entries
    older are removed by the cleanup) and delta.deletedFileRetentionDuration (tombstones
    older are left out of the next checkpoints, so a table open reads the live files, not
    every file compacted away in the last 7 days); a commit of its own, only when they
    differ (True then). None leaves them. Removed files themselves stay on disk until
    the vacuum's own retention."""
    if hours is None:
        return False
    if hours <= 0:
        raise ValueError(f"the log retention must be positive, not {hours:g} h")
    wanted = f"interval {max(1, round(hours * 3600))} seconds"
    config = table.metadata().configuration
    if any(config.get(p) != wanted for p in HISTORY_PROPERTIES):
        table.alter.set_table_properties({p: wanted for p in HISTORY_PROPERTIES})
        return True
    return False


def cmd_compact(args: argparse.Namespace) -> int:
    from sexstream.flags import settings_from_args

    settings = settings_from_args(args, sink=args.sink)
    log_hours = settings.log_retention_hours if args.log_retention_hours is None else args.log_retention_hours
    for report in compact(settings.sink, retention_hours=args.retention_hours, dry_run=args.dry_run,
                          full=args.full, log_retention_hours=log_hours):
        print(report.line())
    return 0


def register(sub) -> None:
    p = sub.add_parser("compact", help="merge small files (sources: clustered by healpix) and vacuum orphans",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sink")
    p.add_argument("--settings", metavar="TOML")
    p.add_argument("--retention-hours", type=float, default=168.0,
                   help="vacuum unreferenced files older than this (default 168 = 7 days; min 1)")
    p.add_argument("--log-retention-hours", type=float, default=None,
                   help="remove Delta log entries older than this (time travel reaches this far; "
                        "default: maintenance.log_retention_hours, 24)")
    p.add_argument("--dry-run", action="store_true", help="report what vacuum would remove; change nothing")
    p.add_argument("--full", action="store_true",
                   help="merge every sorted run of the sources table into one (the best layout for "
                        "cone searches; rewrites the clustered part of the table)")
    p.set_defaults(func=cmd_compact)
