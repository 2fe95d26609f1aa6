#!/usr/bin/env python3
"""Wrapper overhead of `sexstream.extractor.extract` against a bare `source-extractor` run
on the same generated 2048x4612 image, with the same keys, config and catalog type.

usage: scripts/bench_extract.py [--repeat 5] [--nx 2048 --ny 4612] [--keep DIR]
Prints the median wall time of each and the overhead ratio (target <= 5 %).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from sexstream import extractor, settings, synthetic


def bare(image: Path, plan: extractor.Plan, workdir: Path) -> float:
    """One plain run of the binary, as a person would type it (FITS_1.0 catalog)."""
    param = workdir / "bare.param"
    param.write_text(plan.param_text)
    argv = [plan.binary.path, str(image), "-c", plan.config, *plan.options,
            "-PARAMETERS_NAME", str(param), "-CATALOG_TYPE", "FITS_1.0",
            "-CATALOG_NAME", str(workdir / "bare.cat")]
    t0 = time.perf_counter()
    subprocess.run(argv, cwd=workdir, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def wrapped(image: Path, plan: extractor.Plan) -> float:
    t0 = time.perf_counter()
    r = extractor.extract(image, plan)
    elapsed = time.perf_counter() - t0
    assert r.record["status"] == "ok", r.record["reason"]
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--nx", type=int, default=2048)
    ap.add_argument("--ny", type=int, default=4612)
    ap.add_argument("--keys", default=None, help="comma-separated keys (default: conf/sexstream.toml)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sexstream-bench-") as tmp:
        tmp = Path(tmp)
        image = synthetic.make_exposure(tmp / "bench.fits", seed=7, nx=args.nx, ny=args.ny, ra=150.0, dec=2.2)
        s = settings.load(keys=tuple(args.keys.split(",")) if args.keys else None)
        plan = extractor.prepare(s)
        n = extractor.extract(image, plan).record["n_sources"]  # warm the page cache
        bare(image, plan, tmp)
        b, w = [], []
        for _ in range(args.repeat):  # interleaved, so drift hits both alike
            b.append(bare(image, plan, tmp))
            w.append(wrapped(image, plan))
        mb, mw = statistics.median(b), statistics.median(w)
        print(f"image {args.nx}x{args.ny}, {n} sources, {len(plan.keys)} keys, {args.repeat} runs each")
        print(f"bare source-extractor  median {mb:.3f} s  (min {min(b):.3f})")
        print(f"sexstream extract      median {mw:.3f} s  (min {min(w):.3f})")
        print(f"wrapper overhead       {100 * (mw / mb - 1):+.1f} %  (target <= 5 %)")


if __name__ == "__main__":
    main()
