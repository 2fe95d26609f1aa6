"""Realistic `images` and `sources` Delta tables (docs/tables.md) for dashboard and coverage tests.

A `Pointing` is one image of a 2x2-CCD camera (4 extensions of 0.25 deg x 0.25 deg with
a 0.01 deg gap) centred at (ra, dec) degrees. `write_batch` appends one streaming
micro-batch of such images to `<sink>/sources` then `<sink>/images`, the way the
pipeline commits: sources first, then the image verdicts. Everything is vectorised, so
`scripts/bench_dashboard.py` can write 10 M source rows in chunks.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
from astropy import units as u
from astropy_healpix import lonlat_to_healpix
from deltalake import write_deltalake

from sexstream.survey import from_tangent as tangent_to_sky  # (ra0, dec0, xi, eta) -> (ra, dec)

#: CCD side (degrees) and gap between CCDs (degrees).
CCD_SIZE = 0.25
CCD_GAP = 0.01
#: CCD size in pixels (so a pixel is 0.25 deg / 2048 = 0.44").
NPIX = 2048
HEALPIX_ORDER = 12
CONFIG_HASH = "c0ffee00" * 4

FOOTPRINT_TYPE = pa.list_(pa.struct([("ext_number", pa.int32()), ("hdu", pa.int32()),
                                     ("ra", pa.list_(pa.float64())),
                                     ("dec", pa.list_(pa.float64()))]))
TS = pa.timestamp("us", tz="UTC")

SOURCES_SCHEMA = pa.schema([
    ("NUMBER", pa.int32()), ("EXT_NUMBER", pa.int16()), ("FLUX_ISO", pa.float32()),
    ("MAG_ISO", pa.float32()), ("ALPHA_SKY", pa.float64()), ("DELTA_SKY", pa.float64()),
    ("FLUXERR_ISO", pa.float32()), ("MAGERR_ISO", pa.float32()),
    ("ALPHA_J2000", pa.float64()), ("DELTA_J2000", pa.float64()),
    ("X_IMAGE", pa.float32()), ("Y_IMAGE", pa.float32()), ("FLAGS", pa.int16()),
    ("RA_DEG", pa.float64()), ("DEC_DEG", pa.float64()), ("FILTER", pa.string()),
    ("RUNID", pa.string()), ("path", pa.string()), ("image_id", pa.string()),
    ("config_hash", pa.string()), ("healpix", pa.int64()), ("batch_id", pa.int64()),
    ("ingest_time", TS),
])

IMAGES_SCHEMA = pa.schema([
    ("path", pa.string()), ("image_id", pa.string()), ("content_hash", pa.string()),
    ("size", pa.int64()), ("mtime", TS), ("status", pa.string()), ("reason", pa.string()),
    ("n_sources", pa.int64()), ("n_extensions", pa.int32()), ("footprints", FOOTPRINT_TYPE),
    ("RA_DEG", pa.float64()), ("DEC_DEG", pa.float64()), ("FILTER", pa.string()),
    ("RUNID", pa.string()), ("obs_mjd", pa.float64()), ("sextractor_version", pa.string()),
    ("config_hash", pa.string()), ("host", pa.string()), ("started", TS),
    ("duration_s", pa.float64()), ("attempts", pa.int32()), ("batch_id", pa.int64()),
    ("ingest_time", TS),
])

# CCD centres in the tangent plane (degrees), extension numbers 1..4.
_OFF = (CCD_SIZE + CCD_GAP) / 2
CCD_CENTRES = ((-_OFF, _OFF), (_OFF, _OFF), (-_OFF, -_OFF), (_OFF, -_OFF))


@dataclass(frozen=True)
class Pointing:
    """One image: centre (degrees), filter, verdict and how many sources it yields."""

    ra: float
    dec: float
    filter: str = "r"
    n_sources: int = 200
    status: str = "ok"
    reason: str | None = None
    obs_mjd: float | None = None
    path: str | None = None
    runid: str = "R2025A"
    extras: dict = field(default_factory=dict)


def extension_corners(ra: float, dec: float) -> list[dict]:
    """The footprints value of one image: 4 extensions, corners in pixel order."""
    h = CCD_SIZE / 2
    out = []
    for ext, (cx, cy) in enumerate(CCD_CENTRES, start=1):
        # Pixel x runs with RA decreasing (east left), so corner order is (+h,-h), (-h,-h)...
        xi = np.array([cx + h, cx - h, cx - h, cx + h])
        eta = np.array([cy - h, cy - h, cy + h, cy + h])
        r, d = tangent_to_sky(np.full(4, ra), np.full(4, dec), xi, eta)
        out.append({"ext_number": ext, "hdu": ext, "ra": r.tolist(), "dec": d.tolist()})
    return out


def image_path(p: Pointing, index: int, batch_id: int) -> str:
    """The raw file path of a pointing (its own, or a made-up one under /data/raw)."""
    return p.path or f"/data/raw/night/b{batch_id:05d}_{index:04d}_{p.filter}.fits"


def image_id(path: str) -> str:
    """A stable hex identity for a made-up path."""
    return hashlib.blake2b(path.encode(), digest_size=16).hexdigest()


def images_table(pointings: Sequence[Pointing], *, batch_id: int, ingest_time: datetime,
                 seed: int = 0) -> pa.Table:
    """The images rows of one batch, per docs/tables.md."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, p in enumerate(pointings):
        path = image_path(p, i, batch_id)
        ok = p.status == "ok"
        duration = float(rng.uniform(0.5, 4.0))
        obs = p.obs_mjd if p.obs_mjd is not None else (
            ingest_time.timestamp() - rng.uniform(30, 300)) / 86400.0 + 40587.0
        rows.append({
            "path": path, "image_id": image_id(path),
            "content_hash": hashlib.blake2b(path.encode(), digest_size=16, salt=b"c").hexdigest(),
            "size": 4 * NPIX * NPIX * 4 + 2880 * 5,
            "mtime": ingest_time - timedelta(seconds=float(rng.uniform(2, 12))),
            "status": p.status, "reason": p.reason,
            "n_sources": p.n_sources if ok else 0, "n_extensions": 4 if ok else 0,
            "footprints": extension_corners(p.ra, p.dec) if p.status != "incomplete" else None,
            "RA_DEG": p.ra, "DEC_DEG": p.dec, "FILTER": p.filter, "RUNID": p.runid,
            "obs_mjd": obs, "sextractor_version": "2.25.0", "config_hash": CONFIG_HASH,
            "host": "worker-1", "started": ingest_time - timedelta(seconds=duration + 0.5),
            "duration_s": duration, "attempts": 1 if ok else 3,
            "batch_id": batch_id, "ingest_time": ingest_time, **p.extras,
        })
    return pa.Table.from_pylist(rows, schema=IMAGES_SCHEMA)


