"""One image -> (image record, Arrow source rows), exactly as SExtractor itself measures it.

`prepare(settings)` validates the selection once (on the driver) and returns a `Plan`,
plain data that travels to executors; `extract(path, plan)` measures one image and
never raises, whatever the image does: every attempt runs in a forked child
(`sexstream.sandbox`) bounded by the plan's timeout, in a private temp dir, and an
exception, a hang or the death of that child ends as the image record's status and
reason. A file whose measuring process died twice is quarantined (recorded "failed").
"""
from __future__ import annotations

import hashlib
import mmap
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import xxhash

from sexstream import binary as binary_mod
from sexstream import (auxiliary, catalog, inputs, planes, process, requirements, sandbox, structure,
                       workdirs)
from sexstream.assoc import AssocList
from sexstream.binary import Binary
from sexstream.errors import InputError
from sexstream.params import Key, validate_keys
from sexstream.planes import Planes
from sexstream.psf import PsfSource
from sexstream.settings import Settings
from sexstream.sexconfig import FILE_PARAMETERS, named_files

#: Config parameters sexstream sets itself: a user may not override them.
RESERVED = ("CATALOG_NAME", "CATALOG_TYPE", "PARAMETERS_NAME")
#: A measuring process that died this many times on one file quarantines the file.
QUARANTINE_DEATHS = 2
#: Seconds the sandbox waits beyond the plan's timeout, so that SExtractor's own timeout
#: (the more precise reason) fires first when SExtractor is what hangs.
SANDBOX_GRACE_S = 2.0


@dataclass(frozen=True)
class Plan:
    """A validated selection, ready to run on any worker: plain, picklable data."""

    binary: Binary
    keys: tuple[Key, ...]
    fitskeys: tuple[str, ...]
    config: str
    options: tuple[str, ...]  # command-line options after the image, in order
    config_hash: str
    timeout: float
    max_image_bytes: int
    retries: int
    healpix_order: int
    psf: PsfSource | None = None  # the PSF model (given, or PSFEx on each image)
    planes: Planes = Planes()  # the image HDU, weight and flag maps
    assoc: AssocList | None = None  # the ASSOC reference list

    @property
    def dual(self) -> bool:
        """True when a *_DETMODEL key is selected: SExtractor then runs in dual-image
        mode, the image being its own detection image (alone, it dies of SIGSEGV)."""
        return any(requirements.is_detmodel(k.name) for k in self.keys)

    @property
    def relative_cost(self) -> float:
        """Expected seconds per image relative to one plain SExtractor pass (see `cost`)."""
        from sexstream import cost

        return cost.relative(self)

    @property
    def param_text(self) -> str:
        specs = [k.spec for k in self.keys]
        if "EXT_NUMBER" not in {k.name for k in self.keys}:
            specs.append("EXT_NUMBER")  # needed to attach extension header keys
        return "\n".join(specs) + "\n"


@dataclass
class ImageResult:
    """What one image yields: its images-table row and its sources rows (None unless ok)."""

    record: dict
    sources: pa.Table | None
    artifacts: dict[str, bytes] = field(default_factory=dict)  # kind -> bytes (the PSF model)


def prepare(settings: Settings) -> Plan:
    """Validate keys, header keys and config overrides against the binary; raise early.

    Raises BinaryNotFoundError, FileNotFoundError, UnknownKeyError or ValueError before
    any image is touched."""
    binary = binary_mod.find_binary(settings.binary)
    keys = validate_keys(settings.keys, binary_mod.parameters(binary))
    fitskeys = tuple(k.strip().upper() for k in settings.fitskeys if k.strip())
    for k in fitskeys:
        if len(k) > 8 and not k.startswith("HIERARCH"):
            raise ValueError(f"FITS header key {k!r} is longer than 8 characters")
    config = settings.config_path.resolve()
    if not config.is_file():
        raise FileNotFoundError(f"SExtractor config file not found: {config}")
    binary_mod.validate_overrides(binary, settings.overrides)
    for name, _ in settings.overrides:
        if name in RESERVED:
            raise ValueError(f"{name} is set by sexstream itself and cannot be overridden")
    options: list[str] = ["-CHECKIMAGE_TYPE", "NONE", "-WRITE_XML", "N", "-VERBOSE_TYPE", "QUIET"]
    for name, value in named_files(config):
        options += [f"-{name}", value]
    for name, value in settings.overrides:
        if name in FILE_PARAMETERS and not os.path.isabs(value):
            value = os.path.abspath(value)
        options += [f"-{name}", value]
    digest = hashlib.sha256()
    digest.update(binary.version.encode())
    digest.update(config.read_bytes())
    for i in range(1, len(options), 2):
        opt_value = options[i]
        if os.path.isfile(opt_value):
            digest.update(Path(opt_value).read_bytes())
    aux = auxiliary.prepare(settings, keys, config, options)
    # the maps enter the hash only when used: a plain config keeps its hash across versions
    selection = (options, [k.spec for k in keys], fitskeys) + ((aux["planes"],) if aux["planes"].active else ())
    digest.update(repr(selection).encode())
    digest.update(aux["psf"].fingerprint() if aux["psf"] else b"")
    digest.update(aux["assoc"].digest.encode() if aux["assoc"] else b"")
    return Plan(binary=binary, keys=keys, fitskeys=fitskeys, config=str(config),
                options=tuple(options), config_hash=digest.hexdigest()[:16],
                timeout=float(settings.timeout), max_image_bytes=int(settings.max_image_bytes),
                retries=int(settings.retries), healpix_order=int(settings.healpix_order), **aux)


