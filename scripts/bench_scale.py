#!/usr/bin/env python3
"""Survey-scale benchmark of the daemon (issue 12): costs that must not grow with history.

    scripts/bench_scale.py history --files 0 200000 1000000   # ready / restart / idle CPU / RSS / latency
    scripts/bench_scale.py commits --to 20000                 # commit and open cost after 100 and N commits
    scripts/bench_scale.py ceiling --files 3000               # files/s the driver alone feeds
    scripts/bench_scale.py child                              # the measuring child's cost per image
    scripts/bench_scale.py burst                              # 48 W48-like CCDs at once vs bare parallel
    scripts/bench_scale.py sustained --minutes 10             # 0.85 of bare capacity, backlog bounded

`history`: for each size, a raw tree of that many tiny generated FITS files in night
folders (old mtimes), all with their verdict in the sink (written through the project's
own parts and commits, the verdict index built as a running daemon keeps it); then a real
`sexstream run` (the default settings `make run` uses) on a fresh checkpoint: seconds
from its start until a new CCD is committed, its latency p50/p95 for one W48-like CCD
every 3 s (against bare SExtractor on the same CCD), its idle CPU over 20 s (the
machine's busy time beside the idle daemon less the machine's own, the lower of before
the daemon starts and after it stops: every process counts, those that end in the window
too), its processes' RSS, and the same start again on the same checkpoint (restart).

Every figure is measured in the run that prints it; the machine is a shared 2-core VM,
so compare within a run.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the harness: the daemon driver with batch events

from chaos.daemon import DaemonProcess, read_batches, rss_kib  # noqa: E402

from sexstream import extractor, parts, settings, synthetic, transaction  # noqa: E402
from sexstream.schema import images_table  # noqa: E402
from sexstream.sink import Sink  # noqa: E402

KEYS = "NUMBER,EXT_NUMBER,FLUX_ISO,MAG_ISO,ALPHA_J2000,DELTA_J2000,X_IMAGE,Y_IMAGE,FLAGS"
FITSKEYS = "FILTER,RUNID"
DOUBLES = ROOT / "tests" / "doubles"
BASELINES = ROOT.parent / "shared" / "baselines"
W48 = dict(nx=2048, ny=4612)


def plan_for(**more):
    return extractor.prepare(settings.load(keys=tuple(KEYS.split(",")), fitskeys=tuple(FITSKEYS.split(",")),
                                           **more))


def tiny_fits(i: int) -> bytes:
    """A valid 1x1 FITS image whose bytes differ with `i` (5760 bytes)."""
    cards = [f"SIMPLE  = {'T':>20}", f"BITPIX  = {8:>20}", f"NAXIS   = {2:>20}", f"NAXIS1  = {1:>20}",
             f"NAXIS2  = {1:>20}", f"SERIAL  = {i:>20}", "END"]
    header = "".join(c.ljust(80) for c in cards).ljust(2880).encode()
    return header + b"\0" * 2880


def make_history(root: Path, n: int, config_hash: str, per_night: int = 5000) -> float:
    """`n` tiny files in night folders under root/raw with an ok verdict each in root/sink;
    returns the seconds the verdict index took to build (as a daemon's first start would)."""
    import xxhash

    raw, sink = root / "raw", root / "sink"
    raw.mkdir(parents=True, exist_ok=True)
    old = time.time() - 30 * 86400
    records, batch = [], 0
    now = datetime.now(timezone.utc)

    def flush():
        nonlocal records, batch
        if records:
            table = images_table(records, tuple(FITSKEYS.split(",")), batch, now)
            part = parts.write_part(sink / "images", table, batch_id=batch, task_tag="history")
            transaction.commit(sink / "images", [part], app_id="history", batch_id=batch)
            records, batch = [], batch + 1

    for i in range(n):
        night = raw / f"2025-{1 + (i // per_night) // 28 % 12:02d}-{1 + (i // per_night) % 28:02d}-{i // per_night:04d}"
        if i % per_night == 0:
            night.mkdir(parents=True, exist_ok=True)
        path = night / f"exp{i:08d}.fits"
        data = tiny_fits(i)
        path.write_bytes(data)
        os.utime(path, (old, old))
        st = path.stat()
        h = xxhash.xxh3_128_hexdigest(data)
        records.append({"path": str(path), "size": st.st_size, "content_hash": h,
                        "mtime": datetime.fromtimestamp(st.st_mtime, timezone.utc),
                        "image_id": xxhash.xxh3_64_hexdigest(f"{path}\0{h}\0{config_hash}".encode()),
                        "status": "ok", "n_sources": 0, "n_extensions": 1, "config_hash": config_hash,
                        "attempts": 1, "started": now})
        if len(records) >= 50_000:
            flush()
    flush()
    for night in raw.iterdir() if raw.exists() else ():
        os.utime(night, (old, old))
    t0 = time.monotonic()
    Sink(sink).sync()
    return time.monotonic() - t0


def bare_seconds(image: Path, repeat: int = 5) -> float:
    """Median seconds of source-extractor alone on `image` with the benchmark's keys."""
    plan = plan_for()
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeat):
            t0 = time.perf_counter()
            extractor.run_sextractor(image, plan, Path(tmp))
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


