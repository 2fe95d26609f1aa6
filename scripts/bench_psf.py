#!/usr/bin/env python3
"""Cost of the inputs beside the image (PSF models, weight/flag maps, ASSOC lists) on
W48-like CCDs (2048x4612, ~2,300 sources), against the binaries run by hand.

- `modes`: one CCD measured in each mode by `sexstream.extractor.extract` and by the bare
  binaries doing the same steps (source-extractor; for --psf auto also its first pass and
  psfex), in interleaved rounds; prints medians of wall time and of CPU time (user + sys
  of this process and every process it waited for: robust on a shared, loaded machine),
  sexstream's overhead and each mode's CPU cost relative to one plain pass (the figures
  behind `sexstream.cost`).
- `replay`: `sexstream replay` of N such CCDs with `--psf auto` and NUMBER,MAG_PSF,
  SPREAD_MODEL against the recipe (first pass, psfex, measuring pass) run by hand on the
  same files, one image per core in parallel (xargs -P), in the same run.

usage: scripts/bench_psf.py modes [--repeat 3] [--only MODE,...]
       scripts/bench_psf.py replay [-n 8] [--repeat 2]
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sexstream import extractor, settings, synthetic

PLAIN = ("NUMBER", "X_IMAGE", "Y_IMAGE", "FLUX_AUTO", "MAG_AUTO", "FLAGS")
PSFEX_SHARE = Path("/usr/share/psfex")
#: mode -> (extra keys, settings, which file); "model" is a PSFEx model made once by hand.
MODES = {
    "plain": ((), {}, "ccd"),
    "maps": (("IMAFLAGS_ISO",), {"weight": "hdu:VARIANCE", "flag": "hdu:MASK"}, "calexp"),
    "assoc": (("VECTOR_ASSOC(3)", "NUMBER_ASSOC"), {"assoc": "{truth}"}, "ccd"),
    "psf-auto": ((), {"psf": "auto"}, "ccd"),
    "psf-auto+MAG_PSF": (("MAG_PSF",), {"psf": "auto"}, "ccd"),
    "psf-file+MAG_PSF": (("MAG_PSF",), {"psf": "{model}"}, "ccd"),
    "psf-file+SPREAD_MODEL": (("SPREAD_MODEL",), {"psf": "{model}"}, "ccd"),
    "psf-auto+MAG_PSF,SPREAD_MODEL": (("MAG_PSF", "SPREAD_MODEL"), {"psf": "auto"}, "ccd"),
    "psf-file+MAG_DETMODEL": (("MAG_DETMODEL",), {"psf": "{model}"}, "ccd"),
}


def run(argv: list[str], cwd: Path, stdin=None) -> None:
    subprocess.run(argv, cwd=cwd, check=True, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def recipe(image: str, workdir: Path) -> Path:
    """PSFEx's first pass and psfex by hand (packaged defaults, SNR_WIN added, no plots)."""
    param = workdir / "prepsfex.param"
    param.write_text((PSFEX_SHARE / "prepsfex.param").read_text() + "SNR_WIN\n")
    run(["source-extractor", image, "-c", str(PSFEX_SHARE / "prepsfex.sex"), "-PARAMETERS_NAME", str(param),
         "-FILTER_NAME", str(PSFEX_SHARE / "default.conv"), "-CATALOG_NAME", "prepsfex.cat",
         "-VERBOSE_TYPE", "QUIET"], workdir)
    run(["psfex", "prepsfex.cat", "-c", str(PSFEX_SHARE / "default.psfex"), "-CHECKPLOT_TYPE", "NONE",
         "-CHECKIMAGE_TYPE", "NONE", "-WRITE_XML", "N", "-VERBOSE_TYPE", "QUIET"], workdir)
    return workdir / "prepsfex.psf"


def cpu() -> float:
    """CPU seconds (user + sys) of this process and of every process it has waited for."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn, *args) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of fn(*args)."""
    c0, t0 = cpu(), time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0, cpu() - c0


def bare(plan: extractor.Plan, image: Path, choice: dict, workdir: Path, files: dict) -> None:
    """The mode's steps with the binaries alone."""
    param = workdir / "bare.param"
    param.write_text(plan.param_text)
    arg, extra = str(image), []
    if choice.get("weight"):
        arg, extra = f"{image}[1]", ["-WEIGHT_TYPE", "MAP_VAR", "-WEIGHT_IMAGE", f"{image}[3]",
                                     "-FLAG_IMAGE", f"{image}[2]"]
    if choice.get("assoc"):
        extra = ["-ASSOC_NAME", str(files["assoc_list"])]
    if choice.get("psf") == "auto":
        extra = ["-PSF_NAME", str(recipe(arg, workdir))]
    elif choice.get("psf"):
        model = files["model"]
        extra = ["-PSF_NAME", f"{model},{model}" if plan.dual else str(model)]
        arg = f"{arg},{arg}" if plan.dual else arg
    run([plan.binary.path, arg, "-c", plan.config, *plan.options, *extra, "-PARAMETERS_NAME", str(param),
         "-CATALOG_TYPE", "FITS_1.0", "-CATALOG_NAME", str(workdir / "bare.cat")], workdir)


