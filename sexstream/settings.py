"""The one settings object: conf/sexstream.toml, a user's file over it, CLI flags over both.

`Settings` is a frozen dataclass of plain values (str, float, int, tuples), so it
pickles to Spark executors as it is and hashes the same everywhere. The defaults are
package data (`sexstream.conf`, the repository's conf/ folder), so an installed wheel
finds them wherever it runs.
"""
from __future__ import annotations

import dataclasses
import importlib.resources
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping


def conf_file(name: str) -> Path:
    """A file of the packaged defaults (sexstream.toml, default.sex/.conv/.nnw,
    log4j2.properties), as a path on the file system."""
    path = Path(str(importlib.resources.files("sexstream.conf").joinpath(name)))
    if not path.is_file():
        raise FileNotFoundError(f"packaged default {name} is missing from {path.parent}: "
                                "a broken installation")
    return path


DEFAULT_TOML_NAME = "sexstream.toml"


@dataclass(frozen=True)
class Settings:
    """Everything a run needs, as plain data.

    Paths are absolute strings once `load` has resolved them. `overrides` is a tuple
    of (NAME, VALUE) pairs given to SExtractor after its config file.
    """

    raw: str = "var/raw"
    sink: str = "var/sink"
    checkpoint: str = "var/checkpoint"
    keys: tuple[str, ...] = ("NUMBER", "EXT_NUMBER", "FLUX_ISO", "MAG_ISO", "ALPHA_SKY",
                             "DELTA_SKY", "FLUXERR_ISO", "MAGERR_ISO")
    fitskeys: tuple[str, ...] = ("RA_DEG", "DEC_DEG", "FILTER", "RUNID")
    healpix_order: int = 12
    binary: str = ""
    config: str = ""
    overrides: tuple[tuple[str, str], ...] = ()
    timeout: float = 600.0
    max_image_bytes: int = 4_000_000_000
    retries: int = 2
    trigger: float = 0.05
    max_files_per_trigger: int = 64
    master: str = "local[*]"
    files_per_task: int = 0  # 0: auto (sexstream.engine.Engine.slices)
    arrival_mode: str = "auto"  # events | poll | auto (by the raw folder's file system)
    arrival_quiet: float = 1.0
    arrival_stall: float = 600.0
    arrival_poll: float = 0.0  # 0: auto (10 s with events, 2 s when polling)
    arrival_grace: float = 60.0  # kept for old settings files; unused since the journal
    maintenance_every: float = 3600.0
    retention_hours: float = 168.0
    log_retention_hours: float = 24.0  # Delta log entries (time travel) kept this long
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8765
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0  # 0: no endpoint server of its own (the dashboard serves the routes too)
    log_format: str = "text"  # text | json
    ready_backlog_age: float = 600.0
    ready_trigger_age: float = 60.0
    psf: str = ""  # "", "auto" (PSFEx on each image) or a PSFEx model file
    psfex: str = ""  # PSFEx binary; empty: psfex on PATH
    psfex_config: str = ""  # empty: /usr/share/psfex/default.psfex
    prepass_config: str = ""  # the first pass's SExtractor config; empty: prepsfex.sex
    prepass_param: str = ""  # the first pass's .param; empty: prepsfex.param (+ SNR_WIN)
    image_hdu: str = ""  # EXTNAME or index of the image HDU; empty: every image HDU not a map
    weight: str = ""  # hdu:NAME|INDEX or a sidecar pattern ({stem}.weight.fits)
    weight_type: str = ""  # MAP_WEIGHT, MAP_VAR, MAP_RMS; empty: MAP_VAR for hdu:VARIANCE
    flag: str = ""  # hdu:NAME|INDEX or a sidecar pattern
    assoc: str = ""  # a reference list (CSV or FITS table)
    assoc_columns: str = ""  # its position columns ("RA,DEC" or "X,Y"); empty: by name

    @property
    def config_path(self) -> Path:
        """The SExtractor config file in effect (the packaged default.sex if none given)."""
        return Path(self.config) if self.config else conf_file("default.sex")

    def replace(self, **changes: Any) -> "Settings":
        """A copy with `changes` applied (None values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


_TOML_MAP = {
    ("paths", "raw"): "raw",
    ("paths", "sink"): "sink",
    ("paths", "checkpoint"): "checkpoint",
    ("catalog", "keys"): "keys",
    ("catalog", "fitskeys"): "fitskeys",
    ("catalog", "healpix_order"): "healpix_order",
    ("sextractor", "binary"): "binary",
    ("sextractor", "config"): "config",
    ("sextractor", "set"): "overrides",
    ("sextractor", "timeout"): "timeout",
    ("sextractor", "max_image_bytes"): "max_image_bytes",
    ("sextractor", "retries"): "retries",
    ("stream", "trigger"): "trigger",
    ("stream", "max_files_per_trigger"): "max_files_per_trigger",
    ("stream", "master"): "master",
    ("stream", "files_per_task"): "files_per_task",
    ("stream", "arrival_mode"): "arrival_mode",
    ("stream", "arrival_quiet"): "arrival_quiet",
    ("stream", "arrival_stall"): "arrival_stall",
    ("stream", "arrival_poll"): "arrival_poll",
    ("stream", "arrival_grace"): "arrival_grace",
    ("maintenance", "every"): "maintenance_every",
    ("maintenance", "retention_hours"): "retention_hours",
    ("maintenance", "log_retention_hours"): "log_retention_hours",
    ("dashboard", "host"): "dashboard_host",
    ("dashboard", "port"): "dashboard_port",
    ("service", "metrics_host"): "metrics_host",
    ("service", "metrics_port"): "metrics_port",
    ("service", "log_format"): "log_format",
    ("service", "ready_backlog_age"): "ready_backlog_age",
    ("service", "ready_trigger_age"): "ready_trigger_age",
    ("psf", "model"): "psf",
    ("psf", "psfex"): "psfex",
    ("psf", "config"): "psfex_config",
    ("psf", "prepass_config"): "prepass_config",
    ("psf", "prepass_param"): "prepass_param",
    ("maps", "image_hdu"): "image_hdu",
    ("maps", "weight"): "weight",
    ("maps", "weight_type"): "weight_type",
    ("maps", "flag"): "flag",
    ("assoc", "file"): "assoc",
    ("assoc", "columns"): "assoc_columns",
}


def _from_toml(doc: Mapping[str, Any], source: Path) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for section, table in doc.items():
        if not isinstance(table, dict):
            raise ValueError(f"{source}: top-level key {section!r} must be a [section]")
        for key, value in table.items():
            name = _TOML_MAP.get((section, key))
            if name is None:
                known = ", ".join(f"{s}.{k}" for s, k in _TOML_MAP)
                raise ValueError(f"{source}: unknown setting {section}.{key} (known: {known})")
            values[name] = value
    return values


def _normalise(values: dict[str, Any], base: Path) -> dict[str, Any]:
    out = dict(values)
    for name in ("keys", "fitskeys"):
        if name in out:
            v = out[name]
            out[name] = tuple(split_list(v) if isinstance(v, str) else (str(x).strip() for x in v))
    if "overrides" in out:
        v = out["overrides"]
        items = v.items() if isinstance(v, Mapping) else v
        out["overrides"] = tuple((str(k).strip().upper(), str(x).strip()) for k, x in items)
    for name in ("raw", "sink", "checkpoint", "config", "binary", "psf", "psfex", "psfex_config",
                 "prepass_config", "prepass_param", "assoc"):
        v = out.get(name)
        if name == "psf" and str(v).strip().lower() == "auto":
            continue
        if v and (name not in ("binary", "psfex") or "/" in str(v)):
            out[name] = str((base / Path(str(v)).expanduser()).resolve())
    return out


def split_list(text: str) -> list[str]:
    """Split "A,B, C(3)" into keys, keeping commas inside parentheses: VIGNET(15,15)."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur).strip())
    return [p for p in parts if p]


def load(settings_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the settings: packaged defaults, then `settings_file` (TOML), then `overrides`.

    `overrides` use the field names of `Settings`; None means "not given". Paths from
    TOML files are resolved against the current directory, like CLI paths.
    """
    cwd = Path.cwd()
    values: dict[str, Any] = {}
    for source in (conf_file(DEFAULT_TOML_NAME), Path(settings_file) if settings_file else None):
        if source is None:
            continue
        if not source.is_file():
            raise FileNotFoundError(f"settings file not found: {source}")
        with open(source, "rb") as fh:
            values.update(_from_toml(tomllib.load(fh), source))
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(given) - {f.name for f in dataclasses.fields(Settings)}
    if unknown:
        raise TypeError(f"unknown settings: {sorted(unknown)}")
    if "overrides" in given and "overrides" in values:
        merged = dict(_normalise({"overrides": values["overrides"]}, cwd)["overrides"])
        merged.update(_normalise({"overrides": given["overrides"]}, cwd)["overrides"])
        given["overrides"] = tuple(merged.items())
    values.update(given)
    return Settings(**_normalise(values, cwd))
