"""ASSOC lists: a reference catalog (CSV or FITS table, RA/Dec or pixel columns) turned
into SExtractor's ASSOC list for each image, so that VECTOR_ASSOC and NUMBER_ASSOC work.

The list SExtractor gets has, per reference row: column 1 its row number in the file
(1-based: join VECTOR_ASSOC[0] back to the file with it), columns 2-3 its position (RA,
Dec in degrees with ASSOCCOORD_TYPE WORLD, or x, y in 1-based pixels with PIXEL), then
every other numeric column of the file in its order. ASSOC_DATA 0 copies them all into
VECTOR_ASSOC(n) (its first n). sexstream sets ASSOCSELEC_TYPE ALL: selecting ASSOC keys
never removes rows from a catalog (`--set ASSOCSELEC_TYPE=MATCHED` keeps only matches).
ASSOC_RADIUS (pixels) and ASSOC_TYPE stay the config's. With sky positions, each image
gets only the rows within its footprint (with a margin), so a large reference list costs
little per image.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Column pairs recognised as sky positions (degrees), then as pixel positions; case-blind.
SKY_COLUMNS = (("RA", "DEC"), ("RA_DEG", "DEC_DEG"), ("RAJ2000", "DEJ2000"), ("RAJ2000", "DECJ2000"),
               ("RA_ICRS", "DE_ICRS"), ("RA_J2000", "DEC_J2000"), ("ALPHA_J2000", "DELTA_J2000"),
               ("ALPHAWIN_J2000", "DELTAWIN_J2000"), ("ALPHA_SKY", "DELTA_SKY"), ("ALPHA", "DELTA"))
PIXEL_COLUMNS = (("X", "Y"), ("X_IMAGE", "Y_IMAGE"), ("XWIN_IMAGE", "YWIN_IMAGE"), ("XPOS", "YPOS"))
#: Margin around an image's footprint within which reference rows are kept (degrees).
MARGIN_DEG = 30 / 3600


@dataclass(frozen=True)
class AssocList:
    """A reference list as plain data: its columns and rows (float64), and how SExtractor
    reads them."""

    source: str
    coords: str  # "WORLD" (RA/Dec, degrees) or "PIXEL" (x/y, 1-based pixels)
    columns: tuple[str, ...]  # "ROW", the two position columns, the other numeric columns
    values: bytes  # float64, C order, len(columns) per row
    digest: str  # sha256 of the file's bytes and the column choice

    @property
    def rows(self) -> np.ndarray:
        return np.frombuffer(self.values, dtype=np.float64).reshape(-1, len(self.columns))

    def options(self) -> list[str]:
        """The plan-wide ASSOC options (the per-image ASSOC_NAME comes from `write`)."""
        return ["-ASSOC_PARAMS", "2,3", "-ASSOC_DATA", "0", "-ASSOCCOORD_TYPE", self.coords,
                "-ASSOCSELEC_TYPE", "ALL"]


def _read(path: Path):
    from astropy.table import Table

    if path.suffix.lower() in (".csv", ".txt", ".tsv"):
        fmt = "ascii.csv" if path.suffix.lower() != ".tsv" else "ascii.tab"
        return Table.read(path, format=fmt)
    try:
        return Table.read(path, format="fits")
    except Exception:  # noqa: BLE001 (not FITS: try CSV, the other accepted kind)
        return Table.read(path, format="ascii.csv")


def _pick(names: list[str], columns: str) -> tuple[str, str, str]:
    by_upper = {n.upper(): n for n in names}
    if columns.strip():
        wanted = [c.strip() for c in columns.split(",")]
        if len(wanted) != 2 or any(c.upper() not in by_upper for c in wanted):
            raise ValueError(f"--assoc-columns {columns!r}: two of the file's columns, e.g. RA,DEC "
                             f"(it has {', '.join(names)})")
        a, b = (by_upper[c.upper()] for c in wanted)
        sky = any((a.upper(), b.upper()) == pair for pair in SKY_COLUMNS)
        pixel = any((a.upper(), b.upper()) == pair for pair in PIXEL_COLUMNS)
        return a, b, "PIXEL" if pixel and not sky else "WORLD"
    for pairs, coords in ((SKY_COLUMNS, "WORLD"), (PIXEL_COLUMNS, "PIXEL")):
        for x, y in pairs:
            if x in by_upper and y in by_upper:
                return by_upper[x], by_upper[y], coords
    raise ValueError(f"no RA/Dec or x/y columns found among {', '.join(names)}: name them with "
                     "--assoc-columns RA,DEC (sky, degrees) or --assoc-columns X,Y (pixels)")


def load(path: str | Path, columns: str = "") -> AssocList:
    """Read a reference list (CSV or FITS table) once, on the driver.

    Positions are picked by name (RA/DEC, RAJ2000/DEJ2000, ALPHA_J2000/DELTA_J2000, ...,
    else X/Y, X_IMAGE/Y_IMAGE, ...) unless `columns` ("A,B") names them; a pair named
    like pixels is taken as PIXEL, anything else as WORLD. Rows whose position is not
    finite are dropped. Raises FileNotFoundError or ValueError."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"ASSOC list not found: {path}")
    try:
        table = _read(path)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{path}: not a CSV or FITS table ({exc})") from None
    x, y, coords = _pick(list(table.colnames), columns)
    numeric = [n for n in table.colnames if n not in (x, y) and table[n].ndim == 1
               and np.asarray(table[n]).dtype.kind in "biuf"]
    cols = [np.arange(1, len(table) + 1, dtype=np.float64)]
    for name in (x, y, *numeric):
        values = np.asarray(table[name], dtype=np.float64)
        mask = getattr(table[name], "mask", None)  # a masked (empty) cell is NaN
        cols.append(values if mask is None else np.where(np.asarray(mask), np.nan, values))
    rows = np.column_stack(cols)
    rows = rows[np.isfinite(rows[:, 1]) & np.isfinite(rows[:, 2])]
    digest = hashlib.sha256(path.read_bytes() + repr((x, y, coords)).encode()).hexdigest()
    return AssocList(str(path), coords, ("ROW", x, y, *numeric), np.ascontiguousarray(rows).tobytes(),
                     digest)


def _unit(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    ra, dec = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def within(rows: np.ndarray, footprints: list[dict] | None) -> np.ndarray:
    """`rows` (WORLD) within MARGIN_DEG of the cone around some footprint's corners; all
    rows when an extension has no footprint (no celestial WCS)."""
    if not footprints or any(fp.get("ra") is None for fp in footprints):
        return rows
    pos = _unit(rows[:, 1], rows[:, 2])
    keep = np.zeros(len(rows), bool)
    for fp in footprints:
        corners = _unit(np.asarray(fp["ra"], float), np.asarray(fp["dec"], float))
        centre = corners.sum(axis=0)
        centre /= np.linalg.norm(centre)
        radius = float(np.max(np.arccos(np.clip(corners @ centre, -1, 1))))
        limit = math.cos(min(radius + math.radians(MARGIN_DEG), math.pi))
        keep |= pos @ centre >= limit
    return rows[keep]


def write(assoc: AssocList, workdir: Path, footprints: list[dict] | None) -> list[str]:
    """Write one image's ASSOC list into `workdir`; return its options (-ASSOC_NAME)."""
    rows = assoc.rows
    if assoc.coords == "WORLD":
        rows = within(rows, footprints)
    path = workdir / "assoc.list"
    np.savetxt(path, rows, fmt="%.12g")
    return ["-ASSOC_NAME", str(path)]