def ours(plan: extractor.Plan, image: Path) -> None:
    result = extractor.extract(image, plan)
    assert result.record["status"] == "ok", result.record["reason"]


def modes(args: argparse.Namespace, tmp: Path) -> None:
    hdul, truth = synthetic.render(seed=48, nx=args.nx, ny=args.ny)
    files = {"ccd": tmp / "ccd.fits", "calexp": tmp / "calexp.fits", "truth": tmp / "truth.csv"}
    hdul.writeto(files["ccd"])
    synthetic.calexp(hdul[0].data, hdul[0].header, seed=48).writeto(files["calexp"])
    truth["ra", "dec", "mag"].write(files["truth"], format="ascii.csv")
    (tmp / "model").mkdir()
    files["model"] = recipe(str(files["ccd"]), tmp / "model")
    wanted = args.only.split(",") if args.only else list(MODES)
    plans = {}
    for name in wanted:
        keys, choice, which = MODES[name]
        choice = {k: v.format(**{k2: str(v2) for k2, v2 in files.items()}) for k, v in choice.items()}
        plans[name] = (extractor.prepare(settings.load(keys=PLAIN + keys, fitskeys=(), **choice)), choice, which)
    if "assoc" in plans:  # the list by hand: row, ra, dec, mag
        files["assoc_list"] = tmp / "ref.list"
        files["assoc_list"].write_text("".join(f"{i} {r['ra']:.12g} {r['dec']:.12g} {r['mag']:.6g}\n"
                                               for i, r in enumerate(truth, start=1)))
    times = {n: ([], []) for n in plans}
    ours(plans[wanted[0]][0], files[plans[wanted[0]][2]])  # warm the page cache
    for i in range(args.repeat):
        for k, (name, (plan, choice, which)) in enumerate(plans.items()):
            work = tmp / f"mode{k}-{i}"  # SExtractor splits file names on commas
            work.mkdir()
            times[name][0].append(timed(bare, plan, files[which], choice, work, files))
            times[name][1].append(timed(ours, plan, files[which]))
            (bw, bc), (ow, oc) = times[name][0][-1], times[name][1][-1]
            print(f"round {i + 1} {name:32} bare {bw:7.2f} s (cpu {bc:7.2f})  sexstream {ow:7.2f} s "
                  f"(cpu {oc:7.2f})", flush=True)
    med = {n: [statistics.median(x[j] for x in runs) for runs in t for j in (0, 1)] for n, t in times.items()}
    plain = med["plain"][3] if "plain" in med else None
    print(f"\nCCD {args.nx}x{args.ny}, {len(truth)} sources drawn; medians of {args.repeat} interleaved rounds; "
          f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'mode':31}{'bare wall':>10}{'ours wall':>10}{'bare cpu':>10}{'ours cpu':>10}{'cpu +':>8}"
          f"{'x plain':>9}  ours cpu rounds")
    for name, (bw, bc, ow, oc) in med.items():
        rel = f"{oc / plain:8.1f}x" if plain else ""
        spread = [x[1] for x in times[name][1]]
        print(f"{name:31}{bw:10.2f}{ow:10.2f}{bc:10.2f}{oc:10.2f}{100 * (oc / bc - 1):+7.1f}%{rel}  "
              f"{min(spread):.2f}-{max(spread):.2f}")


