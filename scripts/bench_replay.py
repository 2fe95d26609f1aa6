#!/usr/bin/env python3
"""Replay benchmark: `sexstream replay` of N generated 2048x4612 images against the two
baselines of ../shared/baselines, on the same files, in the same run.

- bare:  bare_parallel.sh — SExtractor alone, one process per core (the physical limit);
- seed:  seed_pipeline.py — the LAL pipeline this project descends from (Spark RDD
         flatMap, ASCII stdout parsed into floats);
- sexstream replay with the seed's 8 keys and 4 header keys, into a fresh Delta sink.

Targets (issue 4): whole process, Spark start-up included, >= 1.5x faster than the seed
pipeline's whole process; start-up excluded, >= 0.90 of bare's speed. "Start-up" is what
the replay's summary reports: from the process's start until the first image is handed
to SExtractor (the JVM, the session, the query's start and first planning, the Python
workers); "work" runs from there to the last commit.

usage: scripts/bench_replay.py [-n 48] [--nx 2048 --ny 4612] [--repeat 3] [--baselines ../shared/baselines]
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sexstream import synthetic

ROOT = Path(__file__).resolve().parent.parent
SEED_KEYS = "NUMBER,EXT_NUMBER,FLUX_ISO,MAG_ISO,ALPHA_SKY,DELTA_SKY,FLUXERR_ISO,MAGERR_ISO"
FITSKEYS = "RA_DEG,DEC_DEG,FILTER,RUNID"


def run(argv: list[str], env: dict | None = None, cwd: Path | None = None) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=cwd)
    elapsed = time.perf_counter() - t0
    if proc.returncode not in (0,):
        raise SystemExit(f"{argv[0]} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return elapsed, proc.stdout + proc.stderr


def number(pattern: str, text: str) -> float:
    m = re.search(pattern, text)
    if not m:
        raise SystemExit(f"could not find {pattern!r} in:\n{text[-2000:]}")
    return float(m.group(1))


def one_round(images: Path, sink: Path, base: Path, env: dict, cwd: Path) -> dict:
    """bare, seed, replay once each on the same files; the replay into a fresh `sink`."""
    r = {}
    _, out = run(["bash", str(base / "bare_parallel.sh"), str(images), str(base / "seed.param")])
    r["bare"] = number(r"wall_s=([0-9.]+)", out)
    # the seed writes default.param in its working directory: give it the temp dir
    r["seed"], out = run([sys.executable, str(base / "seed_pipeline.py"), f"{images}/*.fits"], env, cwd=cwd)
    r["seed_rows"] = number(r"rows=(\d+)", out)
    r["replay"], out = run([sys.executable, "-m", "streaming.cli", "replay", str(images), "--sink", str(sink),
                            "--keys", SEED_KEYS, "--fitskeys", FITSKEYS, "--progress-every", "1000"], env)
    r["startup"] = number(r"Spark start-up ([0-9.]+) s", out)
    r["work"] = number(r"work ([0-9.]+) s,", out)
    r["ok"] = number(r"images\s+(\d+) ok", out)
    r["sources"] = number(r"sources\s+(\d+)", out)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=48)
    ap.add_argument("--nx", type=int, default=2048)
    ap.add_argument("--ny", type=int, default=4612)
    ap.add_argument("--repeat", type=int, default=3,
                    help="rounds of (bare, seed, replay), interleaved; medians are reported")
    ap.add_argument("--baselines", default=str(ROOT.parent / "shared" / "baselines"))
    args = ap.parse_args()
    base = Path(args.baselines)
    env = {"PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "SPARK_LOCAL_IP": "127.0.0.1"}
    from streaming import jvmarchive
    from streaming.jvmarchive import FAST_START_JVM

    archive = jvmarchive.archive_path(FAST_START_JVM)
    used = jvmarchive.enabled() and archive is not None and archive.is_file()
    print(f"driver JVM class archive: {archive if used else 'none'}"
          f"{'' if used else ' (run `sexstream jvm-archive` to record it)'}")
    with tempfile.TemporaryDirectory(prefix="sexstream-bench-replay-") as tmp:
        tmp = Path(tmp)
        images = tmp / "night"
        t0 = time.perf_counter()
        synthetic.make_night(images, args.n, seed=48, nx=args.nx, ny=args.ny)
        print(f"generated {args.n} images {args.nx}x{args.ny} in {time.perf_counter() - t0:.1f} s")
        rounds = []
        print(f"{'round':>5} {'bare':>7} {'seed':>7} {'replay':>7} {'start-up':>9} {'work':>7} "
              f"{'vs seed':>8} {'vs bare':>8}")
        for i in range(args.repeat):
            r = one_round(images, tmp / f"sink{i}", base, env, tmp)
            rounds.append(r)
            print(f"{i + 1:5d} {r['bare']:7.2f} {r['seed']:7.2f} {r['replay']:7.2f} {r['startup']:9.2f} "
                  f"{r['work']:7.2f} {r['seed'] / r['replay']:7.2f}x {r['bare'] / r['work']:8.2f}")
            if r["ok"] != args.n:
                raise SystemExit(f"replay measured {r['ok']:.0f} of {args.n} images")
        med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
        print(f"\nmedians of {args.repeat} round(s); replay: {med['ok']:.0f} images ok, {med['sources']:.0f} sources "
              f"(the seed's rows vary: {min(r['seed_rows'] for r in rounds):.0f}-"
              f"{max(r['seed_rows'] for r in rounds):.0f}; its tasks share one default.param)")
        print(f"{'':34}{'seconds':>9}")
        print(f"{'bare parallel SExtractor':34}{med['bare']:9.2f}")
        print(f"{'seed pipeline, whole process':34}{med['seed']:9.2f}")
        print(f"{'sexstream replay, whole process':34}{med['replay']:9.2f}   "
              f"(start-up {med['startup']:.2f} s until the first image)")
        print(f"{'sexstream replay, start-up excl.':34}{med['work']:9.2f}")
        print()
        vs_seed = [r["seed"] / r["replay"] for r in rounds]
        vs_bare = [r["bare"] / r["work"] for r in rounds]
        print(f"whole process vs seed:        {med['seed'] / med['replay']:5.2f}x faster (target >= 1.5x; "
              f"rounds {min(vs_seed):.2f}-{max(vs_seed):.2f})")
        print(f"start-up excluded vs bare:    {med['bare'] / med['work']:5.2f} of bare's speed (target >= 0.90; "
              f"rounds {min(vs_bare):.2f}-{max(vs_bare):.2f})")


if __name__ == "__main__":
    main()