class Dropper(threading.Thread):
    """Renames a hard link of `bases[i % len]` into raw/tonight every `every` seconds."""

    def __init__(self, raw: Path, bases: list[Path], every: float, count: int, tag: str):
        super().__init__(daemon=True)
        self.folder = raw / f"tonight-{tag}"
        self.bases, self.every, self.count, self.tag = bases, every, count, tag
        self.dropped: dict[str, float] = {}
        self.halt = threading.Event()

    def run(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        nxt = time.time()
        for i in range(self.count):
            if self.halt.wait(max(0.0, nxt - time.time())):
                return
            target = self.folder / f"ccd-{self.tag}-{i:05d}.fits"
            tmp = self.folder / f".{target.name}.part"
            os.link(self.bases[i % len(self.bases)], tmp)
            os.replace(tmp, target)
            self.dropped[str(target)] = time.time()
            nxt += self.every


def commit_times(d: DaemonProcess, events: list | None = None) -> dict[str, float]:
    """path -> when its images row was committed (the batch event's committed_at), for the
    batch events `events` (all by default); only their batches' files are read (the
    table's statistics on batch_id)."""
    at = {b.batch_id: b.committed_at for b in (read_batches(d.events) if events is None else events)}
    if not at:
        return {}
    images = d_images(d, [("batch_id", "in", sorted(at))])
    return {p: at[b] for p, b in zip(images["path"], images["batch_id"]) if b in at}


def d_images(d: DaemonProcess, filters=None) -> dict:
    from sexstream.tables import read_table

    t = read_table(d.sink / "images", columns=["path", "batch_id"], filters=filters)
    return {"path": t["path"].to_pylist(), "batch_id": t["batch_id"].to_pylist()} if t.num_rows else \
        {"path": [], "batch_id": []}


class Commits:
    """The commit times of a daemon's files, read as batches come: `poll()` reads the rows
    of the batch events that appeared since the last poll, and nothing when none did (a
    benchmark that read the whole table twice a second would take ~5% of this machine's
    CPU from the daemon it measures)."""

    def __init__(self, d: DaemonProcess):
        self.d = d
        self.done: dict[str, float] = {}
        self.seen = 0  # batch events read

    def poll(self) -> dict[str, float]:
        events = read_batches(self.d.events)
        if len(events) > self.seen:
            self.done.update(commit_times(self.d, events[self.seen:]))
            self.seen = len(events)
        return self.done


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (user, nice, system, irq, softirq of
    /proc/stat; not idle, iowait or time stolen by the hypervisor)."""
    with open("/proc/stat") as fh:
        fields = fh.readline().split()[1:]
    return sum(int(fields[k]) for k in (0, 1, 2, 5, 6)) / os.sysconf("SC_CLK_TCK")


def busy_over(seconds: float) -> float:
    """The machine's busy CPU seconds over the next `seconds` (this process sleeps)."""
    c0 = machine_busy()
    time.sleep(seconds)
    return machine_busy() - c0


def tree_rss_mib(d: DaemonProcess) -> float:
    return sum((rss_kib(pid) or 0) for pid in d.tree()) / 1024


def wait_committed(d: DaemonProcess, drop: Dropper, timeout: float = 600) -> dict[str, float]:
    """path -> commit time of every file `drop` dropped, once all are committed."""
    deadline = time.time() + timeout
    while drop.is_alive() or len(drop.dropped) < drop.count:
        if time.time() > deadline:
            raise SystemExit(f"{drop.count} CCDs not dropped within {timeout:.0f} s")
        time.sleep(0.2)
    done = drain(d, set(drop.dropped), max(deadline - time.time(), 1.0))
    return {p: done[p] for p in drop.dropped}


def run_daemon_case(root: Path, bases: list[Path], label: str, ccds: int = 20) -> dict:
    """Start a daemon over root (fresh checkpoint), time its first new CCD (dropped at
    its start), then, once it is ready, the latency of `ccds` CCDs one every 3 s, its idle
    CPU and RSS; restart it on the same checkpoint and time its first new CCD again."""
    d = DaemonProcess(root, raw=root / "raw", sink=root / "sink", checkpoint=root / f"checkpoint-{label}",
                      flags=["--keys", KEYS, "--fitskeys", FITSKEYS])
    # the daemon's idle CPU is the machine's busy time beside it, less the machine's own
    # (every process counts, those that end in the window too). The machine's own is
    # taken before the daemon starts (once the history's writes are flushed) and after it
    # stops, and the lower one is subtracted: the daemon is charged any doubt.
    os.sync()
    out: dict = {"machine_before_s_per_20s": busy_over(20)}
    try:
        for phase in ("start", "restart"):
            t0 = time.time()
            d.start()
            first = Dropper(root / "raw", bases, 3.0, 1, f"{label}-{phase}-first")
            first.run()  # at once, while the daemon starts
            out[f"{phase}_ready_s"] = min(wait_committed(d, first).values()) - t0
            if phase == "start":
                drop = Dropper(root / "raw", bases, 3.0, ccds, f"{label}-{phase}")
                drop.start()
                done = wait_committed(d, drop)
                lat = sorted(done[p] - t for p, t in drop.dropped.items())
                out["latency_p50_s"] = statistics.median(lat)
                out["latency_p95_s"] = lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))]
                out["latency_max_s"] = lat[-1]
                time.sleep(5)
                out["busy_beside_daemon_s_per_20s"] = busy_over(20)
                out["rss_mib"] = tree_rss_mib(d)
                out["driver_rss_mib"] = (rss_kib(d.pid) or 0) / 1024
            code = d.sigterm(120)
            if code != 0:
                raise SystemExit(f"daemon stopped with {code}:\n{d.tail()}")
    finally:
        d.stop()
    time.sleep(5)
    out["machine_after_s_per_20s"] = busy_over(20)
    out["idle_cpu_s_per_20s"] = out["busy_beside_daemon_s_per_20s"] - min(out["machine_before_s_per_20s"],
                                                                          out["machine_after_s_per_20s"])
    return out