def content_hash(path: str | Path) -> str:
    """xxh3-128 of the file's bytes, hex."""
    with open(path, "rb") as fh:
        try:
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as view:
                return xxhash.xxh3_128_hexdigest(view)  # no copy of the pixels
        except ValueError:  # an empty file cannot be mapped
            return xxhash.xxh3_128_hexdigest(fh.read())


def run_sextractor(image: Path | str, plan: Plan, workdir: Path, timeout: float | None = None,
                   extra: list[str] | tuple[str, ...] = ()) -> Path:
    """Run the binary on `image` inside `workdir`; return the FITS_1.0 catalog's path.

    `extra` are per-image options (PSF model, maps, ASSOC list) after the plan's. At most
    `timeout` seconds (the plan's by default); see `process.run`. Raises InputError
    (transient for timeouts and signals)."""
    params = workdir / "catalog.param"
    params.write_text(plan.param_text)
    cat = workdir / "catalog.fits"
    argv = [plan.binary.path, str(image), "-c", plan.config, *plan.options, *extra,
            "-PARAMETERS_NAME", str(params), "-CATALOG_TYPE", "FITS_1.0", "-CATALOG_NAME", str(cat)]
    done = process.run(argv, workdir, timeout=plan.timeout if timeout is None else timeout,
                       name="SExtractor", timeout_reason=f"SExtractor timed out after {plan.timeout:g} s")
    if done.returncode != 0 or not cat.is_file():
        raise InputError(f"SExtractor failed (exit {done.returncode}): {done.tail or 'no message'}")
    return cat


def _prepare_input(path: Path, workdir: Path, limit: int | None, phase) -> tuple[Path, list[structure.HDUInfo]]:
    """Return a file SExtractor can read (the raw file by a safe name, or a decompressed
    copy in `workdir`, at most `limit` bytes) and its HDUs; raise InputError for a bad or
    incomplete input."""
    kind = inputs.sniff(path)
    if kind in ("gzip", "bzip2"):
        phase(f"decompressing the {kind} stream")
        try:
            plain = inputs.decompress_stream(path, kind, workdir / "decompressed.fits", limit)
        except InputError as exc:
            if "end-of-stream" in str(exc) or "Compressed file ended" in str(exc):
                raise InputError(f"truncated {kind} stream (download not finished?)",
                                 status="incomplete") from None
            raise
        if inputs.sniff(plain) != "fits":
            raise InputError(f"{kind} file does not hold a FITS file")
        source = plain
    elif kind == "fits":
        source = path
    else:
        if path.stat().st_size == 0:
            raise InputError("empty file (0 bytes)", status="incomplete")
        raise InputError(inputs._describe_unknown(path))
    phase("reading the headers")
    hdus = structure.walk_hdus(source, limit)
    if any(h.is_tile_compressed for h in hdus):
        phase("decompressing tiles")
        source = inputs.uncompress_tiles(source, workdir / "uncompressed.fits")
        hdus = structure.walk_hdus(source, limit)
    images = [h for h in hdus if h.is_image]
    if not images:
        raise InputError(f"no image to measure ({', '.join(h.describe() for h in hdus)})")
    structure.check_planes(images)
    if source is path:
        source = inputs.safe_link(path, workdir)
    return source, hdus


