"""PSF models for SExtractor's PSF and model fitting (MAG_PSF, SPREAD_MODEL, ...): a model
the user gives, or PSFEx's standard two-pass recipe run on each image.

The recipe (`--psf auto`), with the packages' own defaults (Debian `psfex` 3.21.1):

1. SExtractor with ``prepsfex.sex`` and ``prepsfex.param`` (plus SNR_WIN, which
   ``default.psfex``'s SAMPLE_MINSN needs: without it PSFEx stops with "SNR_WIN not
   found in catalog") writes a FITS_LDAC catalog with the stars' vignettes;
2. PSFEx with ``default.psfex`` fits a model to it (check plots, check images and XML
   turned off: they do not change the model, byte for byte);
3. the measuring pass runs with ``PSF_NAME`` set to that model.

A frame where PSFEx finds no star to model is an image-level failure ("no PSF model:
PSFEx accepted no star ..."): PSFEx itself only warns and writes an empty model.
"""
from __future__ import annotations

import functools
import hashlib
import io
import re
import shutil
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from astropy.io import fits

from sexstream import process, sexconfig
from sexstream.errors import InputError

AUTO = "auto"
#: Where Debian's psfex package keeps default.psfex, prepsfex.sex and prepsfex.param.
SHARE = Path("/usr/share/psfex")
#: The catalog keys default.psfex reads that the packaged prepsfex.param may lack.
PREPASS_EXTRA_KEYS = ("SNR_WIN",)
#: PSFEx options that only make side files (plots, check images, XML, chatter).
QUIET_OPTIONS = ("-CHECKPLOT_TYPE", "NONE", "-CHECKIMAGE_TYPE", "NONE", "-WRITE_XML", "N",
                 "-VERBOSE_TYPE", "QUIET", "-NTHREADS", "1")


class PSFExNotFoundError(RuntimeError):
    """No usable PSFEx binary or packaged defaults: reported before any image."""


@dataclass(frozen=True)
class PSFEx:
    """A PSFEx executable: absolute path and version string (e.g. ``3.21.1``)."""

    path: str
    version: str


@functools.lru_cache(maxsize=4)
def find_psfex(configured: str = "") -> PSFEx:
    """The PSFEx binary (`configured` path or name, else `psfex` on PATH) and its version."""
    found = shutil.which(configured or "psfex")
    if not found:
        raise PSFExNotFoundError(f"PSFEx binary {configured or 'psfex'!r} not found: install it "
                                 "(Debian: apt-get install psfex) or set psf.psfex")
    out = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL)
    m = re.search(r"version\s+([0-9][0-9A-Za-z.\-]*)", out.stdout + out.stderr)
    if not m:
        raise PSFExNotFoundError(f"{found} does not look like PSFEx: `--version` printed "
                                 f"{(out.stdout + out.stderr).strip()[:120]!r}")
    return PSFEx(str(Path(found).resolve()), m.group(1))


@dataclass(frozen=True)
class PsfSource:
    """Where each image's PSF model comes from: plain data that travels in the plan.

    `model` holds the bytes of a given model (``--psf FILE``); the recipe fields are
    filled for ``--psf auto``."""

    mode: str  # AUTO or "file"
    model: bytes = b""
    model_name: str = ""
    psfex: PSFEx | None = None
    prepass_config: str = ""
    prepass_param: str = ""  # the text of the first pass's .param file
    prepass_options: tuple[str, ...] = ()  # the first pass config's files, made absolute
    psfex_config: str = ""

    @property
    def auto(self) -> bool:
        return self.mode == AUTO

    def fingerprint(self) -> bytes:
        """Everything that decides the model, for the plan's config hash."""
        h = hashlib.sha256(repr((self.mode, self.model_name, self.psfex, self.prepass_param,
                                 self.prepass_options)).encode())
        h.update(self.model)
        for name in (self.prepass_config, self.psfex_config):
            if name:
                h.update(Path(name).read_bytes())
        return h.digest()


def _default(given: str, name: str) -> Path:
    path = Path(given) if given else SHARE / name
    if not path.is_file():
        raise PSFExNotFoundError(f"{path} not found" + ("" if given else
                                 " (PSFEx's packaged defaults: Debian package psfex)"))
    return path.resolve()


def prepass_param_text(param_file: Path) -> str:
    """The first pass's .param: `param_file`'s bare keys, plus PREPASS_EXTRA_KEYS."""
    keys = [ln.split("#", 1)[0].split()[0] for ln in param_file.read_text().splitlines()
            if ln.split("#", 1)[0].strip()]
    present = {k.split("(")[0].upper() for k in keys}
    keys += [k for k in PREPASS_EXTRA_KEYS if k not in present]
    return "\n".join(keys) + "\n"