def cmd_history(args) -> int:
    work = Path(args.work)
    base_dir = work / "bases"
    bases = sorted(base_dir.glob("*.fits")) if base_dir.is_dir() else []
    if len(bases) < 4:
        bases = synthetic.make_night(base_dir, 4, seed=12, **W48)
    bare = bare_seconds(bases[0])
    config_hash = plan_for().config_hash
    rows = []
    for n in args.files:
        root = work / f"history-{n}"
        if root.exists():
            shutil.rmtree(root)
        t0 = time.monotonic()
        index_s = make_history(root, n, config_hash)
        print(f"history of {n} files made in {time.monotonic() - t0:.0f} s (index built in {index_s:.1f} s)",
              flush=True)
        r = run_daemon_case(root, bases, str(n))
        r.update(files=n, index_s=index_s)
        rows.append(r)
        print(r, flush=True)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\nbare SExtractor on one W48-like CCD: {bare:.2f} s (median of 5)")
    print("| history (files) | new CCD committed after start | restart, same checkpoint | idle CPU / 20 s | "
          "RSS, all processes | driver Python RSS | latency p50 (bare +) | p95 (bare +) | max |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['files']:,} | {r['start_ready_s']:.1f} s | {r['restart_ready_s']:.1f} s | "
              f"{r['idle_cpu_s_per_20s']:.1f} s | {r['rss_mib']:.0f} MiB | {r['driver_rss_mib']:.0f} MiB | "
              f"{r['latency_p50_s']:.2f} s (+{r['latency_p50_s'] - bare:.2f}) | "
              f"{r['latency_p95_s']:.2f} s (+{r['latency_p95_s'] - bare:.2f}) | {r['latency_max_s']:.2f} s |")
    return 0


