"""Benchmark of cone searches and light curves on survey-like sinks of 10^7 and 10^8 rows.

For each size, a sink is made by the project's generator (`sexstream.survey`: pointings
along tracks, sources in CCD footprints, written through sink.write_part/sink.commit as
the daemon writes), clustered by `sexstream.maintenance.cluster_sources` (its cost is
printed: that is what the maintenance schedule pays), then the newest exposures are
appended and left unclustered (the tail a cone search must still find). On each sink,
in interleaved rounds at random source positions:

- a 10 arcsec, a 1 arcsec and a 1 degree cone through a warm `Sky` (a notebook or the
  dashboard: file lists and footers kept; each question still follows the log);
- the same 10 arcsec cone through a fresh `Sky` each time (a new process: footers read);
- the light curve of a bright source (seen in every epoch) vs a 1 arcsec cone there,
  each with the images' observation times still to look up (warm and fresh `Sky`);
- the 1 degree cone as an astropy Table (the API's default; the others are Arrow);
- the baseline, measured in the same run: the naive full scan a user writes today, at
  its cheapest (read ALPHA_J2000/DELTA_J2000 of every row through the Delta log and
  filter by angular distance; reading the matches' other columns is not counted);
- `sexstream cone` as a command (process start and imports included).

Prints p50 and the spread (p10-p90, min-max) of each, the bytes read as a fraction of
the table, and ratios against the baseline. Sinks live under --root (outside the repo)
and are reused when complete; --fresh rebuilds them; --zorder also measures delta-rs
`optimize.z_order(["healpix"])` on a copy of the 10^7 sink as the alternative layout.

    .venv/bin/python scripts/bench_query.py --rows 1e7 --rows 1e8 --root /work/bench-query
    .venv/bin/python scripts/bench_query.py --rows 1e6 --root /tmp/bq --queries 10   # quick look
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sexstream import maintenance, survey  # noqa: E402
from sexstream.query import Sky  # noqa: E402
from sexstream.query.conesearch import separation  # noqa: E402
from sexstream.tables import open_table, read_table, sources_path  # noqa: E402

#: Share of the exposures appended after the clustering (the unclustered tail).
TAIL = 0.005


def log(text: str) -> None:
    print(text, flush=True)


def build(folder: Path, rows: float, fresh: bool, keep_raw: bool = False) -> dict:
    """Make (or reuse) the sink of about `rows` rows; returns what it cost. With
    `keep_raw`, a copy of the sink before clustering is kept in `folder`/raw."""
    marker = folder / "built.json"
    if marker.exists() and not fresh:
        return json.loads(marker.read_text())
    if fresh:
        shutil.rmtree(folder, ignore_errors=True)
    sink = folder / "sink"  # an interrupted build resumes (survey.write skips what is committed)
    plan = survey.Survey.for_rows(rows)
    cut = int(plan.n_exposures * (1 - TAIL))
    log(f"  writing {plan.n_exposures} exposures ({plan.n_fields} fields x {plan.epochs} epochs)")
    t0 = time.perf_counter()
    survey.write(sink, plan, 0, cut, progress=lambda r: r.batches % 100 == 0 and log(
        f"    {r.images} images, {r.rows:,} rows, {time.perf_counter() - t0:.0f} s"))
    written = time.perf_counter() - t0
    if keep_raw:
        shutil.copytree(sink, folder / "raw")
    t0 = time.perf_counter()
    report = maintenance.cluster_sources(str(sink))
    clustered = time.perf_counter() - t0
    log(f"  {report.line()}")
    open_table(sources_path(sink)).vacuum(retention_hours=0, enforce_retention_duration=False,
                                          dry_run=False, full=True)
    tail = survey.write(sink, plan, cut, None)
    held = pa.table(open_table(sources_path(sink)).get_add_actions(flatten=True))
    info = {"rows": sum(held.column("num_records").to_pylist()),  # a resumed build included
            "tail_rows": tail.rows, "tail_images": tail.images, "images": plan.n_exposures, "write_s": written, "cluster_s": clustered,
            "cluster_rows_written": report.rows_written, "cluster_mb_written": report.bytes_written / 1e6,
            "cluster_steps": report.steps, "fields": plan.n_fields, "epochs": plan.epochs}
    marker.write_text(json.dumps(info, indent=1))
    return info


#: The alternative layouts: delta-rs z_order on healpix with its default row groups
#: (1,048,576 rows), and with row groups as small as the sorted runs' (16,384 rows).
ZORDER = {"zorder": None, "zorder-rg16k": 16_384}


def build_zorder(folder: Path, rows: float, variant: str) -> dict:
    """The alternative layout: delta-rs optimize.z_order(["healpix"]) over the raw copy
    of `folder`'s sink, then the same tail appended; returns what it cost."""
    from deltalake import WriterProperties

    marker = folder / f"{variant}.json"
    if marker.exists():
        return json.loads(marker.read_text())
    raw, sink = folder / "raw", folder / variant
    shutil.rmtree(sink, ignore_errors=True)
    shutil.copytree(raw, sink)
    table = open_table(sources_path(sink))
    group = ZORDER[variant]
    t0 = time.perf_counter()
    metrics = table.optimize.z_order(["healpix"], writer_properties=WriterProperties(
        max_row_group_size=group) if group else None)
    seconds = time.perf_counter() - t0
    open_table(sources_path(sink)).vacuum(retention_hours=0, enforce_retention_duration=False,
                                          dry_run=False, full=True)
    plan = survey.Survey.for_rows(rows)
    tail = survey.write(sink, plan, int(plan.n_exposures * (1 - TAIL)), None)
    info = {**json.loads((folder / "built.json").read_text()), "cluster_s": seconds,
            "cluster_mb_written": float("nan"), "tail_rows": tail.rows, "tail_images": tail.images,
            "cluster_steps": [f"z_order: {metrics.get('numFilesRemoved')} -> "
                              f"{metrics.get('numFilesAdded')} files"]}
    marker.write_text(json.dumps(info, indent=1))
    return info


