"""The oracles of the PSF, map and ASSOC tests: the binaries run by hand, the way a user
would, with the packages' own defaults (never sexstream's code)."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
from astropy.io import fits

from conftest import SYSTEM_SHARE, parse_ascii_head, printed_tolerance

PSFEX_SHARE = Path("/usr/share/psfex")


def recipe_model(image: Path, workdir: Path) -> Path:
    """PSFEx's two-pass recipe by hand: prepsfex.sex + prepsfex.param (with SNR_WIN added,
    which default.psfex needs), then `psfex prepsfex.cat -c default.psfex` with every
    other default but the plot device: Debian's plplot has no PNG device, and psfex then
    exits 1 after writing the model ("plSelectDev: Too many tries"), so plots go to NULL
    (check images and XML are still written). Returns the model file."""
    workdir.mkdir(parents=True, exist_ok=True)
    param = workdir / "prepsfex.param"
    param.write_text((PSFEX_SHARE / "prepsfex.param").read_text() + "SNR_WIN\n")
    subprocess.run([shutil.which("source-extractor"), str(image), "-c", str(PSFEX_SHARE / "prepsfex.sex"),
                    "-PARAMETERS_NAME", str(param), "-FILTER_NAME", str(PSFEX_SHARE / "default.conv"),
                    "-CATALOG_NAME", "prepsfex.cat", "-VERBOSE_TYPE", "QUIET"],
                   cwd=workdir, check=True, capture_output=True)
    subprocess.run([shutil.which("psfex"), "prepsfex.cat", "-c", str(PSFEX_SHARE / "default.psfex"),
                    "-CHECKPLOT_DEV", "NULL"],
                   cwd=workdir, check=True, capture_output=True, stdin=subprocess.DEVNULL)
    return workdir / "prepsfex.psf"


def run_by_hand(image: str, param_lines: list[str], workdir: Path, *extra: str) -> tuple[list[str], list[list[str]]]:
    """`source-extractor IMAGE` with the packaged default.sex (IMAGE may be "a.fits,a.fits"
    or "a.fits[1]"); returns the ASCII_HEAD catalog's (names, token rows)."""
    workdir.mkdir(parents=True, exist_ok=True)
    param = workdir / "hand.param"
    param.write_text("\n".join(param_lines) + "\n")
    cat = workdir / "hand.cat"
    subprocess.run([shutil.which("source-extractor"), image, "-c", str(SYSTEM_SHARE / "default.sex"),
                    "-PARAMETERS_NAME", str(param), "-CATALOG_TYPE", "ASCII_HEAD", "-CATALOG_NAME", str(cat),
                    "-FILTER_NAME", str(SYSTEM_SHARE / "default.conv"),
                    "-STARNNW_NAME", str(SYSTEM_SHARE / "default.nnw"), "-VERBOSE_TYPE", "QUIET", *extra],
                   cwd=workdir, check=True, capture_output=True)
    return parse_ascii_head(cat.read_text())


def flat(value) -> list[float]:
    """A catalog cell as SExtractor prints it: a number, or a vector's numbers (a list, or
    the JSON text of one as `sexstream extract` writes in CSV)."""
    if isinstance(value, str) and value.startswith("["):
        value = json.loads(value)
    if isinstance(value, (list, tuple, np.ndarray)):
        return [float(x) for v in value for x in flat(v)]
    return [float(value)]


def assert_equal_printed(rows: list[dict], keys: list[str], names: list[str], printed: list[list[str]]) -> None:
    """Every row and column of ours equals SExtractor's printed catalog to the printed digit."""
    assert len(rows) == len(printed), f"{len(rows)} rows, SExtractor printed {len(printed)}"
    for i, (mine, tokens) in enumerate(zip(rows, printed), start=1):
        values = [x for k in keys for x in flat(mine[k.split("(")[0]])]
        assert len(values) <= len(tokens), (values, tokens)
        for name, v, token in zip(names, values, tokens):
            assert math.isclose(v, float(token), rel_tol=0, abs_tol=printed_tolerance(token)), (
                f"row {i} {name}: ours {v!r}, SExtractor printed {token}")


def psf_data(model: Path | bytes) -> list[np.ndarray]:
    """The PSF_MASK arrays of a PSFEx model, one per extension."""
    import io

    src = io.BytesIO(model) if isinstance(model, bytes) else model
    with fits.open(src) as hdul:
        return [np.array(h.data["PSF_MASK"]) for h in hdul[1:] if h.header.get("EXTNAME") == "PSF_DATA"]
