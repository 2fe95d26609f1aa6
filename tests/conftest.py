"""Shared fixtures: where the real telescope images are, a direct SExtractor run to compare
with, and the environment Spark needs (loopback, the running interpreter)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SEXSTREAM_SHARED", ROOT.parent / "shared"))
REAL = SHARED / "data" / "real"
SYSTEM_SHARE = Path("/usr/share/source-extractor")

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ["PYSPARK_PYTHON"] = sys.executable
os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable


def real_images() -> list[Path]:
    """Every real telescope image in ../shared/data/real (empty when absent)."""
    if not REAL.is_dir():
        return []
    return sorted(p for p in REAL.rglob("*") if p.is_file()
                  and re.search(r"\.fits(\.fz|\.gz|\.bz2)?$|\.fz$", p.name) and p.parent.name != "sep"
                  or p.name == "image.fits")


needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"{REAL} is absent (real images live in ../shared)")


@pytest.fixture(scope="session")
def real_dir() -> Path:
    if not REAL.is_dir():
        pytest.skip(f"{REAL} is absent (real images live in ../shared)")
    return REAL


def direct_run(image: Path, param_lines: list[str], workdir: Path, config: Path | None = None,
               extra: list[str] | None = None) -> tuple[list[str], list[list[str]]]:
    """Run `source-extractor` the plain way (ASCII_HEAD catalog) and return (column names,
    rows of printed tokens). Only tests parse ASCII: it is the oracle's own output."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = config or SYSTEM_SHARE / "default.sex"
    param = workdir / "direct.param"
    param.write_text("\n".join(param_lines) + "\n")
    cat = workdir / "direct.cat"
    link = workdir / "direct_input.fits"
    if not link.exists():
        os.symlink(image, link)
    argv = [shutil.which("source-extractor"), str(link), "-c", str(config),
            "-PARAMETERS_NAME", str(param), "-CATALOG_TYPE", "ASCII_HEAD", "-CATALOG_NAME", str(cat),
            "-FILTER_NAME", str(config.parent / "default.conv"),
            "-STARNNW_NAME", str(config.parent / "default.nnw"),
            "-CHECKIMAGE_TYPE", "NONE", "-VERBOSE_TYPE", "QUIET", *(extra or [])]
    subprocess.run(argv, cwd=workdir, check=True, capture_output=True)
    return parse_ascii_head(cat.read_text())


def parse_ascii_head(text: str) -> tuple[list[str], list[list[str]]]:
    """Column names (vectors expanded as NAME_1..NAME_n) and token rows of an ASCII_HEAD catalog."""
    cols: list[tuple[int, str]] = []
    rows = []
    for line in text.splitlines():
        if line.startswith("#"):
            m = re.match(r"#\s+(\d+)\s+(\S+)", line)
            if m:
                cols.append((int(m.group(1)), m.group(2)))
        elif line.strip():
            rows.append(line.split())
    names: list[str] = []
    ncols = len(rows[0]) if rows else (cols[-1][0] if cols else 0)
    for i, (start, name) in enumerate(cols):
        end = cols[i + 1][0] if i + 1 < len(cols) else ncols + 1
        width = end - start
        names += [name] if width == 1 else [f"{name}_{j + 1}" for j in range(width)]
    return names, rows


def printed_tolerance(token: str) -> float:
    """Half a unit in the last printed digit of `token` (SExtractor's printf formats)."""
    mant, _, exp = token.lower().partition("e")
    decimals = len(mant.split(".")[1]) if "." in mant else 0
    scale = 10.0 ** (int(exp) if exp else 0)
    return 0.5 * 10.0 ** (-decimals) * scale * 1.0001
