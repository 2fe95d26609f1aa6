"""The expected cost of measuring one image with a plan, relative to one plain SExtractor
pass on the same image: for whoever sizes tasks and batches, and for timeouts.

Measured with `scripts/bench_psf.py modes --repeat 3` on a W48-like CCD (2048x4612
pixels, 2,477 sources drawn; medians of CPU seconds, user + sys, of interleaved rounds on
a loaded 2-core VM; README "Performance"): a plain pass of 6 keys took 0.55 s. Each term
is the extra CPU of one feature over that pass, in units of that pass, so their sum is
the multiplier for such CCDs (measured 73x for --psf auto with MAG_PSF and SPREAD_MODEL;
the sum says 68x). Model fitting costs per source (~14 ms each here) and PSFEx ~1.2 s
whatever the frame: on small or sparse frames the ratios differ, only the order of
magnitude carries over. A plan with both *_MODEL and *_DETMODEL keys is estimated as the
sum of the two (not measured).
"""
from __future__ import annotations

from typing import Protocol

from sexstream import requirements

#: PSFEx's recipe per image (its SExtractor first pass and psfex): 5.2x - 1.
RECIPE = 4.2
#: PSF fitting (MAG_PSF, FLUX_PSF, XPSF_IMAGE, ...), with a given model: 1.9x - 1.
PSF_FIT = 0.9
#: Model fitting (SPREAD_MODEL and every *_MODEL, SPHEROID_*, DISK_* ... key): 62.5x - 1.
MODEL_FIT = 61.5
#: Model fitting in dual-image mode (*_DETMODEL, MAG_DETMODEL alone): 110.5x - 1.
DETMODEL_FIT = 109.5
#: Weight and flag maps (two more planes read, the weights applied): 1.6x - 1.
MAPS = 0.6
#: An ASSOC list of ~2,500 rows (written, matched): within the noise of a plain pass.
ASSOC = 0.1


class _Plan(Protocol):  # the parts of `extractor.Plan` read here
    keys: tuple
    psf: object
    planes: object
    assoc: object


def relative(plan: _Plan) -> float:
    """Expected seconds of one image with `plan` / seconds of one plain pass (>= 1)."""
    names = [k.name for k in plan.keys]
    needs_psf = [n for n in names if requirements.need_of(n) is requirements.PSF]
    cost = 1.0
    if getattr(plan.psf, "auto", False):
        cost += RECIPE
    if any("PSF" in n for n in needs_psf):
        cost += PSF_FIT
    if any("PSF" not in n and not requirements.is_detmodel(n) for n in needs_psf):
        cost += MODEL_FIT
    if any(requirements.is_detmodel(n) for n in needs_psf):
        cost += DETMODEL_FIT
    if getattr(plan.planes, "weight", None) or getattr(plan.planes, "flag", None):
        cost += MAPS
    if plan.assoc is not None:
        cost += ASSOC
    return cost
