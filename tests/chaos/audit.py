"""The sink against the ground truth: what a chaos run must leave behind.

For every dropped file (`feed.Arrival`), the images table must hold exactly one current
row (not `current = false`), with the expected verdict (`feed.EXPECTED`), about the file's
final bytes (its content hash); older rows are the history of bytes the file had before
(an `overwrite`), never a second verdict on the same bytes. The sources rows of an ok
image must equal, column for column, the catalog of one direct run of the SExtractor
binary on the file's final bytes (the oracle: `source-extractor` itself, its FITS_1.0
catalog read with astropy); no (path, EXT_NUMBER, NUMBER) twice.

And the tables themselves: every file the Delta log names exists and is readable, the
rows a reader gets are exactly the rows of those files (no orphan part is read), and
the part files on disk that the log does not name (orphans of crashed batches) are
counted, with the rows a bare folder read would wrongly add.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from sexstream.extractor import Plan, content_hash
from sexstream.tables import open_table, read_table
from chaos.feed import Arrival

MAX_LISTED = 20  # problems listed per category in a report


@dataclass
class TableFiles:
    """A Delta table's log against its folder."""

    name: str
    in_log: int = 0
    on_disk: int = 0
    orphans: int = 0
    missing: int = 0       # named by the log, absent from disk: a corrupt table
    unreadable: int = 0    # named by the log, not a readable Parquet file
    log_rows: int = 0      # rows in the files the log names
    read_rows: int = 0     # rows a reader gets through the log
    orphan_rows: int = 0   # rows a bare folder read would add
    read_error: str = ""   # a reader going through the log failed

    @property
    def sound(self) -> bool:
        return (not self.missing and not self.unreadable and not self.read_error
                and self.log_rows == self.read_rows)


def table_files(table_dir: Path) -> TableFiles:
    """Compare the Delta log of `table_dir` with the Parquet files in its folder."""
    out = TableFiles(Path(table_dir).name)
    dt = open_table(table_dir)
    on_disk = {p.name for p in Path(table_dir).glob("*.parquet")}
    out.on_disk = len(on_disk)
    if dt is None:
        out.orphans = len(on_disk)
        return out
    in_log = {os.path.basename(u) for u in dt.file_uris()}
    out.in_log = len(in_log)
    out.missing = len(in_log - on_disk)
    orphans = on_disk - in_log
    out.orphans = len(orphans)
    for name in in_log & on_disk:
        try:
            out.log_rows += pq.ParquetFile(Path(table_dir) / name).metadata.num_rows
        except Exception:  # noqa: BLE001 - any failure to open is "unreadable"
            out.unreadable += 1
    for name in orphans:
        try:
            out.orphan_rows += pq.ParquetFile(Path(table_dir) / name).metadata.num_rows
        except Exception:  # noqa: BLE001 - a part cut short by a full disk
            pass
    try:
        out.read_rows = read_table(table_dir).num_rows
    except Exception as exc:  # noqa: BLE001 - what a reader of a corrupt table meets
        out.read_error = f"{type(exc).__name__}: {exc}"
    return out


class Oracle:
    """Direct runs of the SExtractor binary itself on a file's current bytes (its
    FITS_1.0 catalog read with astropy, not sexstream's reader), cached by content. The
    plan gives the keys, the config and its options, as a user would pass them by hand."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.binary = shutil.which("source-extractor") or shutil.which("sex") or plan.binary.path
        self.columns = [k.name for k in plan.keys if not k.size]
        self._cache: dict[str, pd.DataFrame | str] = {}

    def rows(self, path: str) -> pd.DataFrame | str:
        """The plan's scalar SExtractor columns of `path`, sorted; or why there are none."""
        key = content_hash(path)
        if key not in self._cache:
            self._cache[key] = self._run(path)
        return self._cache[key]

    def _run(self, path: str) -> pd.DataFrame | str:
        from astropy.io import fits

        with tempfile.TemporaryDirectory(prefix="oracle-") as tmp:
            link, params, cat = Path(tmp, "image.fits"), Path(tmp, "o.param"), Path(tmp, "o.cat")
            os.symlink(os.path.abspath(path), link)
            params.write_text("\n".join(dict.fromkeys([*self.columns, "EXT_NUMBER"])) + "\n")
            argv = [self.binary, str(link), "-c", self.plan.config, *self.plan.options,
                    "-PARAMETERS_NAME", str(params), "-CATALOG_TYPE", "FITS_1.0", "-CATALOG_NAME", str(cat)]
            proc = subprocess.run(argv, cwd=tmp, capture_output=True, text=True)
            if proc.returncode != 0 or not cat.is_file():
                return f"oracle: source-extractor exited {proc.returncode}"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with fits.open(cat) as hdul:
                    tables = [h.data for h in hdul if isinstance(h, fits.BinTableHDU) and h.data is not None]
                    cols = {c: np.concatenate([np.asarray(t[c]).astype(np.asarray(t[c]).dtype.newbyteorder("="))
                                               for t in tables]) for c in dict.fromkeys([*self.columns, "EXT_NUMBER"])}
        return _sorted(pd.DataFrame(cols)[self.columns])


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values([c for c in ("EXT_NUMBER", "NUMBER") if c in df.columns]).reset_index(drop=True)