def positions(sink: Path, n: int, seed: int, bright: bool = False) -> list[tuple[float, float]]:
    """`n` positions of real sources, drawn from random files (bright: MAG_ISO < 19)."""
    table = open_table(sources_path(sink))
    uris = table.file_uris()
    rng = np.random.default_rng(seed)
    out: list[tuple[float, float]] = []
    import pyarrow.parquet as pq

    while len(out) < n:
        uri = uris[int(rng.integers(len(uris)))].removeprefix("file://")
        handle = pq.ParquetFile(uri)
        group = handle.read_row_group(int(rng.integers(handle.num_row_groups)),
                                      columns=["ALPHA_J2000", "DELTA_J2000", "MAG_ISO"])
        if bright:
            group = group.filter(pc.less(group["MAG_ISO"], 19.0))
        if group.num_rows:
            i = int(rng.integers(group.num_rows))
            out.append((group["ALPHA_J2000"][i].as_py(), group["DELTA_J2000"][i].as_py()))
    return out


def naive_cone(sink: Path, ra: float, dec: float, radius_deg: float) -> pa.Table:
    """What a user writes today, at its cheapest: every row's coordinates through the
    Delta log, an angular-distance filter (the matching rows' other columns, which a
    real query would read next, are not even counted)."""
    coords = read_table(sources_path(sink), columns=["ALPHA_J2000", "DELTA_J2000"])
    sep = separation(ra, dec, coords["ALPHA_J2000"].to_numpy(), coords["DELTA_J2000"].to_numpy())
    return coords.filter(pa.array(sep <= radius_deg))


def spread(seconds: list[float]) -> str:
    s = np.asarray(seconds)
    return (f"p50 {np.median(s) * 1e3:8.1f} ms  p10-p90 {np.percentile(s, 10) * 1e3:.1f}-"
            f"{np.percentile(s, 90) * 1e3:.1f}  min-max {s.min() * 1e3:.1f}-{s.max() * 1e3:.1f}")