def replay(args: argparse.Namespace, tmp: Path) -> None:
    images = tmp / "night"
    t0 = time.perf_counter()
    synthetic.make_night(images, args.n, seed=48, nx=args.nx, ny=args.ny)
    print(f"generated {args.n} images {args.nx}x{args.ny} in {time.perf_counter() - t0:.1f} s")
    script = tmp / "recipe.sh"  # one image, by hand: first pass, psfex, measuring pass
    share, sx = PSFEX_SHARE, "/usr/share/source-extractor"
    script.write_text(f"""set -e
img=$1; w=$(mktemp -d); cd $w
cp {share}/prepsfex.param p.param; echo SNR_WIN >> p.param
source-extractor $img -c {share}/prepsfex.sex -PARAMETERS_NAME p.param -FILTER_NAME {share}/default.conv -CATALOG_NAME prepsfex.cat -VERBOSE_TYPE QUIET
psfex prepsfex.cat -c {share}/default.psfex -CHECKPLOT_TYPE NONE -CHECKIMAGE_TYPE NONE -WRITE_XML N -VERBOSE_TYPE QUIET 2>/dev/null
printf 'NUMBER\\nMAG_PSF\\nSPREAD_MODEL\\n' > m.param
source-extractor $img -c {sx}/default.sex -PARAMETERS_NAME m.param -FILTER_NAME {sx}/default.conv -STARNNW_NAME {sx}/default.nnw -PSF_NAME prepsfex.psf -CATALOG_TYPE FITS_1.0 -CATALOG_NAME m.cat -VERBOSE_TYPE QUIET
rm -rf $w
""")
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "SPARK_LOCAL_IP": "127.0.0.1"}
    listing = "\n".join(str(p) for p in sorted(images.glob("*.fits"))) + "\n"
    rows = []
    print(f"{'round':>5} {'bare':>8} {'replay':>8} {'start-up':>9} {'work':>8} {'bare/work':>10} {'load':>5}")
    for i in range(args.repeat):
        t0 = time.perf_counter()
        subprocess.run(["xargs", "-P", str(os.cpu_count()), "-n", "1", "bash", str(script)], input=listing,
                       text=True, check=True, stdout=subprocess.DEVNULL)
        b = time.perf_counter() - t0
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "streaming.cli", "replay", str(images), "--sink",
                               str(tmp / f"sink{i}"), "--keys", "NUMBER,MAG_PSF,SPREAD_MODEL", "--fitskeys", "",
                               "--psf", "auto", "--progress-every", "1000"], env=env, capture_output=True, text=True)
        r = time.perf_counter() - t0
        out = proc.stdout + proc.stderr
        if proc.returncode != 0 or f"{args.n} ok" not in out:
            raise SystemExit(f"replay failed ({proc.returncode}):\n{out[-3000:]}")
        startup = float(re.search(r"Spark start-up ([0-9.]+) s", out).group(1))
        work = float(re.search(r"work ([0-9.]+) s,", out).group(1))
        rows.append((b, r, startup, work))
        # wall time only: Spark's Python workers are not processes this one waits for, so
        # their CPU cannot be read from here (`modes` compares CPU, image by image)
        print(f"{i + 1:5d} {b:8.2f} {r:8.2f} {startup:9.2f} {work:8.2f} {b / work:10.2f} {os.getloadavg()[0]:5.1f}",
              flush=True)
    med = [statistics.median(col) for col in zip(*rows)]
    print(f"\nmedians of {args.repeat} round(s), {args.n} images, NUMBER,MAG_PSF,SPREAD_MODEL with --psf auto")
    print(f"bare recipe in parallel ({os.cpu_count()} at a time)   {med[0]:8.2f} s  "
          f"{args.n / med[0]:.3f} images/s")
    print(f"sexstream replay, whole process          {med[1]:8.2f} s  {args.n / med[1]:.3f} images/s")
    print(f"sexstream replay, start-up excluded      {med[3]:8.2f} s  {args.n / med[3]:.3f} images/s  "
          f"({med[0] / med[3]:.2f} of bare's speed; rounds "
          f"{min(r[0] / r[3] for r in rows):.2f}-{max(r[0] / r[3] for r in rows):.2f})")
    best = min(rows, key=lambda r: r[0]), min(rows, key=lambda r: r[3])
    print(f"least-loaded rounds: bare {best[0][0]:.2f} s, replay work {best[1][3]:.2f} s "
          f"({best[0][0] / best[1][3]:.2f} of bare's speed)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("modes", "replay"))
    ap.add_argument("--repeat", type=int, default=None, help="interleaved rounds (modes 3, replay 2)")
    ap.add_argument("--only", help="modes to run, comma-separated (default: all)")
    ap.add_argument("-n", type=int, default=8, help="images of the replay")
    ap.add_argument("--nx", type=int, default=2048)
    ap.add_argument("--ny", type=int, default=4612)
    args = ap.parse_args()
    args.repeat = args.repeat or (3 if args.what == "modes" else 2)
    # a SIGTERM ends the run like Ctrl-C: the running binary is killed, the temp dir removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="sexstream-bench-psf-") as tmp:
        (modes if args.what == "modes" else replay)(args, Path(tmp))


if __name__ == "__main__":
    main()
