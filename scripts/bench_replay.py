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

usage: scripts/bench_replay.py [-n 48] [--nx 2048 --ny 4612] [--baselines ../shared/baselines]
"""
from __future__ import annotations

import argparse
import os
import re
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=48)
    ap.add_argument("--nx", type=int, default=2048)
    ap.add_argument("--ny", type=int, default=4612)
    ap.add_argument("--baselines", default=str(ROOT.parent / "shared" / "baselines"))
    args = ap.parse_args()
    base = Path(args.baselines)
    env = {"PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "SPARK_LOCAL_IP": "127.0.0.1"}
    with tempfile.TemporaryDirectory(prefix="sexstream-bench-replay-") as tmp:
        tmp = Path(tmp)
        images = tmp / "night"
        t0 = time.perf_counter()
        synthetic.make_night(images, args.n, seed=48, nx=args.nx, ny=args.ny)
        print(f"generated {args.n} images {args.nx}x{args.ny} in {time.perf_counter() - t0:.1f} s")

        bare_wall, out = run(["bash", str(base / "bare_parallel.sh"), str(images), str(base / "seed.param")])
        bare_s = number(r"wall_s=([0-9.]+)", out)
        print(f"bare      {out.strip().splitlines()[-1]}")

        # the seed writes default.param in its working directory: give it the temp dir
        seed_wall, out = run([sys.executable, str(base / "seed_pipeline.py"), f"{images}/*.fits"], env, cwd=tmp)
        seed_total = number(r"total_s=([0-9.]+)", out)
        seed_work = number(r"work_s=([0-9.]+)", out)
        print(f"seed      {[ln for ln in out.splitlines() if ln.startswith('seed ')][-1]} "
              f"(process {seed_wall:.2f} s)")

        from streaming import jvmarchive
        from streaming.session import FAST_START_JVM

        archive = jvmarchive.java_options(FAST_START_JVM)
        print(f"driver JVM class archive: {archive.split()[0].strip(chr(34)) if archive else 'none'}"
              f"{'' if archive else ' (run `sexstream jvm-archive` to record it)'}")
        replay_wall, out = run([sys.executable, "-m", "sexstream.cli", "replay", str(images),
                                "--sink", str(tmp / "sink"), "--keys", SEED_KEYS,
                                "--fitskeys", FITSKEYS, "--progress-every", "1000"], env)
        startup = number(r"Spark start-up ([0-9.]+) s", out)
        work = number(r"work ([0-9.]+) s,", out)
        ok = number(r"images\s+(\d+) ok", out)
        print(f"sexstream replay: {int(ok)} ok, process {replay_wall:.2f} s (start-up {startup:.2f} s, "
              f"work {work:.2f} s)")

        print()
        print(f"{'':34}{'seconds':>9}")
        print(f"{'bare parallel SExtractor':34}{bare_s:9.2f}")
        print(f"{'seed pipeline, whole process':34}{seed_wall:9.2f}   (its own total_s {seed_total:.2f}, "
              f"work {seed_work:.2f})")
        print(f"{'sexstream replay, whole process':34}{replay_wall:9.2f}")
        print(f"{'sexstream replay, start-up excl.':34}{work:9.2f}")
        print()
        print(f"whole process vs seed:        {seed_wall / replay_wall:5.2f}x faster (target >= 1.5x)")
        print(f"start-up excluded vs bare:    {bare_s / work:5.2f} of bare's speed (target >= 0.90)")


if __name__ == "__main__":
    main()