def rchar() -> int:
    """Bytes this process has read through read() and pread() so far (/proc/self/io):
    the Delta log, the footers and the column chunks, from disk or the page cache."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def measure(sink: Path, queries: int, rounds: int, seed: int) -> dict:
    """Every query kind at the same positions, interleaved; returns the samples."""
    where = positions(sink, queries, seed)
    stars = positions(sink, queries, seed + 1, bright=True)
    warm = Sky(sink)
    warm.cone(*where[0], "10arcsec")  # load the log and the footers the first cone meets
    kinds = {k: [] for k in ("cone10", "cone10_cold", "cone1", "cone1deg", "cone1deg_astropy",
                             "curve", "cone1_star", "curve_cold", "cone1_cold", "naive")}
    fractions = {k: [] for k in ("cone10", "cone10_cold", "cone1deg", "curve")}
    rows = {k: [] for k in ("cone10", "cone1deg", "curve")}
    syscalls = {k: [] for k in ("cone10", "cone10_cold")}  # all bytes read, log included
    for r in range(rounds):
        for i, ((ra, dec), (sra, sdec)) in enumerate(zip(where, stars)):
            before = rchar()
            s, out = timed(lambda: warm.cone(ra, dec, "10arcsec", format="arrow"))
            kinds["cone10"].append(s), fractions["cone10"].append(warm.last_stats.fraction_read)
            syscalls["cone10"].append((rchar() - before) / warm.last_stats.table_bytes)
            rows["cone10"].append(out.num_rows)
            before = rchar()
            cold = Sky(sink)
            s, _ = timed(lambda: cold.cone(ra, dec, "10arcsec", format="arrow"))
            kinds["cone10_cold"].append(s), fractions["cone10_cold"].append(cold.last_stats.fraction_read)
            syscalls["cone10_cold"].append((rchar() - before) / cold.last_stats.table_bytes)
            kinds["cone1"].append(timed(lambda: warm.cone(ra, dec, "1arcsec", format="arrow"))[0])
            s, out = timed(lambda: warm.cone(ra, dec, "1deg", format="arrow"))
            kinds["cone1deg"].append(s), fractions["cone1deg"].append(warm.last_stats.fraction_read)
            rows["cone1deg"].append(out.num_rows)
            # the light curve and the 1" cone at the same source, in alternating order, each
            # with the images' times to look up (as the first question about a source does)
            for kind in (("curve", "cone1_star") if i % 2 else ("cone1_star", "curve")):
                warm.times.forget()
                if kind == "curve":
                    s, out = timed(lambda: warm.lightcurve(sra, sdec, format="arrow"))
                    fractions["curve"].append(warm.last_stats.fraction_read)
                    rows["curve"].append(out.num_rows)
                else:
                    s, _ = timed(lambda: warm.cone(sra, sdec, "1arcsec", format="arrow"))
                kinds[kind].append(s)
            cold = Sky(sink)
            kinds["curve_cold"].append(timed(lambda: cold.lightcurve(sra, sdec, format="arrow"))[0])
            cold = Sky(sink)
            kinds["cone1_cold"].append(timed(lambda: cold.cone(sra, sdec, "1arcsec", format="arrow"))[0])
            s, _ = timed(lambda: warm.cone(ra, dec, "1deg"))
            kinds["cone1deg_astropy"].append(s)
            if i < max(2, queries // 10):  # the baseline is slow: a few per round
                s, hit = timed(lambda: naive_cone(sink, ra, dec, 10 / 3600))
                kinds["naive"].append(s)
    cli = []
    for ra, dec in where[:5]:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "streaming.cli", "cone", str(ra), str(dec), "10arcsec",
                        "--sink", str(sink)], check=True, capture_output=True, cwd=ROOT)
        cli.append(time.perf_counter() - t0)
    kinds["cli"] = cli
    return {"times": kinds, "fractions": fractions, "rows": rows, "syscalls": syscalls,
            "table_mb": warm.last_stats.table_bytes / 1e6, "files": warm.last_stats.files}


def report(name: str, info: dict, m: dict) -> None:
    t, f, n = m["times"], m["fractions"], m["rows"]
    naive = statistics.median(t["naive"])
    log(f"\n== {name}: {info['rows']:,} rows, {m['files']} files, {m['table_mb']:.0f} MB; "
        f"{info['images']:,} images ({info['fields']} fields x {info['epochs']} epochs); "
        f"unclustered tail {info['tail_rows']:,} rows in {info['tail_images']} files")
    log(f"   made in {info['write_s']:.0f} s; clustering (maintenance.cluster_sources) "
        f"{info['cluster_s']:.0f} s, {info['cluster_mb_written']:.0f} MB written: {info['cluster_steps'][-1]}")
    lines = [("naive full scan, 10\" (baseline)", "naive", None, None),
             ("10\" cone, warm Sky", "cone10", "cone10", "cone10"),
             ("10\" cone, fresh Sky (footers read)", "cone10_cold", "cone10_cold", None),
             ("1\" cone, warm", "cone1", None, None),
             ("1 deg cone, warm", "cone1deg", "cone1deg", "cone1deg"),
             ("1 deg cone, warm, as an astropy Table", "cone1deg_astropy", None, None),
             ("light curve (1\"), bright source", "curve", "curve", "curve"),
             ("1\" cone at the same bright sources", "cone1_star", None, None),
             ("light curve, fresh Sky", "curve_cold", None, None),
             ("1\" cone at the same sources, fresh Sky", "cone1_cold", None, None),
             ("`sexstream cone` 10\", whole process", "cli", None, None)]
    for label, key, frac, rows in lines:
        extra = ""
        if frac:
            extra += f"  read p50 {100 * np.median(f[frac]):.3f} % (max {100 * np.max(f[frac]):.3f} %)"
        if frac in m["syscalls"]:
            extra += f", all reads incl. the log p50 {100 * np.median(m['syscalls'][frac]):.3f} %"
        if rows:
            extra += f"  rows p50 {np.median(n[rows]):.0f}"
        ratio = naive / statistics.median(t[key])
        log(f"   {label:<38} {spread(t[key])}  x{ratio:,.0f} vs naive{extra}")
    log(f"   light curve / 1\" cone at the same positions (p50): warm "
        f"{statistics.median(t['curve']) / statistics.median(t['cone1_star']):.2f}, fresh Sky "
        f"{statistics.median(t['curve_cold']) / statistics.median(t['cone1_cold']):.2f}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=float, action="append", help="table sizes (default 1e7 and 1e8)")
    p.add_argument("--root", type=Path, default=Path("/work/bench-query"))
    p.add_argument("--queries", type=int, default=30, help="positions per round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--fresh", action="store_true", help="rebuild the sinks")
    p.add_argument("--build-only", action="store_true")
    p.add_argument("--cluster-tail", action="store_true",
                   help="at the end, time the maintenance step that clusters each sink's tail "
                        "(the sinks then have no tail: rebuild with --fresh)")
    p.add_argument("--zorder", action="store_true",
                   help="also measure delta-rs z_order on a copy of the first (smallest) sink")
    args = p.parse_args()
    results = {}
    sizes = args.rows or [1e7, 1e8]
    for rows in sizes:
        name = f"{rows:.0e}".replace("+0", "").replace("+", "")
        log(f"sink {name} under {args.root / name}")
        zorder = args.zorder and rows == sizes[0]
        info = build(args.root / name, rows, args.fresh, keep_raw=zorder)
        variants = {v: build_zorder(args.root / name, rows, v) for v in ZORDER} if zorder else {}
        if args.build_only:
            continue
        results[name] = (info, measure(args.root / name / "sink", args.queries, args.rounds, args.seed))
        report(name, *results[name])
        for variant, zinfo in variants.items():
            report(f"{name}, delta-rs {variant} instead of sorted runs", zinfo,
                   measure(args.root / name / variant, args.queries, args.rounds, args.seed))
            if args.cluster_tail:  # z_order knows no tail: its maintenance rewrites everything
                t0 = time.perf_counter()
                metrics = open_table(sources_path(args.root / name / variant)).optimize.z_order(["healpix"])
                log(f"   the maintenance step on the tail, as z_order: {time.perf_counter() - t0:.1f} s "
                    f"({metrics.get('numFilesRemoved')} -> {metrics.get('numFilesAdded')} files)")
                (args.root / name / f"{variant}.json").unlink()
    for name in results if args.cluster_tail else ():
        t0 = time.perf_counter()
        step = maintenance.cluster_sources(str(args.root / name / "sink"))
        log(f"\n== {name}: the maintenance step on the tail: {time.perf_counter() - t0:.1f} s: {step.line()}")
        (args.root / name / "built.json").unlink()
    if len(results) >= 2:
        (small, (_, a)), (big, (_, b)) = list(results.items())[:2]
        log(f"\n== {big} / {small} (p50): " + ", ".join(
            f"{k} {statistics.median(b['times'][k]) / statistics.median(a['times'][k]):.2f}"
            for k in ("cone10", "cone10_cold", "cone1deg", "curve", "curve_cold", "naive")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
