"""A SExtractor configuration file (``default.sex``, ``prepsfex.sex``): its values, and the
files it names, made absolute so that a run from any folder finds them."""
from __future__ import annotations

import os
from pathlib import Path

#: Config parameters naming files: relative values are resolved against the config's folder.
FILE_PARAMETERS = ("FILTER_NAME", "STARNNW_NAME", "WEIGHT_IMAGE", "FLAG_IMAGE", "PSF_NAME",
                   "ASSOC_NAME", "SOM_NAME", "DGEO_IMAGE")


def values(config: Path) -> dict[str, str]:
    """Every ``NAME value`` line of `config` (comments dropped), names upper-cased."""
    out = {}
    for line in Path(config).read_text(errors="replace").splitlines():
        body = line.split("#", 1)[0].strip()
        if body:
            name, _, value = body.partition(" ")
            out[name.upper()] = value.strip()
    return out


def named_files(config: Path, overrides: tuple[tuple[str, str], ...] = (), *,
                names: tuple[str, ...] = FILE_PARAMETERS, existing_only: bool = True) -> list[tuple[str, str]]:
    """(parameter, absolute path) of the files SExtractor reads besides the image and the
    config itself: those of `names` the config names (relative ones resolved against the
    config's folder; with `existing_only`, only those that exist there), then every file
    `overrides` name."""
    config = Path(config)
    found = values(config)
    out = []
    for name in names:
        value = found.get(name, "")
        if value and not os.path.isabs(value) and (not existing_only or (config.parent / value).is_file()):
            out.append((name, str(config.parent / value)))
    for name, value in overrides:
        if name in FILE_PARAMETERS:
            out.append((name, value if os.path.isabs(value) else os.path.abspath(value)))
    return out


def file_options(config: Path) -> list[str]:
    """Command-line options (``-FILTER_NAME /abs/default.conv`` ...) for the files `config`
    names that exist beside it: SExtractor would otherwise look in its working folder."""
    return [x for name, value in named_files(config) for x in (f"-{name}", value)]
