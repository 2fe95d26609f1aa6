"""What an output parameter needs besides the image: a PSF model, a flag map, an ASSOC
list or a SOM file, and the sexstream flag that provides it.

The table is SExtractor 2.25's own behaviour, measured: each of the 428 parameters that
`source-extractor -dp` lists, selected alone on a generated image with the packaged
defaults, either measures or stops with "PSF file not found" (206 keys), "cannot open
flag.fits" (IMAFLAGS_ISO, NIMAFLAGS_ISO), "Assoc-list file not found" (VECTOR_ASSOC,
NUMBER_ASSOC) or "SOM file not found" (FLUX_SOMFIT). `tests/test_all_params.py` checks
this table against the binary. A selection is checked before any image is touched.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping


@dataclass(frozen=True)
class Need:
    """An input some parameters need: its name, what it is, and the flag(s) providing it."""

    name: str  # "psf", "flag", "assoc" or "som"
    what: str
    flags: str
    flag: str  # the flag alone, for short listings

    def short(self) -> str:
        """e.g. "needs a PSF model (--psf)"."""
        return f"needs {self.what} ({self.flag})"


PSF = Need("psf", "a PSF model", "--psf auto (PSFEx on each image) or --psf FILE.psf", "--psf")
FLAG = Need("flag", "a flag map", "--flag hdu:NAME (an HDU of the image's file) or "
            "--flag PATTERN (a sidecar file such as {stem}.flag.fits)", "--flag")
ASSOC = Need("assoc", "an ASSOC list", "--assoc FILE (a CSV or FITS table of RA/Dec or x/y)", "--assoc")
SOM = Need("som", "a SOM file", "--set SOM_NAME=FILE", "--set SOM_NAME=FILE")
NEEDS = {n.name: n for n in (PSF, FLAG, ASSOC, SOM)}

#: Name fragments of the PSF- and model-fitting parameters (all need a PSF model).
_PSF_FRAGMENTS = ("SPHEROID", "DISK", "POINTSOURCE", "HYBRID", "BACKOFFSET")
#: Parameters that need a PSF only when SEEING_FWHM is 0 (the PSF then gives the seeing).
SEEING_FROM_PSF = ("CLASS_STAR", "FWHMPSF_IMAGE", "FWHMPSF_WORLD")
#: Check-image types that make SExtractor load a PSF.
PSF_CHECKIMAGES = ("PSFPROTOS", "-PSFPROTOS", "PCPROTOS", "-PCPROTOS", "PCOPROTOS", "PROFILES",
                   "-PROFILES", "SPHEROIDS", "-SPHEROIDS", "DISKS", "-DISKS")


class MissingInputError(ValueError):
    """A selected parameter whose input was not given (a usage error: exit 2)."""


def is_detmodel(name: str) -> bool:
    """True for the *_DETMODEL parameters: the model fitted on the detection image, which
    SExtractor 2.25 measures only in dual-image mode (alone, it dies of SIGSEGV)."""
    return name.upper().endswith("_DETMODEL")


def need_of(name: str, config: Mapping[str, str] | None = None) -> Need | None:
    """The input parameter `name` needs under `config` (effective SExtractor config
    values by upper-case name), or None when the image is enough."""
    n = name.upper()
    if n in ("IMAFLAGS_ISO", "NIMAFLAGS_ISO"):
        return FLAG
    if n in ("VECTOR_ASSOC", "NUMBER_ASSOC"):
        return ASSOC
    if n == "FLUX_SOMFIT":
        return SOM
    if (("PSF" in n and not n.startswith("FWHMPSF")) or ("MODEL" in n and n != "NOISEAREA_MODEL")
            or any(f in n for f in _PSF_FRAGMENTS) or n in ("XFOCAL_WORLD", "YFOCAL_WORLD")):
        return PSF
    if n in SEEING_FROM_PSF and _seeing_is_zero(config or {}):
        return PSF
    return None


def _seeing_is_zero(config: Mapping[str, str]) -> bool:
    try:
        return float(config.get("SEEING_FWHM", "1") or "1") == 0.0
    except ValueError:
        return False


def describe(name: str, config: Mapping[str, str] | None = None) -> str:
    """What `sexstream params` says a parameter needs ("" for nothing)."""
    need = need_of(name, config)
    if need is None:
        return ""
    text = f"needs {need.what}: {need.flags}"
    if is_detmodel(name):
        text += "; measured in dual-image mode, the image being its own detection image"
    return text


def check(keys: Iterable[str], provided: set[str], config: Mapping[str, str] | None = None) -> None:
    """Raise MissingInputError for the first key (or PSF check-image) whose input is not in
    `provided` (names of `NEEDS`), naming the key and the flag that provides it."""
    config = config or {}
    for key in keys:
        need = need_of(key, config)
        if need is not None and need.name not in provided:
            why = " (SEEING_FWHM is 0: the seeing comes from the PSF)" if key in SEEING_FROM_PSF else ""
            raise MissingInputError(f"{key} needs {need.what}{why}: give {need.flags}")
    for kind in (config.get("CHECKIMAGE_TYPE", "") or "").replace(" ", "").split(","):
        if kind.upper() in PSF_CHECKIMAGES and "psf" not in provided:
            raise MissingInputError(f"CHECKIMAGE_TYPE {kind} needs {PSF.what}: give {PSF.flags}")
