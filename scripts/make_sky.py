#!/usr/bin/env python3
"""Write synthetic CFHT-MegaCam-like exposures into a folder, one night's worth.

    scripts/make_sky.py OUTDIR -n 48 --seed 1 --nx 2048 --ny 4612 --ccds 1

Prints each path as it is written (files appear atomically, by rename). With
--interval the exposures are spaced out in time, to feed a live `sexstream run`.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from sexstream.synthetic import BANDS, DENSITY, iter_night


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, as a namespace."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("outdir", type=Path, help="folder to write into (created if missing)")
    p.add_argument("-n", type=int, default=1, help="number of exposures (default 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--nx", type=int, default=2048, help="CCD width, pixels (default 2048)")
    p.add_argument("--ny", type=int, default=4612, help="CCD height, pixels (default 4612)")
    p.add_argument("--ccds", type=int, default=1,
                   help="CCDs per exposure; more than 1 writes multi-extension files")
    p.add_argument("--ra", type=float, help="first pointing RA, degrees (default random)")
    p.add_argument("--dec", type=float, help="first pointing Dec, degrees (default random)")
    p.add_argument("--step", type=float,
                   help="random-walk step between pointings, degrees (default: field width)")
    p.add_argument("--filter", default="r", choices=sorted(BANDS), help="MegaCam filter")
    p.add_argument("--exptime", type=float, default=300.0, help="seconds (default 300)")
    p.add_argument("--mjd", type=float, help="MJD-OBS of the first exposure (default random)")
    p.add_argument("--density", type=float, default=DENSITY,
                   help=f"sources per arcmin^2 (default {DENSITY:g})")
    p.add_argument("--stars", type=int, help="stars per CCD (overrides --density)")
    p.add_argument("--galaxies", type=int, help="galaxies per CCD (overrides --density)")
    p.add_argument("--fwhm", type=float, default=0.8, help="seeing FWHM, arcsec (default 0.8)")
    p.add_argument("--interval", type=float, default=0.0,
                   help="seconds to wait between exposures (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Write the exposures and print their paths; returns the exit status."""
    a = parse_args(argv)
    night = iter_night(a.outdir, a.n, seed=a.seed, ra=a.ra, dec=a.dec, mjd=a.mjd,
                       step=a.step, exptime=a.exptime, overwrite=a.overwrite,
                       nx=a.nx, ny=a.ny, n_ccd=a.ccds, filter=a.filter,
                       density=a.density, n_stars=a.stars, n_galaxies=a.galaxies,
                       fwhm=a.fwhm)
    try:
        for i, path in enumerate(night):
            print(path, flush=True)
            if a.interval and i + 1 < a.n:
                time.sleep(a.interval)
    except FileExistsError as exc:
        print(f"make_sky: {exc} exists (use --overwrite)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
