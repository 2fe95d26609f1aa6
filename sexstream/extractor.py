"""One image -> (image record, Arrow source rows), exactly as SExtractor itself measures it.

`prepare(settings)` validates the selection once (on the driver) and returns a `Plan`,
plain data that travels to executors; `extract(path, plan)` runs SExtractor on one
image in a private temp dir and never raises for a bad image: the image record says
what went wrong.
"""
from __future__ import annotations

import functools
import hashlib
import mmap
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import xxhash

from sexstream import binary as binary_mod
from sexstream import catalog, inputs
from sexstream.binary import Binary
from sexstream.inputs import InputError
from sexstream.params import Key, validate_keys
from sexstream.settings import Settings

#: Config parameters naming files: relative values are resolved against the config's folder.
FILE_PARAMETERS = ("FILTER_NAME", "STARNNW_NAME", "WEIGHT_IMAGE", "FLAG_IMAGE", "PSF_NAME",
                   "ASSOC_NAME", "SOM_NAME", "DGEO_IMAGE")
#: Config parameters sexstream sets itself: a user may not override them.
RESERVED = ("CATALOG_NAME", "CATALOG_TYPE", "PARAMETERS_NAME")
STDERR_TAIL = 3  # lines of SExtractor's stderr kept in a failure reason


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


def _config_values(config: Path) -> dict[str, str]:
    values = {}
    for line in config.read_text(errors="replace").splitlines():
        body = line.split("#", 1)[0].strip()
        if body:
            name, _, value = body.partition(" ")
            values[name.upper()] = value.strip()
    return values


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
    values = _config_values(config)
    options: list[str] = ["-CHECKIMAGE_TYPE", "NONE", "-WRITE_XML", "N", "-VERBOSE_TYPE", "QUIET"]
    digest = hashlib.sha256()
    for name in FILE_PARAMETERS:
        value = values.get(name, "")
        if value and not os.path.isabs(value) and (config.parent / value).is_file():
            options += [f"-{name}", str(config.parent / value)]
    for name, value in settings.overrides:
        if name in FILE_PARAMETERS and not os.path.isabs(value):
            value = os.path.abspath(value)
        options += [f"-{name}", value]
    digest.update(binary.version.encode())
    digest.update(config.read_bytes())
    for i in range(1, len(options), 2):
        opt_value = options[i]
        if os.path.isfile(opt_value):
            digest.update(Path(opt_value).read_bytes())
    digest.update(repr((options, [k.spec for k in keys], fitskeys)).encode())
    return Plan(binary=binary, keys=keys, fitskeys=fitskeys, config=str(config),
                options=tuple(options), config_hash=digest.hexdigest()[:16],
                timeout=float(settings.timeout), max_image_bytes=int(settings.max_image_bytes),
                retries=int(settings.retries), healpix_order=int(settings.healpix_order))


def content_hash(path: str | Path) -> str:
    """xxh3-128 of the file's bytes, hex."""
    with open(path, "rb") as fh:
        try:
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as view:
                return xxhash.xxh3_128_hexdigest(view)  # no copy of the pixels
        except ValueError:  # an empty file cannot be mapped
            return xxhash.xxh3_128_hexdigest(fh.read())


def _tail(text: str) -> str:
    """The last lines of SExtractor's stderr: its messages ("> Sorry, I don't know that
    kind of data.") without the "> " prefix; progress lines (drawn with ANSI cursor
    moves) are left out."""
    lines = [ln.strip().lstrip(">").strip() for ln in text.replace("\r", "\n").splitlines()
             if "\x1b[" not in ln]
    return " | ".join([ln for ln in lines if ln][-STDERR_TAIL:])


@functools.lru_cache(maxsize=1)
def _die_with_parent() -> tuple[str, ...]:
    """The prefix that makes SExtractor die with the process running it (util-linux
    `setpriv --pdeathsig KILL`), or () where there is no setpriv.

    SExtractor runs in its own session (so that a timeout can kill its process group),
    which also keeps it out of the signals that end a Spark worker: without this, a
    kill -9 of the driver or a lost executor leaves it running to its end, or forever
    when it hangs."""
    setpriv = shutil.which("setpriv")
    return (setpriv, "--pdeathsig", "KILL", "--") if setpriv else ()


