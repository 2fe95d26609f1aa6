"""The planes of an exposure: which HDU is the image, and where its weight and flag maps
are (HDUs of the same file, or sidecar files).

Survey files carry their maps beside the pixels: an LSST/HSC ``calexp`` holds IMAGE,
MASK and VARIANCE HDUs. Measured as they are, each plane would be taken for an image;
with ``--weight hdu:VARIANCE --flag hdu:MASK`` only the image plane is measured, with
the variance as SExtractor's weight map (WEIGHT_TYPE MAP_VAR) and the mask as its flag
map (IMAFLAGS_ISO, NIMAFLAGS_ISO). A sidecar pattern (``{stem}.weight.fits``) names a
file beside each image instead.

Nothing is copied: SExtractor reads one HDU of a file with its ``file.fits[N]`` syntax
(N = the HDU's index, 0 for the primary), which gives the same catalog as the plane
extracted to a file of its own.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sexstream.errors import InputError
from sexstream.structure import HDUInfo

WEIGHT_TYPES = ("MAP_WEIGHT", "MAP_VAR", "MAP_RMS")
#: EXTNAMEs taken for variance planes when no weight type is given (LSST/HSC's).
VARIANCE_NAMES = ("VARIANCE", "VAR")
#: File-name endings that `{stem}` drops.
_SUFFIX = re.compile(r"(\.fits?|\.fts)?(\.fz|\.gz|\.bz2)?$", re.IGNORECASE)
#: (sidecar path, "weight" or "flag") -> a file SExtractor can read, and its HDUs.
Opener = Callable[[Path, str], tuple[Path, list[HDUInfo]]]


@dataclass(frozen=True)
class MapSpec:
    """Where a map is: an HDU of the image's file (`hdu` = EXTNAME or index) or a sidecar
    file (`pattern` with {stem}, {name}, {dir}; relative to the image's folder)."""

    hdu: str = ""
    pattern: str = ""

    @classmethod
    def parse(cls, text: str, what: str) -> "MapSpec":
        """``hdu:VARIANCE``, ``hdu:3`` or a file pattern; ValueError when malformed."""
        text = text.strip()
        if text.lower().startswith("hdu:"):
            target = text[4:].strip()
            if not target:
                raise ValueError(f"--{what} hdu: needs an EXTNAME or an HDU index (hdu:VARIANCE, hdu:3)")
            return cls(hdu=target)
        try:
            text.format(stem="s", name="n", dir="d")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"--{what} {text!r}: a sidecar pattern may use {{stem}}, {{name}} and "
                             f"{{dir}} only ({exc})") from None
        return cls(pattern=text)

    def describe(self) -> str:
        return f"hdu:{self.hdu}" if self.hdu else self.pattern


@dataclass(frozen=True)
class Planes:
    """The user's choice of image HDU and maps: plain data that travels in the plan."""

    image_hdu: str = ""  # "" = every image HDU not used as a map
    weight: MapSpec | None = None
    weight_type: str = ""
    flag: MapSpec | None = None

    @property
    def active(self) -> bool:
        return bool(self.image_hdu or self.weight or self.flag)


def from_settings(image_hdu: str = "", weight: str = "", weight_type: str = "", flag: str = "") -> Planes:
    """Validate the flags into `Planes`. The weight type defaults to MAP_VAR for an HDU
    named VARIANCE (or VAR), else MAP_WEIGHT. Raises ValueError."""
    w = MapSpec.parse(weight, "weight") if weight.strip() else None
    f = MapSpec.parse(flag, "flag") if flag.strip() else None
    wtype = weight_type.strip().upper()
    if wtype and wtype not in WEIGHT_TYPES:
        raise ValueError(f"unknown weight type {weight_type!r} (one of {', '.join(WEIGHT_TYPES)})")
    if wtype and not w:
        raise ValueError("--weight-type needs --weight")
    if w and not wtype:
        wtype = "MAP_VAR" if w.hdu.upper() in VARIANCE_NAMES else "MAP_WEIGHT"
    return Planes(image_hdu.strip(), w, wtype, f)


@dataclass(frozen=True)
class Layout:
    """One file's planes as SExtractor gets them: the HDUs it measures (EXT_NUMBER order)
    and its image, weight and flag arguments."""

    images: tuple[HDUInfo, ...]
    image: str
    weight: str | None = None
    weight_type: str = ""
    flag: str | None = None

    def argument(self, dual: bool = False) -> str:
        """The image argument; in dual-image mode the image is its own detection image."""
        return f"{self.image},{self.image}" if dual else self.image

    def options(self, dual: bool = False) -> list[str]:
        """-WEIGHT_TYPE/-WEIGHT_IMAGE/-FLAG_IMAGE (the weight for both images when dual)."""
        out: list[str] = []
        if self.weight:
            two = (lambda v: f"{v},{v}") if dual else (lambda v: v)
            out += ["-WEIGHT_TYPE", two(self.weight_type), "-WEIGHT_IMAGE", two(self.weight)]
        if self.flag:
            out += ["-FLAG_IMAGE", self.flag]
        return out