def cmd_commits(args) -> int:
    """Commit and open cost of a sink's table over commits 100-199 and the 100 before
    `--to` (one checkpoint cycle each: an open reads the newest checkpoint and replays the
    commits after it, so a single open depends on where in the cycle it falls), as the
    daemon pays them: one part per commit through `Sink` (a kept table handle brought up to date
    incrementally, the held-batch check first), Delta checkpoints every 100 commits, and
    the daemon's maintenance (`maintenance.compact`, what `Upkeep` runs) every
    `--compact-every` commits (3,600: one commit a second between hourly runs)."""
    import pyarrow as pa

    from sexstream import maintenance
    from sexstream.tables import open_table

    root = Path(tempfile.mkdtemp(prefix="sexstream-commits-"))
    sink = Sink(root / "sink")
    table = sink.path("images")

    def one(b: int) -> float:
        part = parts.write_part(table, pa.table({"path": [f"/raw/{b}.fits"], "n": pa.array([b], pa.int64())}),
                                batch_id=b, task_tag="t")
        t0 = time.perf_counter()
        if not sink.holds("images", "bench", b):
            sink.commit("images", [part], app_id="bench", batch_id=b)
        return time.perf_counter() - t0

    def opening() -> float:
        t0 = time.perf_counter()
        open_table(table).to_pyarrow_table(columns=["n"])
        return time.perf_counter() - t0

    def open_only() -> float:  # the log: the newest checkpoint and the entries after it
        t0 = time.perf_counter()
        open_table(table).transaction_version("bench")
        return time.perf_counter() - t0

    results = {}
    b, t_start, compactions = 0, time.monotonic(), 0
    marks = (200, args.to)
    for mark in marks:  # measured over the 100 commits before the mark: one checkpoint cycle
        while b < mark - 100:
            one(b)
            b += 1
            if b % args.compact_every == 0:
                maintenance.compact(str(sink.root), retention_hours=args.retention_hours,
                                    log_retention_hours=args.log_retention_hours)
                compactions += 1
            if b % 2000 == 0:
                print(f"  {b} commits, {time.monotonic() - t_start:.0f} s", flush=True)
        times, opens = [], []
        for k in range(100):  # an open costs the newest checkpoint plus the commits after it
            times.append(one(b))
            b += 1
            opens.append(open_only())
        files = len(open_table(table).file_uris())
        entries = len(os.listdir(os.path.join(table, "_delta_log")))
        results[mark] = (statistics.median(times), statistics.median(opening() for _ in range(5)), files, entries,
                         statistics.median(opens))
        print(f"commits {mark - 100}-{mark - 1}: commit {results[mark][0] * 1000:.0f} ms (spread "
              f"{min(times) * 1000:.0f}-{max(times) * 1000:.0f}), open {results[mark][4] * 1000:.0f} ms (spread "
              f"{min(opens) * 1000:.0f}-{max(opens) * 1000:.0f}), then open+read {results[mark][1] * 1000:.0f} ms, "
              f"{files} live files, {entries} log entries, {compactions} compactions", flush=True)
    (lo_c, lo_o, lo_f, lo_e, lo_p), (hi_c, hi_o, hi_f, hi_e, hi_p) = (results[m] for m in marks)
    print(f"| commits | commit (median of 100) | open (median over the same 100) | open + read all rows | live files | log entries |\n"
          f"|---|---|---|---|---|---|\n"
          f"| 100-199 | {lo_c * 1000:.0f} ms | {lo_p * 1000:.0f} ms | {lo_o * 1000:.0f} ms | {lo_f} | {lo_e} |\n"
          f"| {args.to - 100:,}-{args.to - 1:,} | {hi_c * 1000:.0f} ms ({hi_c / lo_c:.2f}x) | {hi_p * 1000:.0f} ms ({hi_p / lo_p:.2f}x) "
          f"| {hi_o * 1000:.0f} ms ({hi_o / lo_o:.2f}x) | {hi_f} | {hi_e} |")
    shutil.rmtree(root, ignore_errors=True)
    return 0


