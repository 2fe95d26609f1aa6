"""The command-line flags that several commands share, and the settings they give.

Every command that runs SExtractor takes the selection flags (`add_selection_flags`);
`settings_from_args` builds the one `Settings` object from the packaged defaults, a
settings file, and the flags, in that order of precedence.
"""
from __future__ import annotations

import argparse

from sexstream import settings as settings_mod
from sexstream.settings import Settings, split_list


def add_selection_flags(p: argparse.ArgumentParser) -> None:
    """Flags shared by every command that runs SExtractor."""
    p.add_argument("--keys", help="SExtractor output parameters, comma-separated "
                   "(vectors with a size: FLUX_APER(3)); default from conf/sexstream.toml")
    p.add_argument("--fitskeys", help="FITS header keys copied on every row, comma-separated")
    p.add_argument("--config", metavar="FILE",
                   help="a settings file (*.toml) or a SExtractor config file (e.g. default.sex)")
    p.add_argument("--settings", metavar="TOML", help="a settings file (like conf/sexstream.toml)")
    p.add_argument("--sex-config", metavar="FILE", help="a SExtractor config file (default.sex)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                   help="override a SExtractor config parameter (repeatable): --set DETECT_THRESH=3")
    p.add_argument("--binary", help="SExtractor executable (default: source-extractor, sex or "
                   "sextractor on PATH)")
    p.add_argument("--timeout", type=float, help="seconds per image before SExtractor is killed")
    p.add_argument("--max-image-bytes", type=int, dest="max_image_bytes",
                   help="larger inputs (raw or decompressed) are recorded as failed, never extracted")
    g = p.add_argument_group("PSF model, weight and flag maps, ASSOC list (`sexstream params` says "
                             "which keys need them)")
    g.add_argument("--psf", metavar="auto|FILE.psf",
                   help="PSF model for MAG_PSF, SPREAD_MODEL and the other PSF/model-fitting keys: "
                   "auto runs PSFEx on each image (SExtractor first pass + psfex, the packages' "
                   "defaults; the model is kept in <sink>/artifacts/psf), or a PSFEx model file")
    g.add_argument("--image-hdu", metavar="NAME|INDEX",
                   help="the HDU to measure (EXTNAME or index); default: every image HDU not used as a map")
    g.add_argument("--weight", metavar="hdu:NAME|PATTERN",
                   help="weight map: an HDU of the same file (hdu:VARIANCE, hdu:3) or a sidecar file "
                   "pattern relative to the image ({stem}.weight.fits; also {name}, {dir})")
    g.add_argument("--weight-type", metavar="TYPE", choices=("MAP_WEIGHT", "MAP_VAR", "MAP_RMS"),
                   help="MAP_WEIGHT, MAP_VAR or MAP_RMS (default: MAP_VAR for hdu:VARIANCE, else MAP_WEIGHT)")
    g.add_argument("--flag", metavar="hdu:NAME|PATTERN",
                   help="flag map (integer) for IMAFLAGS_ISO/NIMAFLAGS_ISO: hdu:MASK or a sidecar pattern")
    g.add_argument("--assoc", metavar="FILE",
                   help="reference list (CSV or FITS table with RA/Dec in degrees or x/y pixel columns) "
                   "for VECTOR_ASSOC/NUMBER_ASSOC; VECTOR_ASSOC = (row number, position, other numeric columns)")
    g.add_argument("--assoc-columns", metavar="A,B",
                   help="the reference list's position columns (default: found by name, RA/DEC or X/Y)")


#: Flags of `add_selection_flags` named like their settings field.
AUX_FLAGS = ("psf", "image_hdu", "weight", "weight_type", "flag", "assoc", "assoc_columns")


def settings_from_args(args: argparse.Namespace, **more) -> Settings:
    """The settings object from conf/sexstream.toml, a --settings/--config file and flags."""
    toml = getattr(args, "settings", None)
    sex_config = getattr(args, "sex_config", None)
    config = getattr(args, "config", None)
    if config:
        if config.endswith(".toml"):
            toml = toml or config
        else:
            sex_config = sex_config or config
    overrides = []
    for item in getattr(args, "overrides", []) or []:
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise ValueError(f"--set takes NAME=VALUE, got {item!r}")
        overrides.append((name.strip().upper(), value.strip()))
    keys = getattr(args, "keys", None)
    fitskeys = getattr(args, "fitskeys", None)
    return settings_mod.load(
        toml,
        keys=tuple(split_list(keys)) if keys else None,
        fitskeys=tuple(split_list(fitskeys)) if fitskeys is not None else None,
        config=sex_config,
        overrides=tuple(overrides) or None,
        binary=getattr(args, "binary", None),
        timeout=getattr(args, "timeout", None),
        max_image_bytes=getattr(args, "max_image_bytes", None),
        **{name: getattr(args, name, None) for name in AUX_FLAGS},
        **more,
    )
