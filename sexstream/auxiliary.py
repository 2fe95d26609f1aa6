"""The inputs of a measurement besides the image: a PSF model, weight and flag maps, an
ASSOC list. Prepared once on the driver from the settings, checked against the selected
keys (a key whose input is missing is a usage error), carried by the plan, and turned
into each image's SExtractor options on the worker."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from sexstream import assoc, planes, psf, requirements, sexconfig
from sexstream.params import Key
from sexstream.planes import Layout
from sexstream.settings import Settings


def prepare(settings: Settings, keys: tuple[Key, ...], config: Path, options: list[str]) -> dict:
    """The PSF source, planes and ASSOC list of a plan (`options` edited in place: a
    PSF_NAME from the config becomes the PSF source); MissingInputError for a key whose
    input is not given."""
    given = dict(zip(options[::2], options[1::2]))
    psf_spec = settings.psf
    if "-PSF_NAME" in given:
        if psf_spec:
            raise ValueError("give the PSF model once: --psf or PSF_NAME, not both")
        psf_spec = given["-PSF_NAME"]
        i = len(options) - 1 - options[::-1].index("-PSF_NAME")
        del options[i:i + 2]
    source = psf.prepare(psf_spec, psfex=settings.psfex, psfex_config=settings.psfex_config,
                         prepass_config=settings.prepass_config, prepass_param=settings.prepass_param)
    overrides = dict(settings.overrides)
    for flag, option in ((settings.weight, "-WEIGHT_IMAGE"), (settings.flag, "-FLAG_IMAGE"),
                         (settings.assoc, "-ASSOC_NAME")):
        if flag and option in given:
            raise ValueError(f"give the {option[1:]} once: its sexstream flag or {option[1:]}, not both")
    maps = planes.from_settings(settings.image_hdu, settings.weight,
                                settings.weight_type or overrides.get("WEIGHT_TYPE", ""), settings.flag)
    reference = assoc.load(settings.assoc, settings.assoc_columns) if settings.assoc else None
    if reference is not None:
        options[:0] = reference.options()  # before the user's overrides, which win
    provided = {name for name, there in (("psf", source), ("flag", maps.flag or "-FLAG_IMAGE" in given),
                                         ("assoc", reference or "-ASSOC_NAME" in given),
                                         ("som", "-SOM_NAME" in given)) if there}
    # sexstream turns check images off unless --set: the config file's CHECKIMAGE_TYPE does not count
    effective = {**sexconfig.values(config), "CHECKIMAGE_TYPE": "NONE", **overrides}
    requirements.check([k.name for k in keys], provided, effective)
    return {"psf": source, "planes": maps, "assoc": reference}


def options(plan: Any, layout: Layout, path: Path, fields: dict, workdir: Path, deadline: float,
            phase: Callable[[str], None], artifacts: dict[str, bytes]) -> list[str]:
    """One image's options for the measuring pass (maps, ASSOC list, PSF model), its inputs
    written into `workdir`. `plan` is the `extractor.Plan`; `fields` the image's record so
    far (footprints, hashes); the PSFEx model goes into `artifacts` with its provenance.
    The recipe's passes end by `deadline` (time.monotonic() seconds). Raises InputError."""
    extra = layout.options(plan.dual)
    if plan.assoc is not None:
        extra += assoc.write(plan.assoc, workdir, fields["footprints"])
    if plan.psf is not None:
        phase("building the PSF model" + (" (PSFEx)" if plan.psf.auto else ""))
        model = psf.build(plan.psf, plan.binary.path, layout.image, layout.options(), workdir, deadline)
        extra += psf.options(model, plan.dual)
        if plan.psf.auto:
            artifacts["psf"] = psf.with_provenance(model, {
                "SXSPATH": str(path), "SXSHASH": fields["content_hash"], "SXSCFG": plan.config_hash,
                "SXSID": fields["image_id"], "PSFEXVER": plan.psf.psfex.version})
    return extra