def instant_catalog(path: Path) -> None:
    """The stand-in's catalog: the benchmark's columns, no row."""
    import numpy as np
    from astropy.io import fits

    plan = plan_for()
    cols = [fits.Column(name=k.name, format="D", array=np.zeros(0)) for k in plan.keys]
    if "EXT_NUMBER" not in {k.name for k in plan.keys}:
        cols.append(fits.Column(name="EXT_NUMBER", format="I", array=np.zeros(0, np.int16)))
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(path, overwrite=True)


def drain(d: DaemonProcess, paths: set[str], timeout: float, commits: Commits | None = None) -> dict[str, float]:
    """Wait until every path of `paths` is committed; their commit times (`commits`: the
    reader of commit times to go on with; a new one reads the batches from now on)."""
    commits = commits or Commits(d)
    deadline = time.time() + timeout
    while time.time() < deadline:
        done = commits.poll()
        if paths <= set(done):
            return done
        if not d.running:
            raise SystemExit(f"daemon exited:\n{d.tail()}")
        time.sleep(0.2)
    raise SystemExit(f"not drained in {timeout} s:\n{d.tail()}")


def stand_in(work: Path) -> tuple[Path, Path]:
    """(binary, catalog template) of the stand-in SExtractor in `work`; the binary copies
    the template named by SEXSTREAM_DOUBLE_CATALOG, which the caller sets."""
    catalog = work / "template.fits"
    instant_catalog(catalog)
    return instant_binary(work), catalog


