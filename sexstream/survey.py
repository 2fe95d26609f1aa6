"""Synthetic survey sinks: the two Delta tables a long-running survey would have filled.

A seeded generator of *catalogs* (not pixels: `sexstream.synthetic` makes images) for
demos, tests and benchmarks of the readers of a sink (cone searches, light curves,
the dashboard) at 10^7-10^9 rows. The sky holds a fixed population of objects, so a
field observed again shows the same objects again (with new noise, and light curves
for the variable ones). A camera of CCDs (a mosaic sharing one tangent plane) points
along tracks: fields tile stripes of Declination, one stripe after the other, the
whole footprint once per epoch, each epoch in the next filter, a few hundred exposures
a night. Each exposure is one image (one extension per CCD) whose sources are the
objects inside its CCDs and brighter than that exposure's limit.

Rows are written the way the daemon writes them: `sexstream.catalog.with_provenance`
and `sexstream.schema` make the rows, `sexstream.parts.write_part` one Parquet part per
image, `Sink.commit` (`sexstream.transaction.commit`) one commit per table and
micro-batch (sources, then images), carrying the transaction (app_id, batch_id).

Conventions: angles in degrees (ICRS), magnitudes with a zero point of 30 (MAG_ZEROPOINT),
fluxes in ADU, times in MJD (days, UTC).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import xxhash
from astropy import units as u
from astropy_healpix import HEALPix

from sexstream.catalog import with_provenance
from sexstream.parts import write_part
from sexstream.population import OBJECT_ORDER, brighter_than, objects_in
from sexstream.schema import IMAGES, SOURCES, header_column, images_table, stamp
from sexstream.sink import Sink
from sexstream.transaction import committed_version

#: Magnitude zero point: MAG = 30 - 2.5 log10(FLUX).
ZEROPOINT = 30.0
#: MJD of 1970-01-01.
MJD_UNIX = 40587.0

#: SExtractor keys the generator can fill, with SExtractor's own FITS types.
KEY_TYPES = {
    "NUMBER": pa.int32(), "EXT_NUMBER": pa.int16(), "X_IMAGE": pa.float32(),
    "Y_IMAGE": pa.float32(), "ALPHA_J2000": pa.float64(), "DELTA_J2000": pa.float64(),
    "ALPHA_SKY": pa.float64(), "DELTA_SKY": pa.float64(), "MAG_ISO": pa.float32(),
    "MAGERR_ISO": pa.float32(), "FLUX_ISO": pa.float32(), "FLUXERR_ISO": pa.float32(),
    "MAG_AUTO": pa.float32(), "MAGERR_AUTO": pa.float32(), "FLUX_AUTO": pa.float32(),
    "FLUXERR_AUTO": pa.float32(), "FLAGS": pa.int16(), "CLASS_STAR": pa.float32(),
    "FWHM_IMAGE": pa.float32(),
}
#: Header keys the generator can fill.
HEADER_KEYS = ("RA_DEG", "DEC_DEG", "FILTER", "RUNID", "MJD-OBS", "DATE-OBS", "EXPTIME",
               "AIRMASS", "OBJECT")
#: Default selection: the one conf/sexstream.toml ships.
DEFAULT_KEYS = ("NUMBER", "EXT_NUMBER", "FLUX_ISO", "MAG_ISO", "ALPHA_SKY", "DELTA_SKY",
                "FLUXERR_ISO", "MAGERR_ISO", "ALPHA_J2000", "DELTA_J2000", "X_IMAGE", "Y_IMAGE",
                "FLAGS")
DEFAULT_FITSKEYS = ("RA_DEG", "DEC_DEG", "FILTER", "RUNID")
#: Depth (5-sigma magnitude) offset of each band from the exposure's limit.
BAND_DEPTH = {"u": -1.0, "g": 0.2, "r": 0.0, "i": -0.3, "z": -0.8, "y": -1.6}
#: Colour of the population: magnitude in a band = r + offset * colour index.
BAND_COLOUR = {"u": 2.2, "g": 1.0, "r": 0.0, "i": -0.5, "z": -0.8, "y": -0.9}


@dataclass(frozen=True)
class Camera:
    """A mosaic of `grid` = (columns, rows) CCDs of `ccd` = (nx, ny) pixels, `gap` pixels
    apart, `pixel_scale` arcsec/pixel, sharing one tangent plane, north up, east left."""

    ccd: tuple[int, int] = (2048, 4096)
    grid: tuple[int, int] = (4, 2)
    gap: int = 100
    pixel_scale: float = 0.263

    @property
    def scale(self) -> float:
        """Degrees per pixel."""
        return self.pixel_scale / 3600.0

    @property
    def size(self) -> tuple[float, float]:
        """(width, height) of the whole mosaic, degrees."""
        (nx, ny), (cols, rows) = self.ccd, self.grid
        return ((cols * nx + (cols - 1) * self.gap) * self.scale,
                (rows * ny + (rows - 1) * self.gap) * self.scale)

    def centres(self) -> np.ndarray:
        """(n_ccd, 2) tangent-plane offsets (xi, eta) of the CCD centres, degrees;
        CCD k is extension k + 1, row by row from the north-east corner."""
        (nx, ny), (cols, rows) = self.ccd, self.grid
        step_x, step_y = (nx + self.gap) * self.scale, (ny + self.gap) * self.scale
        return np.array([((cols - 1) / 2 * step_x - c * step_x, (rows - 1) / 2 * step_y - r * step_y)
                         for r in range(rows) for c in range(cols)])

    @property
    def ccd_area(self) -> float:
        """Area of one CCD, square degrees."""
        return self.ccd[0] * self.ccd[1] * self.scale ** 2


@dataclass(frozen=True)
class Exposure:
    """One image of the survey: where, when, in which filter, how deep."""

    index: int
    field: int
    ra: float
    dec: float
    filter: str
    mjd: float
    limit: float      # 5-sigma depth, magnitudes
    seeing: float     # FWHM, arcsec
    path: str


@dataclass(frozen=True)
class Survey:
    """A deterministic survey: `n_fields` fields along stripes around `centre`, each
    observed `epochs` times, `sources_per_ccd` detections per CCD on average.

    With `header_times` False the headers carry no MJD-OBS/DATE-OBS (some cameras
    write none) and the images rows no obs_mjd. An epoch takes the nights it needs (`exposures_per_night` exposures each) and the
    next starts `cadence` days later at the earliest. `Survey.for_rows(1e7)` picks the
    number of fields that gives about that many source rows. Exposure `i` is the same for a given seed however the rows are
    written (in one go, or in slices as an ingesting daemon would).
    """

    n_fields: int = 20
    epochs: int = 10
    centre: tuple[float, float] = (150.0, 2.0)
    fields_per_stripe: int = 40
    filters: tuple[str, ...] = ("g", "r", "i")
    sources_per_ccd: float = 800.0
    variable_fraction: float = 0.03
    camera: Camera = field(default_factory=Camera)
    start_mjd: float = 60676.0
    exposure_s: float = 90.0
    exposures_per_night: int = 320
    cadence: float = 3.0
    dither: float = 0.03
    seed: int = 0
    keys: tuple[str, ...] = DEFAULT_KEYS
    fitskeys: tuple[str, ...] = DEFAULT_FITSKEYS
    healpix_order: int = 12
    root: str = "/data/survey"
    header_times: bool = True

    def __post_init__(self) -> None:
        unknown = [k for k in self.keys if k not in KEY_TYPES]
        unknown += [k for k in self.fitskeys if k not in HEADER_KEYS]
        if unknown:
            raise ValueError(f"the survey generator cannot fill {unknown}; it knows the keys "
                             f"{sorted(KEY_TYPES)} and the header keys {list(HEADER_KEYS)}")

    @classmethod
    def for_rows(cls, rows: float, **settings) -> "Survey":
        """A survey of about `rows` source rows (fields added until it has them)."""
        probe = cls(**settings)
        per_exposure = probe.sources_per_ccd * len(probe.camera.centres())
        return cls(**{**settings, "n_fields": max(1, math.ceil(rows / per_exposure / probe.epochs))})

    @property
    def n_exposures(self) -> int:
        return self.n_fields * self.epochs

    @property
    def config_hash(self) -> str:
        """Stands for the SExtractor config's hash (16 hex digits, like the daemon's)."""
        return hashlib.sha256(repr((self.keys, self.fitskeys, "survey")).encode()).hexdigest()[:16]

    def field_centres(self) -> np.ndarray:
        """(n_fields, 2) RA, Dec of the fields, degrees: stripes of `fields_per_stripe`
        fields one mosaic width apart, stripes one mosaic height apart (5% overlap)."""
        width, height = self.camera.size
        stripes = math.ceil(self.n_fields / self.fields_per_stripe)
        out = []
        for k in range(self.n_fields):
            s, j = divmod(k, self.fields_per_stripe)
            dec = self.centre[1] + (s - (stripes - 1) / 2) * 0.95 * height
            dec = float(np.clip(dec, -89.9, 89.9))
            along = j if s % 2 == 0 else self.fields_per_stripe - 1 - j  # a boustrophedon track
            n = min(self.fields_per_stripe, self.n_fields - s * self.fields_per_stripe)
            step = 0.95 * width / max(math.cos(math.radians(dec)), 0.02)
            out.append(((self.centre[0] + (along - (n - 1) / 2) * step) % 360.0, dec))
        return np.array(out)

    def exposure(self, index: int) -> Exposure:
        """Exposure `index` (0 <= index < n_exposures): epoch by epoch, field by field."""
        if not 0 <= index < self.n_exposures:
            raise IndexError(f"exposure {index} out of 0..{self.n_exposures - 1}")
        epoch, k = divmod(index, self.n_fields)
        rng = np.random.default_rng([self.seed, 1, index])
        ra, dec = self.field_centres()[k]
        d_xi, d_eta = rng.uniform(-self.dither, self.dither, 2)
        ra, dec = from_tangent(np.array([ra]), np.array([dec]), np.array([d_xi]), np.array([d_eta]))
        night, slot = divmod(k, self.exposures_per_night)
        nights = -(-self.n_fields // self.exposures_per_night)
        night += epoch * max(nights, math.ceil(self.cadence))
        band = self.filters[epoch % len(self.filters)]
        mjd = self.start_mjd + night + 0.05 + slot * self.exposure_s / 86400.0
        limit = 23.5 + BAND_DEPTH.get(band, 0.0) + rng.normal(0.0, 0.2)
        date = datetime(1970, 1, 1) + timedelta(days=mjd - MJD_UNIX)
        root = self.root if self.seed == 0 else f"{self.root}-{self.seed}"
        path = f"{root}/{date:%Y%m%d}/c{index:07d}_{band}.fits"
        return Exposure(index, int(k), float(ra[0]), float(dec[0]), band, float(mjd),
                        float(limit), float(rng.uniform(0.7, 1.4)), path)

    def exposures(self, start: int = 0, stop: int | None = None) -> Iterator[Exposure]:
        """Exposures start..stop-1 in the order they are observed."""
        for index in range(start, self.n_exposures if stop is None else min(stop, self.n_exposures)):
            yield self.exposure(index)


# --- geometry and seeded draws -------------------------------------------------------

def to_tangent(ra0: float, dec0: float, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic projection about (ra0, dec0): standard coordinates (xi, eta) in degrees;
    NaN for points 90 degrees or more away."""
    a0, d0 = math.radians(ra0), math.radians(dec0)
    a, d = np.radians(ra), np.radians(dec)
    cos_c = math.sin(d0) * np.sin(d) + math.cos(d0) * np.cos(d) * np.cos(a - a0)
    cos_c = np.where(cos_c > 0, cos_c, np.nan)
    xi = np.cos(d) * np.sin(a - a0) / cos_c
    eta = (math.cos(d0) * np.sin(d) - math.sin(d0) * np.cos(d) * np.cos(a - a0)) / cos_c
    return np.degrees(xi), np.degrees(eta)