def sources_table(pointings: Sequence[Pointing], *, batch_id: int, ingest_time: datetime,
                  seed: int = 0) -> pa.Table:
    """The sources rows of one batch: n_sources uniform over each ok image's 4 CCDs."""
    rng = np.random.default_rng(seed)
    ok = [(i, p) for i, p in enumerate(pointings) if p.status == "ok" and p.n_sources > 0]
    if not ok:
        return SOURCES_SCHEMA.empty_table()
    counts = np.array([p.n_sources for _, p in ok], np.int64)
    n = int(counts.sum())
    img = np.repeat(np.arange(len(ok)), counts)
    ra0 = np.array([p.ra for _, p in ok], float)[img]
    dec0 = np.array([p.dec for _, p in ok], float)[img]
    ext = rng.integers(0, 4, n)
    centres = np.array(CCD_CENTRES)
    px = rng.uniform(0.5, NPIX + 0.5, n)
    py = rng.uniform(0.5, NPIX + 0.5, n)
    xi = centres[ext, 0] + CCD_SIZE / 2 - (px - 0.5) / NPIX * CCD_SIZE
    eta = centres[ext, 1] - CCD_SIZE / 2 + (py - 0.5) / NPIX * CCD_SIZE
    ra, dec = tangent_to_sky(ra0, dec0, xi, eta)
    hp = np.asarray(lonlat_to_healpix(ra * u.deg, dec * u.deg, 1 << HEALPIX_ORDER,
                                      order="nested"), np.int64)
    mag = rng.uniform(16.0, 24.0, n).astype(np.float32)
    flux = (10 ** (-0.4 * (mag - 30.0))).astype(np.float32)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    number = (np.arange(n) - np.repeat(starts, counts) + 1).astype(np.int32)
    paths = [image_path(p, i, batch_id) for i, p in ok]
    ids = [image_id(x) for x in paths]
    take = pa.array(img, pa.int32())
    per_image = lambda values, typ: pa.array(values, typ).take(take)
    columns = {
        "NUMBER": number, "EXT_NUMBER": (ext + 1).astype(np.int16), "FLUX_ISO": flux,
        "MAG_ISO": mag, "ALPHA_SKY": ra, "DELTA_SKY": dec,
        "FLUXERR_ISO": (np.sqrt(flux) + 5.0).astype(np.float32),
        "MAGERR_ISO": rng.uniform(0.001, 0.3, n).astype(np.float32),
        "ALPHA_J2000": ra, "DELTA_J2000": dec, "X_IMAGE": px.astype(np.float32),
        "Y_IMAGE": py.astype(np.float32), "FLAGS": np.zeros(n, np.int16),
        "RA_DEG": ra0, "DEC_DEG": dec0,
        "FILTER": per_image([p.filter for _, p in ok], pa.string()),
        "RUNID": per_image([p.runid for _, p in ok], pa.string()),
        "path": per_image(paths, pa.string()), "image_id": per_image(ids, pa.string()),
        "config_hash": pa.array([CONFIG_HASH]).take(np.zeros(n, np.int32)), "healpix": hp,
        "batch_id": np.full(n, batch_id, np.int64),
        "ingest_time": pa.array(np.full(n, int(ingest_time.timestamp() * 1e6), np.int64)).cast(TS),
    }
    arrays = [col if isinstance(col, pa.Array) else pa.array(col, f.type)
              for f, col in ((f, columns[f.name]) for f in SOURCES_SCHEMA)]
    return pa.Table.from_arrays(arrays, schema=SOURCES_SCHEMA)