def instant_binary(work: Path) -> Path:
    """The stand-in SExtractor: the compiled one when a C compiler is here (a Python
    start per image would cost more than the driver's work being measured), else the
    Python script."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc:
        out = work / "sextractor_instant"
        built = subprocess.run([cc, "-O2", "-o", str(out), str(DOUBLES / "sextractor_instant.c")],
                               capture_output=True, text=True)
        if built.returncode == 0:
            return out
        print(f"  (cc failed: {built.stderr.strip()[:200]}; the Python stand-in is used)")
    else:
        print("  (no C compiler: the Python stand-in is used, ~0.1 s of CPU per image of its own)")
    return DOUBLES / "sextractor_instant"


def cmd_child(args) -> int:
    """Per-image cost of the measuring child around a stand-in SExtractor, in rounds of
    (a new child per image, as before `sandbox.Worker`; one child per task's images): what
    the engine pays per image beside SExtractor itself."""
    from sexstream import sandbox

    work = Path(tempfile.mkdtemp(prefix="sexstream-child-"))
    try:
        binary, catalog = stand_in(work)
        os.environ["SEXSTREAM_DOUBLE_CATALOG"] = str(catalog)
        plan = plan_for(binary=str(binary))
        files = []
        for i in range(args.images):
            files.append(work / f"f{i:04d}.fits")
            files[-1].write_bytes(tiny_fits(i))

        def cpu() -> float:
            t = os.times()
            return t.user + t.system + t.children_user + t.children_system

        def per_image(kept: bool) -> tuple[float, float]:
            """Wall and CPU per image; the CPU counts a child once reaped (the kept one at close)."""
            t0, c0 = time.perf_counter(), cpu()
            with sandbox.Worker(max_calls=len(files) if kept else 1) as worker:
                for f in files:
                    if extractor.extract(str(f), plan, worker=worker).record["status"] != "ok":
                        raise SystemExit(f"{f} was not measured")
            return (time.perf_counter() - t0) / len(files), (cpu() - c0) / len(files)

        rows = {"a new child per image": [], "one child per task": []}
        for _ in range(args.rounds):
            rows["a new child per image"].append(per_image(False))
            rows["one child per task"].append(per_image(True))
        print(f"| {args.images} tiny images, stand-in SExtractor, {args.rounds} rounds | wall per image (median, spread) "
              f"| CPU per image, children included (median) |\n|---|---|---|")
        for name, r in rows.items():
            walls = [w for w, _ in r]
            print(f"| {name} | {statistics.median(walls) * 1000:.1f} ms ({min(walls) * 1000:.1f}-"
                  f"{max(walls) * 1000:.1f}) | {statistics.median(c for _, c in r) * 1000:.1f} ms |")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def cmd_ceiling(args) -> int:
    work = Path(tempfile.mkdtemp(prefix="sexstream-ceiling-"))
    binary, catalog = stand_in(work)
    stage = work / "stage"
    stage.mkdir()
    for i in range(args.files):
        (stage / f"f{i:06d}.fits").write_bytes(tiny_fits(i))
    d = DaemonProcess(work, raw=work / "raw", sink=work / "sink", checkpoint=work / "checkpoint",
                      flags=["--keys", KEYS, "--fitskeys", FITSKEYS, "--binary", str(binary),
                             "--max-files-per-trigger", str(args.batch)],
                      env={"SEXSTREAM_DOUBLE_CATALOG": str(catalog)})
    try:
        d.start()
        while not d.watching():
            time.sleep(0.2)
        time.sleep(2)
        t0 = time.time()
        os.rename(stage, work / "raw" / "night")
        done = drain(d, {str(work / "raw" / "night" / f"f{i:06d}.fits") for i in range(args.files)}, 1800)
        seconds = max(done.values()) - t0
        print(f"| stand-in SExtractor ({binary.name}, returns at once) | {args.files} files, {args.batch} per batch | "
              f"{seconds:.1f} s | **{args.files / seconds:.0f} files/s** through discovery, planning and commit |")
        for b in read_batches(d.events):  # where the seconds went
            print(f"  batch {b.batch_id}: {b.files} files, plan {b.plan_s:.2f} s, tasks {b.tasks_s:.1f} s, "
                  f"commit {b.commit_s:.2f} s, {b.seconds:.1f} s in all")
        d.sigterm(120)
    finally:
        d.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def bare_parallel(folder: Path) -> float:
    param = Path(tempfile.mkdtemp()) / "bench.param"
    param.write_text("\n".join(KEYS.split(",")) + "\n")
    out = subprocess.run(["bash", str(BASELINES / "bare_parallel.sh"), str(folder), str(param)],
                         capture_output=True, text=True, check=True).stdout
    return float(out.split("wall_s=")[1].split()[0])


def warm_daemon(work: Path, name: str | None = None) -> DaemonProcess:
    """A daemon over work/raw that has measured one CCD of its own (a new file: one the
    sink already holds would be skipped, and the daemon would still be cold)."""
    d = DaemonProcess(work, raw=work / "raw", sink=work / "sink", checkpoint=work / "checkpoint",
                      flags=["--keys", KEYS, "--fitskeys", FITSKEYS])
    d.start()
    while not d.watching():
        if not d.running:
            raise SystemExit(d.tail())
        time.sleep(0.2)
    warm = work / f"{name or f'warm-{time.time_ns()}'}.fits"
    shutil.copyfile(next((work / "bases").glob("*.fits")), warm)
    os.replace(warm, work / "raw" / warm.name)
    drain(d, {str(work / "raw" / warm.name)}, 300)
    return d


def cmd_burst(args) -> int:
    """Rounds of: bare parallel SExtractor, then the burst into a warm daemon; each round's
    ratio is against the mean of the bare runs before and after it (this VM's speed drifts
    by 20% within minutes)."""
    work = Path(args.work) / "burst"
    bases = sorted((work / "bases").glob("*.fits")) if (work / "bases").is_dir() else []
    if len(bases) < args.n:
        bases = synthetic.make_night(work / "bases", args.n, seed=48, overwrite=True, **W48)
    bares, daemons = [bare_parallel(work / "bases")], []
    for r in range(args.repeat):
        d = warm_daemon(work, f"warm-{os.getpid()}-{r}")
        try:
            stage = work / f"stage-{os.getpid()}-{r}"
            stage.mkdir()
            for b in bases:
                os.link(b, stage / b.name)
            burst = work / "raw" / stage.name.replace("stage", "burst")
            t0 = time.time()
            os.rename(stage, burst)
            done = drain(d, {str(burst / b.name) for b in bases}, 900)
            daemons.append(max(done.values()) - t0)
            d.sigterm(120)
        finally:
            d.stop()
        bares.append(bare_parallel(work / "bases"))
        bare = (bares[-2] + bares[-1]) / 2
        print(f"round {r + 1}: bare parallel {bares[-2]:.2f} s / {bares[-1]:.2f} s (before / after), "
              f"daemon {daemons[-1]:.2f} s: {bare / daemons[-1]:.2f} of bare", flush=True)
    ratios = [(bares[k] + bares[k + 1]) / 2 / daemons[k] for k in range(len(daemons))]
    print(f"| burst of {args.n} W48-like CCDs into the warm daemon | bare parallel {statistics.median(bares):.2f} s "
          f"| daemon {statistics.median(daemons):.2f} s | **{statistics.median(ratios):.2f} of bare** "
          f"(median of {len(ratios)} rounds, {min(ratios):.2f}-{max(ratios):.2f}) |")
    return 0


def cmd_sustained(args) -> int:
    work = Path(args.work) / "sustained"
    bases = sorted((work / "bases").glob("*.fits")) if (work / "bases").is_dir() else []
    if len(bases) < 48:
        bases = synthetic.make_night(work / "bases", 48, seed=48, overwrite=True, **W48)
    before = [bare_parallel(work / "bases") for _ in range(3)]
    capacity = len(bases) / statistics.median(before)
    rate = args.share * capacity
    d = warm_daemon(work)
    try:
        count = int(rate * args.minutes * 60)
        drop = Dropper(work / "raw", bases, 1.0 / rate, count, f"sustained-{os.getpid()}")
        t0 = time.time()
        drop.start()
        backlog = []
        commits = Commits(d)
        while drop.is_alive():
            time.sleep(10)
            done = commits.poll()
            backlog.append((time.time() - t0, len(drop.dropped) - sum(p in done for p in drop.dropped)))
        done = drain(d, set(drop.dropped), 900, commits)
        lat = sorted(done[p] - t for p, t in drop.dropped.items())
        d.sigterm(120)
    finally:
        d.stop()
    after = bare_parallel(work / "bases")
    half = len(backlog) // 2
    print(f"bare capacity {capacity:.2f} CCD/s (bare parallel runs before: {', '.join(f'{b:.2f}' for b in before)} s; "
          f"after: {after:.2f} s, {len(bases) / after:.2f} CCD/s); offered {rate:.2f} CCD/s ({args.share:.2f}) "
          f"for {args.minutes} min: {count} CCDs")
    print(f"backlog (dropped, not committed) every 10 s: {[b for _, b in backlog]}")
    print(f"| sustained {args.share:.2f} of bare capacity, {args.minutes} min | backlog max first half "
          f"{max(b for _, b in backlog[:half] or [(0, 0)])}, second half {max(b for _, b in backlog[half:] or [(0, 0)])} "
          f"| latency p50 {statistics.median(lat):.2f} s, p95 {lat[int(0.95 * (len(lat) - 1))]:.2f} s |")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("history")
    h.add_argument("--files", type=int, nargs="+", default=[0, 200_000, 1_000_000])
    h.add_argument("--work", default="/work/bench-scale")
    h.add_argument("--keep", action="store_true")
    h.set_defaults(func=cmd_history)
    c = sub.add_parser("commits")
    c.add_argument("--to", type=int, default=20_000)
    c.add_argument("--compact-every", type=int, default=3600, help="commits between maintenance runs")
    c.add_argument("--retention-hours", type=float, default=168.0)
    c.add_argument("--log-retention-hours", type=float, default=None,
                   help="the maintenance's log retention (default: the table's own; the daemon's is "
                        "maintenance.log_retention_hours); a short one stands for the window a "
                        "long run keeps")
    c.set_defaults(func=cmd_commits)
    c = sub.add_parser("ceiling")
    c.add_argument("--files", type=int, default=3000)
    c.add_argument("--batch", type=int, default=500)
    c.set_defaults(func=cmd_ceiling)
    c = sub.add_parser("child", help="per-image cost of the measuring child (a new one per image or per task)")
    c.add_argument("--images", type=int, default=60)
    c.add_argument("--rounds", type=int, default=5)
    c.set_defaults(func=cmd_child)
    b = sub.add_parser("burst")
    b.add_argument("-n", type=int, default=48)
    b.add_argument("--repeat", type=int, default=5)
    b.add_argument("--work", default="/work/bench-scale")
    b.set_defaults(func=cmd_burst)
    s = sub.add_parser("sustained")
    s.add_argument("--minutes", type=float, default=10)
    s.add_argument("--share", type=float, default=0.85)
    s.add_argument("--work", default="/work/bench-scale")
    s.set_defaults(func=cmd_sustained)
    args = p.parse_args(argv)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