def _measure(path: Path, plan: Plan, fields: dict, workdir: Path, deadline: float, phase,
             artifacts: dict[str, bytes]) -> pa.Table:
    """The catalog of one image (header keys, footprints and counts into `fields`, the
    PSF model into `artifacts`)."""
    phase("opening the file")
    image, hdus = _prepare_input(path, workdir, plan.max_image_bytes, phase)

    def open_map(side: Path, what: str) -> tuple[Path, list[structure.HDUInfo]]:
        (workdir / what).mkdir()
        return _prepare_input(side, workdir / what, plan.max_image_bytes, phase)

    layout = planes.lay_out(plan.planes, image, hdus, path, open_map)
    primary = hdus[0].header
    images = list(layout.images)
    first = images[0].header
    for k in plan.fitskeys:
        fields[k] = inputs.lookup(k, primary, first)
    fields["obs_mjd"] = inputs.obs_mjd(primary, first)
    fields["n_extensions"] = len(images)
    phase("evaluating the WCS")
    fields["footprints"] = []
    for ext, h in enumerate(images, start=1):
        corners = inputs.footprint(h.header, h.shape)
        fields["footprints"].append({"ext_number": ext, "hdu": h.index,
                                     "ra": corners[0] if corners else None,
                                     "dec": corners[1] if corners else None})
    extra = auxiliary.options(plan, layout, path, fields, workdir, deadline, phase, artifacts)
    phase("running SExtractor")
    cat = run_sextractor(layout.argument(plan.dual), plan, workdir,
                         timeout=max(deadline - time.monotonic(), 0.001), extra=extra)
    phase("reading the catalog")
    return catalog.read(cat, plan.keys, plan.fitskeys, [h.header for h in images], primary)