def write_batch(sink: str | Path, pointings: Sequence[Pointing], *, batch_id: int,
                ingest_time: datetime | None = None, seed: int | None = None,
                sources: bool = True) -> tuple[pa.Table, pa.Table]:
    """Append one micro-batch to `<sink>/sources` (if any rows) then `<sink>/images`.

    Returns (images rows, sources rows) as written.
    """
    ingest_time = ingest_time or datetime.now(timezone.utc)
    seed = batch_id if seed is None else seed
    src = sources_table(pointings, batch_id=batch_id, ingest_time=ingest_time, seed=seed)
    img = images_table(pointings, batch_id=batch_id, ingest_time=ingest_time, seed=seed)
    if sources and src.num_rows:
        write_deltalake(str(Path(sink) / "sources"), src, mode="append")
    write_deltalake(str(Path(sink) / "images"), img, mode="append")
    return img, src


def random_pointings(n: int, *, seed: int = 0, filters: Sequence[str] = ("g", "r", "i", "z"),
                     n_sources: int = 200, dec_range: tuple[float, float] = (-60.0, 30.0),
                     ra_range: tuple[float, float] = (0.0, 360.0)) -> list[Pointing]:
    """n pointings in fields of a few adjacent tiles, like a survey's night."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        ra = rng.uniform(*ra_range)
        dec = float(np.degrees(np.arcsin(rng.uniform(*np.sin(np.radians(dec_range))))))
        for k in range(min(n - len(out), int(rng.integers(1, 6)))):
            step = 0.55 * k
            out.append(Pointing(ra=(ra + step / max(np.cos(np.radians(dec)), 0.1)) % 360.0,
                                dec=dec, filter=str(rng.choice(list(filters))),
                                n_sources=n_sources))
    return out
