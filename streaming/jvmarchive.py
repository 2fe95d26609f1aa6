"""A class-data-sharing archive of the driver JVM: Spark starts in half the time.

The driver JVM loads ~12,000 classes from Spark's jars before the first image is
measured; on a small machine that is most of the session's start-up (figures in the
README's Performance section). Java's AppCDS keeps those classes parsed and verified in
a memory-mapped file. `sexstream jvm-archive` records
one (a short replay of two generated images with `-XX:ArchiveClassesAtExit`, by
`streaming.jvmrecord`);
`make install` runs it. From then on `streaming.session` passes
`-XX:SharedArchiveFile` to the driver JVM whenever an archive exists for this exact
JVM, Spark and set of JVM options (the key in the file name). A stale or unusable
archive is ignored by the JVM (silently: `-Xlog:cds*=off`), never an error.

Location: `$SEXSTREAM_JVM_CACHE`, else `$XDG_CACHE_HOME/sexstream/jvm`, else
`~/.cache/sexstream/jvm`. `SEXSTREAM_JVM_ARCHIVE=off` disables its use (to measure
without it).
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("sexstream")

CACHE_ENV = "SEXSTREAM_JVM_CACHE"
SWITCH_ENV = "SEXSTREAM_JVM_ARCHIVE"
#: Silences the JVM's CDS warnings (an archive that does not match is simply not used).
QUIET_CDS = "-Xlog:cds*=off"
#: JVM options of the driver (and executors on this machine): the JVM only coordinates
#: here (SExtractor does the work), so C1-only JIT and the serial GC halve its start-up
#: at no cost to throughput (figures in the README's Performance section).
FAST_START_JVM = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sexstream" / "jvm"


def java_binary() -> str | None:
    """The `java` Spark's launcher runs: $JAVA_HOME/bin/java, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    return os.path.realpath(java) if java and os.path.exists(java) else None


def spark_jars() -> Path:
    from pyspark.find_spark_home import _find_spark_home

    return Path(_find_spark_home()) / "jars"


def archive_key(jvm_options: str) -> str | None:
    """What the archive depends on: the java binary, the JVM options, and Spark's jars
    where they are (the JVM refuses an archive whose class path moved or changed: each
    venv, each reinstall of pyspark gets its own)."""
    java = java_binary()
    if java is None:
        return None
    st = os.stat(java)
    digest = hashlib.sha256(f"{java}\n{st.st_size}\n{st.st_mtime_ns}\n{jvm_options}\n".encode())
    for jar in sorted(spark_jars().resolve().glob("*.jar")):
        js = jar.stat()
        digest.update(f"{jar}\n{js.st_size}\n{js.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def archive_path(jvm_options: str) -> Path | None:
    key = archive_key(jvm_options)
    return None if key is None else cache_dir() / f"driver-{key}.jsa"


def enabled() -> bool:
    return os.environ.get(SWITCH_ENV, "on").lower() not in ("off", "0", "no", "false")


def java_options(jvm_options: str) -> str:
    """The driver JVM options that use the archive, or "" when there is none."""
    if not enabled():
        return ""
    path = archive_path(jvm_options)
    if path is None or not path.is_file():
        return ""
    return f'"-XX:SharedArchiveFile={path}" {QUIET_CDS}'


def hint_if_missing(jvm_options: str) -> None:
    """Log once per run that recording the archive would speed Spark's start-up."""
    if enabled() and not java_options(jvm_options):
        log.info("no driver JVM class archive for this Spark and JVM: `sexstream jvm-archive` "
                 "records one (~30 s, once); Spark then starts about twice as fast")


def build(jvm_options: str, *, force: bool = False, timeout: float = 600.0) -> Path:
    """Record the archive for `jvm_options` (unless it exists); returns its path.

    The recording runs in a child process (a JVM dumps its archive when it exits); the
    file appears under its final name only once complete. Archives of other keys are
    removed when no JVM can use them any more: recorded from these same jars before they
    changed, or from jars that are gone. Those of other venvs stay."""
    path = archive_path(jvm_options)
    if path is None:
        raise RuntimeError("no java found (JAVA_HOME or PATH): Spark needs Java 17 or later")
    if path.is_file() and not force:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        proc = subprocess.run([sys.executable, "-m", "streaming.jvmrecord", str(partial)],
                              capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, SWITCH_ENV: "off"})
        if proc.returncode != 0 or not partial.is_file() or partial.stat().st_size == 0:
            raise RuntimeError(f"recording the JVM class archive failed ({proc.returncode}):\n"
                               f"{proc.stderr[-3000:]}")
        path.with_suffix(".jars").write_text(f"{spark_jars().resolve()}\n")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    jars = spark_jars().resolve()
    for old in path.parent.glob("driver-*.jsa"):
        recorded_from = _recorded_from(old)
        if old != path and (recorded_from is None or recorded_from == jars or not recorded_from.is_dir()):
            _remove(old)
    return path


def _remove(archive: Path) -> None:
    """Delete `archive` and its sidecar."""
    archive.unlink(missing_ok=True)
    archive.with_suffix(".jars").unlink(missing_ok=True)


def _recorded_from(archive: Path) -> Path | None:
    """The Spark jars folder `archive` was recorded from (its sidecar), None if unknown."""
    try:
        return Path(archive.with_suffix(".jars").read_text().strip())
    except OSError:
        return None


def cmd_jvm_archive(args: argparse.Namespace) -> int:
    path = archive_path(FAST_START_JVM)
    if args.remove:
        archives = list(cache_dir().glob("driver-*.jsa"))
        for archive in archives:
            _remove(archive)
        print(f"removed {len(archives)} archive(s) from {cache_dir()}")
        return 0
    if args.show:
        state = "present" if path is not None and path.is_file() else "absent"
        print(f"{path} ({state}{'' if enabled() else f'; unused: {SWITCH_ENV}=off'})")
        return 0 if state == "present" else 1
    t0 = time.monotonic()
    fresh = args.rebuild or path is None or not path.is_file()
    path = build(FAST_START_JVM, force=args.rebuild)
    size = path.stat().st_size / 2**20
    print(f"{'recorded' if fresh else 'already present:'} {path} ({size:.0f} MiB"
          f"{f', {time.monotonic() - t0:.0f} s' if fresh else ''})")
    return 0


def register(sub) -> None:
    p = sub.add_parser("jvm-archive", help="record the driver JVM's class archive (Spark starts ~2x faster)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rebuild", action="store_true", help="record it again even if present")
    p.add_argument("--show", action="store_true", help="print where it is and whether it exists")
    p.add_argument("--remove", action="store_true", help="delete the archives of the cache folder")
    p.set_defaults(func=cmd_jvm_archive)