def from_tangent(ra0: np.ndarray, dec0: np.ndarray, xi: np.ndarray,
                 eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse gnomonic projection: (ra, dec) in degrees of standard coordinates (xi, eta)
    (degrees) about (ra0, dec0)."""
    a0, d0 = np.radians(ra0), np.radians(dec0)
    x, y = np.radians(xi), np.radians(eta)
    denom = np.cos(d0) - y * np.sin(d0)
    ra = a0 + np.arctan2(x, denom)
    dec = np.arctan2(np.sin(d0) + y * np.cos(d0), np.hypot(x, denom))
    return np.degrees(ra) % 360.0, np.degrees(dec)


def object_density(survey: Survey) -> float:
    """Objects per square degree that give `sources_per_ccd` detections at depth 23.5."""
    return survey.sources_per_ccd / survey.camera.ccd_area / brighter_than(23.5)


# --- one exposure --------------------------------------------------------------------

def observe(survey: Survey, exposure: Exposure, density: float | None = None) -> tuple[pa.Table, dict]:
    """The catalog of one exposure (the selected keys, then the header keys) and its
    images record, as `sexstream.extractor` would return them (before provenance)."""
    cam = survey.camera
    density = object_density(survey) if density is None else density
    hp = HEALPix(nside=1 << OBJECT_ORDER, order="nested")
    width, height = cam.size
    margin = 2 * hp.pixel_resolution.to_value(u.deg)
    cells = hp.cone_search_lonlat(exposure.ra * u.deg, exposure.dec * u.deg,
                                  (0.5 * math.hypot(width, height) + margin) * u.deg)
    obj = objects_in(np.sort(cells), density, survey.seed, survey.variable_fraction)
    xi, eta = to_tangent(exposure.ra, exposure.dec, obj.ra, obj.dec)
    centres = cam.centres()
    (nx, ny), scale = cam.ccd, cam.scale
    x = (nx + 1) / 2 - (xi[:, None] - centres[:, 0]) / scale
    y = (ny + 1) / 2 + (eta[:, None] - centres[:, 1]) / scale
    inside = (x >= 0.5) & (x < nx + 0.5) & (y >= 0.5) & (y < ny + 0.5)
    hit = inside.any(axis=1)
    ccd = inside.argmax(axis=1)[hit]
    rows = np.flatnonzero(hit)
    x, y, obj = x[rows, ccd], y[rows, ccd], obj.take(hit)

    rng = np.random.default_rng([survey.seed, 2, exposure.index])
    true = (obj.mag_r + BAND_COLOUR.get(exposure.filter, 0.0) * (obj.colour - 0.3)
            + obj.amplitude * np.sin(2 * np.pi * (exposure.mjd / obj.period + obj.phase)))
    sigma = np.sqrt(0.004 ** 2 + (0.2 * 10 ** (0.4 * (true - exposure.limit))) ** 2)
    mag = true + rng.normal(0.0, 1.0, len(true)) * sigma
    seen = mag < exposure.limit
    order = np.lexsort((y[seen], ccd[seen]))
    pick = np.flatnonzero(seen)[order]
    x, y, ccd, mag, sigma, obj = x[pick], y[pick], ccd[pick], mag[pick], sigma[pick], obj.take(pick)
    n = len(mag)
    pos_err = (0.015 + 0.5 * sigma * exposure.seeing) / 3600.0  # degrees
    ra = (obj.ra + rng.normal(0.0, 1.0, n) * pos_err / np.maximum(np.cos(np.radians(obj.dec)), 1e-3)) % 360.0
    dec = np.clip(obj.dec + rng.normal(0.0, 1.0, n) * pos_err, -90.0, 90.0)
    mag_iso = mag + 0.08 + 0.04 * obj.size * ~obj.star
    mag_auto = mag + 0.02
    flux = lambda m: 10 ** (-0.4 * (m - ZEROPOINT))  # noqa: E731
    flags = np.where(mag < 16.8, 4, np.where(rng.random(n) < 0.04, 2, 0))
    ext = ccd + 1
    number = np.empty(n, np.int64)
    for k in np.unique(ext):
        where = ext == k
        number[where] = np.arange(1, where.sum() + 1)
    values = {
        "NUMBER": number, "EXT_NUMBER": ext, "X_IMAGE": x + rng.normal(0, 1, n) * pos_err / scale,
        "Y_IMAGE": y + rng.normal(0, 1, n) * pos_err / scale, "ALPHA_J2000": ra, "DELTA_J2000": dec,
        "ALPHA_SKY": ra, "DELTA_SKY": dec, "MAG_ISO": mag_iso, "MAGERR_ISO": sigma * 1.05,
        "FLUX_ISO": flux(mag_iso), "FLUXERR_ISO": flux(mag_iso) * sigma * 1.05 / 1.0857,
        "MAG_AUTO": mag_auto, "MAGERR_AUTO": sigma, "FLUX_AUTO": flux(mag_auto),
        "FLUXERR_AUTO": flux(mag_auto) * sigma / 1.0857, "FLAGS": flags,
        "CLASS_STAR": np.where(obj.star, 0.9 + 0.09 * rng.random(n), 0.2 * rng.random(n)),
        "FWHM_IMAGE": exposure.seeing / cam.pixel_scale * np.where(obj.star, 1.0, obj.size),
    }
    columns = {k: pa.array(np.asarray(values[k]).astype(KEY_TYPES[k].to_pandas_dtype()), KEY_TYPES[k])
               for k in survey.keys}
    header = header_values(survey, exposure)
    zeros = pa.array(np.zeros(n, np.int64))
    for key in survey.fitskeys:
        columns[key] = header_column([header[key]]).take(zeros)
    return pa.table(columns), image_record(survey, exposure, header, n)


def header_values(survey: Survey, exposure: Exposure) -> dict:
    """The primary header's values of an exposure, by key."""
    when = datetime(1970, 1, 1) + timedelta(days=exposure.mjd - MJD_UNIX)
    timed = survey.header_times
    return {"RA_DEG": exposure.ra, "DEC_DEG": exposure.dec, "FILTER": exposure.filter,
            "RUNID": f"{when:%y}A-{exposure.field % 97:02d}", "MJD-OBS": exposure.mjd if timed else None,
            "DATE-OBS": when.isoformat(timespec="milliseconds") if timed else None,
            "EXPTIME": survey.exposure_s - 30.0,
            "AIRMASS": round(1.0 + 0.6 * ((exposure.index * 7919) % 100) / 100.0, 3),
            "OBJECT": f"field{exposure.field:05d}"}


def footprints(survey: Survey, exposure: Exposure) -> list[dict]:
    """The images table's footprints of an exposure: 4 pixel corners per CCD, degrees."""
    cam = survey.camera
    (nx, ny), scale = cam.ccd, cam.scale
    out = []
    for k, (cx, cy) in enumerate(cam.centres(), start=1):
        px = np.array([0.5, nx + 0.5, nx + 0.5, 0.5])
        py = np.array([0.5, 0.5, ny + 0.5, ny + 0.5])
        xi = cx - (px - (nx + 1) / 2) * scale
        eta = cy + (py - (ny + 1) / 2) * scale
        ra, dec = from_tangent(np.full(4, exposure.ra), np.full(4, exposure.dec), xi, eta)
        out.append({"ext_number": k, "hdu": k, "ra": ra.tolist(), "dec": dec.tolist()})
    return out


def image_record(survey: Survey, exposure: Exposure, header: dict, n_sources: int) -> dict:
    """The images-table record of an exposure measured `ok` with `n_sources` sources."""
    content = xxhash.xxh3_128_hexdigest(f"{survey.seed}:{exposure.index}".encode())
    observed = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(days=exposure.mjd - MJD_UNIX)
    return {
        "path": exposure.path, "content_hash": content,
        "image_id": xxhash.xxh3_64_hexdigest(f"{exposure.path}\0{content}\0{survey.config_hash}".encode()),
        "size": 2880 * (1 + len(survey.camera.centres()) * 5826), "status": "ok", "reason": None,
        "mtime": observed + timedelta(seconds=survey.exposure_s), "n_sources": n_sources,
        "n_extensions": len(survey.camera.centres()), "footprints": footprints(survey, exposure),
        **{k: header[k] for k in survey.fitskeys},
        "obs_mjd": exposure.mjd if survey.header_times else None,
        "sextractor_version": "2.25.0", "config_hash": survey.config_hash, "host": "survey",
        "started": observed + timedelta(seconds=survey.exposure_s + 2), "duration_s": 0.4,
        "attempts": 1,
    }


# --- writing ---------------------------------------------------------------------------

@dataclass
class WriteReport:
    """What `write` added: exposures, source rows, commits per table."""

    images: int = 0
    rows: int = 0
    batches: int = 0


def write(sink: str | Path, survey: Survey, start: int = 0, stop: int | None = None, *,
          images_per_batch: int = 12, progress: Callable[[WriteReport], None] | None = None) -> WriteReport:
    """Append exposures `start`..`stop`-1 of `survey` to the sink's two tables.

    One Parquet part per image (as one task per image writes them) and one commit per
    table and batch of `images_per_batch` exposures, sources first, carrying the
    transaction (`survey-<seed>-<config_hash>`, batch_id = the index of the batch's
    first exposure): writing the same exposures again commits nothing, and batches the
    images table already holds are skipped before any work (an interrupted write
    resumes). Slices must follow one another (start where the last one stopped). Each batch's ingest_time is 20 s after its last exposure.
    """
    target = Sink(sink)
    app_id = f"survey-{survey.seed}-{survey.config_hash}"
    density = object_density(survey)
    stop = survey.n_exposures if stop is None else min(stop, survey.n_exposures)
    report = WriteReport()
    done = committed_version(target.images, app_id)  # images are committed last
    for lo in range(start, stop, images_per_batch):
        batch_id = lo  # the index of the batch's first exposure: unique whatever the slices
        if done is not None and batch_id <= done:
            continue  # in both tables already: a resumed write skips it at no cost
        exposures = list(survey.exposures(lo, min(lo + images_per_batch, stop)))
        ingest = (datetime(1970, 1, 1, tzinfo=timezone.utc)
                  + timedelta(days=exposures[-1].mjd - MJD_UNIX, seconds=survey.exposure_s + 20))
        parts, records = [], []
        for exposure in exposures:
            catalog, record = observe(survey, exposure, density)
            rows = stamp(with_provenance(catalog, record, survey.healpix_order), batch_id, ingest)
            parts.append(write_part(target.sources, rows, batch_id=batch_id,
                                    task_tag=f"survey{exposure.index}"))
            records.append(record)
            report.rows += rows.num_rows
        report.images += len(records)
        images = images_table(records, survey.fitskeys, batch_id, ingest)
        image_part = write_part(target.images, images, batch_id=batch_id, task_tag="survey")
        target.commit(SOURCES, [p for p in parts if p is not None], app_id=app_id, batch_id=batch_id)
        target.commit(IMAGES, [image_part], app_id=app_id, batch_id=batch_id)
        report.batches += 1
        if progress is not None:
            progress(report)
    return report