def run_sextractor(image: Path, plan: Plan, workdir: Path) -> Path:
    """Run the binary on `image` inside `workdir`; return the FITS_1.0 catalog's path.

    The process runs in its own session; on timeout its whole process group is killed,
    and it is killed when the process that runs it dies. Raises InputError (transient
    for timeouts and signals)."""
    params = workdir / "catalog.param"
    params.write_text(plan.param_text)
    cat = workdir / "catalog.fits"
    argv = [*_die_with_parent(), plan.binary.path, str(image), "-c", plan.config, *plan.options,
            "-PARAMETERS_NAME", str(params), "-CATALOG_TYPE", "FITS_1.0", "-CATALOG_NAME", str(cat)]
    proc = subprocess.Popen(argv, cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=plan.timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        raise InputError(f"SExtractor timed out after {plan.timeout:g} s", transient=True) from None
    except BaseException:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        raise
    stderr = err.decode("utf-8", "replace")
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        raise InputError(f"SExtractor killed by {name}" + (f": {_tail(stderr)}" if _tail(stderr) else ""),
                         transient=True)
    if proc.returncode != 0 or not cat.is_file():
        raise InputError(f"SExtractor failed (exit {proc.returncode}): {_tail(stderr) or 'no message'}")
    return cat


def _prepare_input(path: Path, workdir: Path, limit: int | None = None) -> tuple[Path, list[inputs.HDUInfo]]:
    """Return a file SExtractor can read (the raw file by a safe name, or a decompressed
    copy in `workdir`, at most `limit` bytes) and its HDUs; raise InputError for a bad or
    incomplete input."""
    kind = inputs.sniff(path)
    if kind in ("gzip", "bzip2"):
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
    hdus = inputs.walk_hdus(source)
    if any(h.is_tile_compressed for h in hdus):
        source = inputs.uncompress_tiles(source, hdus, workdir / "uncompressed.fits")
        hdus = inputs.walk_hdus(source)
    images = [h for h in hdus if h.is_image]
    if not images:
        kinds = ", ".join(f"HDU {h.index}: {h.header.get('XTENSION', 'PRIMARY').strip()} "
                          f"NAXIS={h.header.get('NAXIS', 0)}" for h in hdus)
        raise InputError(f"no image to measure ({kinds})")
    inputs.check_planes(images)
    if source is path:
        source = inputs.safe_link(path, workdir)
    return source, hdus


#: Work dirs are `sexstream-<pid>-*` in the temp folder: the pid tells whose they are.
WORKDIR_NAME = re.compile(r"^sexstream-(\d+)-")
_swept: set[str] = set()  # temp folders this process has swept


def sweep_workdirs(tmp_root: str | None, older_than: float, name: re.Pattern = WORKDIR_NAME) -> list[str]:
    """Remove the work dirs that processes which no longer exist left in `tmp_root`
    (the default temp folder if None) when killed mid-image; returns their paths.
    `name` matches such dirs, its first group being the pid of the process that made it.

    Only dirs older than `older_than` seconds go: a pid that looks dead here may be a
    live process of another PID namespace sharing the folder, and no live extraction
    keeps a work dir longer than its timeouts."""
    root = tmp_root or tempfile.gettempdir()
    removed = []
    try:
        names = os.listdir(root)
    except OSError:
        return removed
    now = time.time()
    for entry in names:
        m = name.match(entry)
        if m is None or int(m.group(1)) == os.getpid() or _pid_alive(int(m.group(1))):
            continue
        path = os.path.join(root, entry)
        try:
            if now - os.stat(path).st_mtime < older_than:
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _attempt(path: Path, plan: Plan, record: dict, tmp_root: str | None) -> pa.Table:
    if (tmp_root or "") not in _swept:  # once per process and folder
        _swept.add(tmp_root or "")
        sweep_workdirs(tmp_root, older_than=plan.timeout * (plan.retries + 1) + 300.0)
    workdir = Path(tempfile.mkdtemp(prefix=f"sexstream-{os.getpid()}-", dir=tmp_root))
    try:
        image, hdus = _prepare_input(path, workdir, plan.max_image_bytes)
        primary = hdus[0].header
        images = [h for h in hdus if h.is_image]
        first = images[0].header
        for k in plan.fitskeys:
            record[k] = inputs.lookup(k, primary, first)
        record["obs_mjd"] = inputs.obs_mjd(primary, first)
        record["n_extensions"] = len(images)
        record["footprints"] = []
        for ext, h in enumerate(images, start=1):
            corners = inputs.footprint(h.header)
            record["footprints"].append({"ext_number": ext, "hdu": h.index,
                                         "ra": corners[0] if corners else None,
                                         "dec": corners[1] if corners else None})
        cat = run_sextractor(image, plan, workdir)
        return catalog.read(cat, plan, [h.header for h in images], primary)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


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


def extract(path: str | Path, plan: Plan, *, tmp_root: str | None = None) -> ImageResult:
    """Measure one image. Never raises for a bad image: the record's status and reason say
    what happened ("ok", "failed" or "incomplete")."""
    started = time.time()
    t0 = time.monotonic()
    path = Path(os.path.abspath(path))
    record: dict = {"path": str(path), "size": None, "mtime": None, "content_hash": None,
                    "image_id": None, "status": "failed", "reason": None, "n_sources": 0,
                    "n_extensions": 0, "footprints": None, "obs_mjd": None,
                    "sextractor_version": plan.binary.version, "config_hash": plan.config_hash,
                    "host": socket.gethostname(),
                    "started": datetime.fromtimestamp(started, timezone.utc), "attempts": 0,
                    **{k: None for k in plan.fitskeys}}
    sources = None
    for attempt in range(plan.retries + 1):
        record["attempts"] = attempt + 1
        try:
            st = path.stat()
            record["size"] = st.st_size
            record["mtime"] = datetime.fromtimestamp(st.st_mtime, timezone.utc)
            if st.st_size > plan.max_image_bytes:
                raise InputError(f"too large: {st.st_size} bytes > max_image_bytes "
                                 f"{plan.max_image_bytes}")
            record["content_hash"] = content_hash(path)
            record["image_id"] = xxhash.xxh3_64_hexdigest(
                f"{path}\0{record['content_hash']}\0{plan.config_hash}".encode())
            try:
                measured = _attempt(path, plan, record, tmp_root)
            finally:
                _check_unchanged(path, st)  # the hash and the verdict are about one content
            sources, record["status"], record["reason"] = measured, "ok", None
            break
        except (InputError, OSError) as exc:
            err = exc if isinstance(exc, InputError) else inputs.describe_os_error(path, exc)
            record["status"], record["reason"] = err.status, str(err)
            if not err.transient:
                break
            if attempt == plan.retries and attempt > 0:
                record["reason"] += f" (after {attempt + 1} attempts)"
        if attempt < plan.retries:
            time.sleep(min(0.5 * 2 ** attempt, 5.0))
    if sources is not None:
        sources = catalog.with_provenance(sources, record, plan.healpix_order)
        record["n_sources"] = sources.num_rows
    record["duration_s"] = time.monotonic() - t0
    return ImageResult(record, sources)