def _find(hdus: list[HDUInfo], target: str, what: str) -> HDUInfo:
    if target.lstrip("-").isdigit():
        i = int(target)
        if not 0 <= i < len(hdus):
            raise InputError(f"{what}: no HDU {i} (the file has {len(hdus)})")
        found = [hdus[i]]
    else:
        found = [h for h in hdus if str(h.header.get("EXTNAME", "")).strip().upper() == target.upper()]
        if not found:
            names = ", ".join(f"{h.index}:{str(h.header.get('EXTNAME', '')).strip() or '-'}" for h in hdus)
            raise InputError(f"{what}: no HDU named {target} (HDUs {names})")
        if len(found) > 1:
            raise InputError(f"{what}: {len(found)} HDUs are named {target}; give its index (hdu:N)")
    if not found[0].is_image:
        raise InputError(f"{what}: {found[0].describe()} is not an image plane")
    return found[0]


def sidecar(pattern: str, raw: Path) -> Path:
    """The sidecar file `pattern` names for the image `raw` (relative to its folder)."""
    name = pattern.format(stem=_SUFFIX.sub("", raw.name), name=raw.name, dir=str(raw.parent))
    return raw.parent / name


def _same_shape(image: HDUInfo, plane: HDUInfo, what: str) -> None:
    if plane.shape != image.shape:
        raise InputError(f"{what} has shape {'x'.join(map(str, plane.shape))}, "
                         f"the image {'x'.join(map(str, image.shape))}")


def _map_argument(spec: MapSpec, what: str, image: Path, hdus: list[HDUInfo], measured: tuple[HDUInfo, ...],
                  forced: bool, raw: Path, open_file: "Opener") -> str:
    if spec.hdu:
        plane = _find(hdus, spec.hdu, f"{what} map hdu:{spec.hdu}")
        _same_shape(measured[0], plane, f"{what} map hdu:{spec.hdu}")
        return f"{image}[{plane.index}]"
    path = sidecar(spec.pattern, raw)
    if not path.is_file():
        raise InputError(f"{what} map not found: {path} (from --{what} {spec.pattern})")
    local, found = open_file(path, what)
    planes = [h for h in found if h.is_image]
    if forced:  # one HDU of the image: the sidecar's HDU of the same index, or its only plane
        same = [h for h in planes if h.index == measured[0].index]
        plane = same[0] if same else planes[0] if len(planes) == 1 else None
        if plane is None:
            raise InputError(f"{what} map {path.name} has no image HDU {measured[0].index} "
                             f"and {len(planes)} image HDUs")
        _same_shape(measured[0], plane, f"{what} map {path.name}")
        return f"{local}[{plane.index}]"
    if [h.index for h in planes] != [h.index for h in measured]:
        raise InputError(f"{what} map {path.name} has image HDUs {[h.index for h in planes]}, "
                         f"the image {[h.index for h in measured]}: they must match one to one")
    for mine, plane in zip(measured, planes):
        _same_shape(mine, plane, f"{what} map {path.name} HDU {plane.index}")
    return str(local)


def lay_out(planes: Planes, image: Path, hdus: list[HDUInfo], raw: Path,
            open_file: "Opener") -> Layout:
    """Which HDUs of `image` (SExtractor's readable copy of `raw`, with its `hdus`) are
    measured, and with which maps. `open_file(path, what)` makes a sidecar readable
    (decompressed if need be) and returns it with its HDUs. Raises InputError for an image without the planes asked."""
    images = [h for h in hdus if h.is_image]
    if not planes.active:
        return Layout(tuple(images), str(image))
    used = set()
    for spec, what in ((planes.weight, "weight"), (planes.flag, "flag")):
        if spec is not None and spec.hdu:
            used.add(_find(hdus, spec.hdu, f"{what} map hdu:{spec.hdu}").index)
    if planes.image_hdu:
        measured = (_find(hdus, planes.image_hdu, f"image hdu:{planes.image_hdu}"),)
    elif used:
        left = [h for h in images if h.index not in used]
        if len(left) != 1:
            raise InputError(f"{len(left)} image HDUs besides the maps ({', '.join(h.describe() for h in left)}): "
                             "say which is the image with --image-hdu")
        measured = (left[0],)
    else:
        measured = tuple(images)
    forced = bool(planes.image_hdu or used)
    args = {}
    for spec, what in ((planes.weight, "weight"), (planes.flag, "flag")):
        if spec is not None:
            args[what] = _map_argument(spec, what, image, hdus, measured, forced, raw, open_file)
    return Layout(measured, f"{image}[{measured[0].index}]" if forced else str(image),
                  args.get("weight"), planes.weight_type if planes.weight else "", args.get("flag"))