def _check_unchanged(path: Path, before: os.stat_result) -> None:
    """InputError "incomplete" when `path` changed (size or mtime) since `before`: it is
    still being written, and what was read is not one version of the file."""
    try:
        now = path.stat()
    except OSError:
        return  # gone or unreadable now: the attempt's own error says so
    if (now.st_size, now.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise InputError(f"file changed while it was being read ({before.st_size} -> {now.st_size} "
                         "bytes): still being written?", status="incomplete")


@dataclass
class Attempt:
    """One attempt at an image: its verdict, what was learned of the file, the catalog."""

    status: str
    reason: str | None
    fields: dict
    sources: pa.Table | None = None
    artifacts: dict[str, bytes] = field(default_factory=dict)
    transient: bool = False  # worth another attempt
    died: str | None = None  # the measuring process ended without a verdict: how


def _attempt(phase, path: Path, plan: Plan, tmp_root: str | None) -> Attempt:
    """One attempt, start to verdict; never raises (an exception is the image's verdict).

    Bounded by the plan's timeout: SExtractor gets what is left of it."""
    deadline = time.monotonic() + plan.timeout
    fields: dict = {}
    where = ["starting"]

    def step(text: str) -> None:
        where[0] = text
        phase(text)

    try:
        step("reading the file")
        st = path.stat()
        fields["size"] = st.st_size
        fields["mtime"] = datetime.fromtimestamp(st.st_mtime, timezone.utc)
        if st.st_size > plan.max_image_bytes:
            raise InputError(f"too large: {st.st_size} bytes > max_image_bytes {plan.max_image_bytes}")
        step("hashing the file")
        fields["content_hash"] = content_hash(path)
        fields["image_id"] = xxhash.xxh3_64_hexdigest(
            f"{path}\0{fields['content_hash']}\0{plan.config_hash}".encode())
        workdir = workdirs.make(tmp_root)
        artifacts: dict[str, bytes] = {}
        try:
            sources = _measure(path, plan, fields, workdir, deadline, step, artifacts)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            _check_unchanged(path, st)  # the hash and the verdict are about one content
        step("adding provenance")
        sources = catalog.with_provenance(
            sources, {**fields, "path": str(path), "config_hash": plan.config_hash}, plan.healpix_order)
        return Attempt("ok", None, fields, sources, artifacts)
    except InputError as exc:
        return Attempt(exc.status, str(exc), fields, transient=exc.transient)
    except OSError as exc:
        err = inputs.describe_os_error(path, exc)
        return Attempt(err.status, str(err), fields, transient=err.transient)
    except MemoryError:
        return Attempt("failed", f"out of memory (while {where[0]})", fields)
    except Exception as exc:  # noqa: BLE001 (a bad image must end as a row, never a crash)
        return Attempt("failed", f"internal error: {sandbox.one_line(exc)} (while {where[0]})", fields)


def _isolated(path: Path, plan: Plan, tmp_root: str | None, worker: sandbox.Worker | None) -> Attempt:
    """`_attempt` in a forked child (`worker`'s, or one of its own): an exception, a hang
    or a death is a verdict too."""
    bound = plan.timeout + SANDBOX_GRACE_S
    if worker is None:
        out = sandbox.call(_attempt, path, plan, tmp_root, bound=bound)
    else:
        out = worker.call(_attempt, path, plan, tmp_root, bound=bound)
    if out.ok:
        return out.value
    where = f" (while {out.phase})" if out.phase else ""
    if out.kind == "raised":
        return Attempt("failed", f"internal error: {out.error}{where}", {})
    workdirs.remove_of(out.pid, tmp_root)
    if out.kind == "timeout":
        return Attempt("failed", f"no verdict within {plan.timeout:g} s: the measurement was stopped"
                       f"{where}", {})
    return Attempt("failed", f"the process measuring it was {out.error}{where}", {}, died=out.error)


#: Temp folders whose work dirs this process has swept (once per process and folder).
_swept: set[str] = set()


def preload() -> None:
    """Import, once per process, what an attempt imports where it is used (WCS, time,
    HEALPix): a forked child would otherwise import them again for every image."""
    import astropy.time  # noqa: F401
    import astropy.units  # noqa: F401
    import astropy.wcs  # noqa: F401
    import astropy_healpix  # noqa: F401
    import numpy as np

    pa.array(np.zeros(1))  # pyarrow imports its pandas shim on the first conversion


def new_record(path: Path, plan: Plan) -> dict:
    """An images-table record for `path` before any attempt: status "failed", no reason."""
    return {"path": str(path), "size": None, "mtime": None, "content_hash": None,
            "image_id": None, "status": "failed", "reason": None, "n_sources": 0,
            "n_extensions": 0, "footprints": None, "obs_mjd": None,
            "sextractor_version": plan.binary.version, "config_hash": plan.config_hash,
            "host": socket.gethostname(), "started": datetime.now(timezone.utc), "attempts": 0,
            **{k: None for k in plan.fitskeys}}


def unmeasured(path: str | Path, plan: Plan, status: str, reason: str) -> ImageResult:
    """The result of an image given a verdict without being measured (a quarantined
    file): its size and mtime when it can be stat'ed, no sources."""
    path = Path(os.path.abspath(path))
    record = new_record(path, plan)
    try:
        st = path.stat()
        record["size"] = st.st_size
        record["mtime"] = datetime.fromtimestamp(st.st_mtime, timezone.utc)
    except OSError:
        pass
    record.update(status=status, reason=reason, duration_s=0.0)
    return ImageResult(record, None)


def extract(path: str | Path, plan: Plan, *, tmp_root: str | None = None, isolate: bool = True,
            worker: sandbox.Worker | None = None) -> ImageResult:
    """Measure one image. Never raises, whatever the image does: the record's status and
    reason say what happened ("ok", "failed" or "incomplete").

    Transient failures (a SExtractor timeout or signal, an I/O error) are tried again,
    `plan.retries` times. With `isolate` (the default) every attempt runs in a forked
    child bounded by `plan.timeout` (+2 s): a hang anywhere is cut ("no verdict within
    N s"), and a child that dies is tried once more, then the file is quarantined. A
    `worker` (`sexstream.sandbox.Worker`) measures the images of one task in one child
    (the fork paid once); without it every attempt forks its own."""
    t0 = time.monotonic()
    path = Path(os.path.abspath(path))
    if (tmp_root or "") not in _swept:
        _swept.add(tmp_root or "")
        workdirs.sweep(tmp_root, older_than=plan.timeout * (plan.retries + 1) + 300.0)
        if isolate:
            preload()
    record = new_record(path, plan)
    deaths: list[str] = []
    attempt = None
    while True:
        record["attempts"] += 1
        attempt = _isolated(path, plan, tmp_root, worker) if isolate else _attempt(lambda _: None, path, plan, tmp_root)
        record.update(attempt.fields)
        record["status"], record["reason"] = attempt.status, attempt.reason
        if attempt.died:
            deaths.append(attempt.died)
            if len(deaths) < QUARANTINE_DEATHS:
                continue
            record["reason"] = (f"quarantined: the process measuring it died {len(deaths)} times "
                                f"({'; '.join(deaths)})")
            break
        retries_done = record["attempts"] - 1 - len(deaths)
        if not attempt.transient or retries_done >= plan.retries:
            if attempt.transient and retries_done > 0:
                record["reason"] += f" (after {retries_done + 1} attempts)"
            break
        time.sleep(min(0.5 * 2 ** retries_done, 5.0))
    sources = attempt.sources if record["status"] == "ok" else None
    if sources is not None:
        record["n_sources"] = sources.num_rows
    record["duration_s"] = time.monotonic() - t0
    return ImageResult(record, sources, attempt.artifacts if sources is not None else {})
