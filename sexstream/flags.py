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
        **more,
    )