@dataclass
class Audit:
    """What the sink holds against what was dropped; `ok` when nothing is wrong."""

    images: int = 0
    rows: int = 0
    sources: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    extra_rows: int = 0            # current images rows beyond one per file
    history_rows: int = 0          # rows of bytes a file had before (superseded, not current)
    duplicate_sources: int = 0     # rows repeating a (path, EXT_NUMBER, NUMBER)
    wrong: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    kinds: dict[str, int] = field(default_factory=dict)  # files dropped, by feed kind
    tables: list[TableFiles] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.duplicate_sources or self.wrong
                    or self.mismatched or self.unexpected) and all(t.sound for t in self.tables)

    def problems(self) -> list[str]:
        """Every problem found, one line each (at most MAX_LISTED per category)."""
        out = []
        for label, items in (("lost", self.lost), ("duplicated", self.duplicated),
                             ("wrong verdict", self.wrong), ("sources differ", self.mismatched),
                             ("never dropped", self.unexpected)):
            out += [f"{label}: {x}" for x in items[:MAX_LISTED]]
            if len(items) > MAX_LISTED:
                out.append(f"{label}: ... and {len(items) - MAX_LISTED} more")
        if self.duplicate_sources:
            out.append(f"duplicated sources: {self.duplicate_sources} rows repeat a "
                       "(path, EXT_NUMBER, NUMBER)")
        for t in self.tables:
            if not t.sound:
                out.append(f"table {t.name}: {t.missing} logged files missing, {t.unreadable} "
                           f"unreadable, {t.read_rows} rows read vs {t.log_rows} in logged files"
                           + (f"; reading failed: {t.read_error}" if t.read_error else ""))
        return out


def audit(sink: Path, truth: list[Arrival], oracle: Oracle) -> Audit:
    """Check the tables under `sink` against the dropped files `truth`."""
    sink = Path(sink)
    out = Audit(images=len(truth))
    for a in truth:
        out.kinds[a.kind] = out.kinds.get(a.kind, 0) + 1
    out.tables = [table_files(sink / "sources"), table_files(sink / "images")]
    if any(t.read_error for t in out.tables):
        return out  # unreadable: nothing more can be said (problems() names the error)
    images = read_table(sink / "images").to_pandas()
    sources = read_table(sink / "sources").to_pandas()
    out.rows, out.sources = len(images), len(sources)
    if images.empty:
        out.lost = [a.path for a in truth]
        return out
    out.statuses = images["status"].value_counts().to_dict()
    hashes = set(images["config_hash"].dropna())
    if hashes - {oracle.plan.config_hash}:
        out.wrong.append(f"config_hash {sorted(hashes)} in the sink, the oracle's is "
                         f"{oracle.plan.config_hash}: the audit compares different settings")
    if not sources.empty:
        dup = sources.duplicated(["path", "EXT_NUMBER", "NUMBER"])
        out.duplicate_sources = int(dup.sum())
    by_path = images.groupby("path").indices
    src_by_path = sources.groupby("path").indices if not sources.empty else {}
    known = {a.path for a in truth}
    out.unexpected = sorted(p for p in by_path if p not in known)
    for a in truth:
        idx = by_path.get(a.path)
        if idx is None:
            out.lost.append(f"{a.path} ({a.kind})")
            continue
        rows = images.iloc[idx]
        current = rows[rows["current"] != False] if "current" in rows.columns else rows  # noqa: E712
        out.history_rows += len(rows) - len(current)
        final_hash = content_hash(a.path) if os.path.exists(a.path) else None
        if len(current) > 1:
            out.extra_rows += len(current) - 1
            out.duplicated.append(f"{a.path}: {len(current)} current images rows "
                                  f"({', '.join(current['status'])}; batches {list(current['batch_id'])})")
        hashes = rows["content_hash"].dropna()
        if hashes.duplicated().any():
            out.duplicated.append(f"{a.path}: two verdicts on the same bytes ({', '.join(rows['status'])})")
        if current.empty:
            out.lost.append(f"{a.path} ({a.kind}): no current row")
            continue
        row = current.sort_values(["ingest_time", "batch_id"]).iloc[-1]
        status, fragment = a.expected
        reason = row.reason or ""
        if row.status != status or (fragment and fragment not in reason):
            out.wrong.append(f"{a.path} ({a.kind}): {row.status} {reason!r}, expected {status} {fragment or ''}".rstrip())
        elif final_hash and row.content_hash and row.content_hash != final_hash:
            out.wrong.append(f"{a.path} ({a.kind}): the current verdict is about other bytes than the final ones")
        src_idx = src_by_path.get(a.path)
        got = sources.iloc[src_idx] if src_idx is not None else sources.iloc[0:0]
        if status != "ok":
            if len(got):
                out.mismatched.append(f"{a.path} ({a.kind}): {len(got)} sources rows, expected none")
            continue
        _compare_sources(out, a, row, got, oracle)
    return out


def _compare_sources(out: Audit, a: Arrival, image_row, got: pd.DataFrame, oracle: Oracle) -> None:
    want = oracle.rows(a.path)
    if isinstance(want, str):
        out.mismatched.append(f"{a.path}: {want}")
        return
    if int(image_row.n_sources) != len(got):
        out.mismatched.append(f"{a.path}: images row says {image_row.n_sources} sources, "
                              f"the sources table holds {len(got)}")
    if len(got) and set(got["image_id"]) != {image_row.image_id}:
        out.mismatched.append(f"{a.path}: sources rows carry image_id {sorted(set(got['image_id']))}, "
                              f"the images row {image_row.image_id}")
    missing = [c for c in want.columns if c not in got.columns]
    if missing:
        out.mismatched.append(f"{a.path}: columns {missing} missing from the sources table")
        return
    mine = _sorted(got[list(want.columns)])
    if len(mine) != len(want):
        out.mismatched.append(f"{a.path}: {len(mine)} sources rows, the direct run has {len(want)}")
        return
    cols = [c for c in want.columns
            if not np.array_equal(mine[c].to_numpy(np.float64), want[c].to_numpy(np.float64), equal_nan=True)]
    if cols:
        out.mismatched.append(f"{a.path}: columns {cols} differ from the direct run")