def prepare(spec: str, *, psfex: str = "", psfex_config: str = "", prepass_config: str = "",
            prepass_param: str = "") -> PsfSource | None:
    """The PSF source for `spec`: "" (none), "auto" (the recipe) or a PSFEx model file.

    Raises PSFExNotFoundError (no binary or defaults), FileNotFoundError or ValueError (a
    file that is not a PSFEx model) before any image is touched."""
    spec = spec.strip()
    if not spec:
        return None
    if spec.lower() == AUTO:
        config = _default(prepass_config, "prepsfex.sex")
        return PsfSource(
            AUTO, psfex=find_psfex(psfex), prepass_config=str(config),
            prepass_param=prepass_param_text(_default(prepass_param, "prepsfex.param")),
            prepass_options=tuple(sexconfig.file_options(config)),
            psfex_config=str(_default(psfex_config, "default.psfex")))
    path = Path(spec).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"PSF model not found: {path} (--psf takes auto or a .psf file)")
    data = path.read_bytes()
    counts = accepted_counts(data, str(path))  # raises ValueError unless a PSFEx model
    if not all(counts):
        raise ValueError(f"{path} is an empty PSF model: PSFEx accepted no star "
                         f"(ACCEPTED = 0 in extension {counts.index(0) + 1})")
    return PsfSource("file", model=data, model_name=str(path))


def accepted_counts(model: bytes, name: str) -> list[int]:
    """The stars PSFEx accepted, per PSF_DATA extension of `model`; ValueError when
    `model` is not a PSFEx model."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(io.BytesIO(model)) as hdul:
                counts = [int(h.header.get("ACCEPTED", 0)) for h in hdul[1:]
                          if h.header.get("EXTNAME") == "PSF_DATA"]
    except Exception as exc:  # noqa: BLE001 (astropy raises many kinds for a non-FITS file)
        raise ValueError(f"{name} is not a PSFEx model: {exc}") from None
    if not counts:
        raise ValueError(f"{name} is not a PSFEx model: no PSF_DATA extension")
    return counts


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.001)


def build(source: PsfSource, sextractor: str, image: str, map_options: Sequence[str],
          workdir: Path, deadline: float) -> Path:
    """The PSF model for one image, in `workdir`: the given one, or the recipe's.

    `image` is SExtractor's image argument (``image.fits`` or ``image.fits[1]``) and
    `map_options` the weight/flag options of the measuring pass, used by the first pass
    too. Bounded by `deadline` (time.monotonic() seconds). Raises InputError."""
    if not source.auto:
        path = workdir / "model.psf"
        path.write_bytes(source.model)
        return path
    assert source.psfex is not None
    param = workdir / "prepsfex.param"
    param.write_text(source.prepass_param)
    cat = workdir / "prepsfex.cat"
    argv = [sextractor, image, "-c", source.prepass_config, *source.prepass_options,
            "-PARAMETERS_NAME", str(param), "-CATALOG_TYPE", "FITS_LDAC", "-CATALOG_NAME", str(cat),
            "-CHECKIMAGE_TYPE", "NONE", "-WRITE_XML", "N", "-VERBOSE_TYPE", "QUIET", *map_options]
    done = process.run(argv, workdir, timeout=_left(deadline), name="SExtractor (PSFEx's first pass)")
    if done.returncode != 0 or not cat.is_file():
        raise InputError(f"SExtractor's first pass for PSFEx failed (exit {done.returncode}): "
                         f"{done.tail or 'no message'}")
    argv = [source.psfex.path, str(cat), "-c", source.psfex_config, "-PSF_DIR", str(workdir),
            "-PSF_SUFFIX", ".psf", *QUIET_OPTIONS]
    done = process.run(argv, workdir, timeout=_left(deadline), name="PSFEx")
    model = workdir / "prepsfex.psf"
    if done.returncode != 0 or not model.is_file():
        raise InputError(f"PSFEx failed (exit {done.returncode}): {done.tail or 'no message'}")
    counts = accepted_counts(model.read_bytes(), "PSFEx's output")
    if not all(counts):
        which = ", ".join(f"extension {i}" for i, n in enumerate(counts, start=1) if not n)
        said = "; ".join(w.strip("! ") for w in re.findall(r"WARNING: ([^\n]+)", done.stderr)) or "no message"
        raise InputError(f"no PSF model: PSFEx accepted no star in {which} (PSFEx: {said})")
    return model


def options(model: Path, dual: bool = False) -> list[str]:
    """The measuring pass's PSF option; in dual-image mode the model serves both images."""
    return ["-PSF_NAME", f"{model},{model}" if dual else str(model)]


def with_provenance(model: Path, cards: dict[str, str]) -> bytes:
    """`model`'s bytes with `cards` (8-character keywords) added to its primary header;
    the PSF_DATA extensions are left as PSFEx wrote them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fits.open(model) as hdul:
            for key, value in cards.items():  # FITS headers are ASCII: escape the rest
                hdul[0].header[key] = value.encode("ascii", "backslashreplace").decode()
            out = io.BytesIO()
            hdul.writeto(out)
    return out.getvalue()
