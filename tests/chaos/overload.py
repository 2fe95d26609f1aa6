"""Overload: thousands of tiny images dropped at once into a running daemon.

What must hold: the burst is absorbed in bounded micro-batches (no batch holds more
than --max-files-per-trigger files), the driver's memory stays flat while it drains
(its Python and its JVM, sampled from /proc), the lag (file mtime -> commit) shrinks
back once the backlog is gone (a probe dropped afterwards waits far less than the
burst's last files did), and the audit finds every image exactly once.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from sexstream import extractor, settings
from sexstream.settings import split_list
from chaos import feed as feed_mod
from chaos.audit import Audit, Oracle, audit
from chaos.report import table
from chaos.daemon import BatchLine, DaemonProcess, RssSampler

KEYS = "NUMBER,EXT_NUMBER,FLUX_ISO,MAG_ISO,X_IMAGE,Y_IMAGE,FLAGS"
FITSKEYS = "FILTER"
#: "Flat": the driver's resident memory in the last third of the burst may exceed the
#: first third's median by at most this share plus `RSS_SLACK_MIB` (heaps grow in steps).
RSS_GROWTH_SHARE = 0.25
RSS_SLACK_MIB = 64


@dataclass
class BurstReport:
    n: int
    size: int
    max_files: int
    files_per_task: int
    seconds: float = 0.0             # from the burst to its last verdict
    burst: list[BatchLine] = field(default_factory=list)
    probe: list[BatchLine] = field(default_factory=list)
    rss: list[tuple[float, int, int]] = field(default_factory=list)  # (t, python KiB, jvm KiB)
    audit: Audit | None = None
    exit_code: int | None = None
    note: str = ""

    @property
    def largest_batch(self) -> int:
        return max((b.files for b in self.burst + self.probe), default=0)

    @property
    def bounded(self) -> bool:
        return bool(self.burst) and self.largest_batch <= self.max_files

    @property
    def burst_lag(self) -> float:
        return max((b.lag_s or 0.0 for b in self.burst), default=0.0)

    @property
    def probe_lag(self) -> float | None:
        lags = [b.lag_s for b in self.probe if b.lag_s is not None]
        return max(lags) if lags else None

    @property
    def lag_recovered(self) -> bool:
        return self.probe_lag is not None and self.probe_lag < self.burst_lag / 2

    def growth_mib(self, which: int) -> tuple[float, float]:
        """(median of the first third, max of the last third) of column `which` (1: the
        driver's Python, 2: its JVM), MiB, over the samples taken during the burst."""
        values = [s[which] / 1024 for s in self.rss if s[which]]
        if len(values) < 6:
            return 0.0, 0.0
        third = len(values) // 3
        return statistics.median(values[:third]), max(values[-third:])

    def flat(self, which: int) -> bool:
        early, late = self.growth_mib(which)
        return late <= early * (1 + RSS_GROWTH_SHARE) + RSS_SLACK_MIB

    @property
    def ok(self) -> bool:
        return (self.bounded and self.lag_recovered and self.flat(1) and self.flat(2)
                and self.audit is not None and self.audit.ok and self.exit_code == 0)

    def table(self) -> str:
        py, jvm = self.growth_mib(1), self.growth_mib(2)
        lines = [
            ("burst", f"{self.n} images of {self.size}x{self.size} dropped at once, "
                      f"--max-files-per-trigger {self.max_files}, --files-per-task {self.files_per_task}"),
            ("absorbed in", f"{len(self.burst)} batches, {self.seconds:.0f} s "
                            f"(at least {math.ceil(self.n / self.max_files)} batches needed)"),
            ("largest batch", f"{self.largest_batch} files ({'bounded' if self.bounded else 'NOT bounded'})"),
            ("lag", f"max {self.burst_lag:.1f} s during the burst, {self.probe_lag} s for a probe "
                    f"afterwards ({'recovered' if self.lag_recovered else 'NOT recovered'})"),
            ("driver Python RSS", f"{py[0]:.0f} MiB early -> {py[1]:.0f} MiB late "
                                  f"({'flat' if self.flat(1) else 'GROWING'})"),
            ("driver JVM RSS", f"{jvm[0]:.0f} MiB early -> {jvm[1]:.0f} MiB late "
                               f"({'flat' if self.flat(2) else 'GROWING'})"),
            ("SIGTERM exit", str(self.exit_code)),
        ]
        if self.audit is not None:
            a = self.audit
            lines += [("images rows", str(a.rows)), ("sources rows", str(a.sources)),
                      ("lost", str(len(a.lost))),
                      ("duplicated", str(a.extra_rows + a.duplicate_sources))]
        lines.append(("verdict", "PASS" if self.ok else "FAIL"))
        text = table(lines)
        if self.note:
            text.append(self.note)
        if self.audit is not None and not self.audit.ok:
            text += ["", "Problems:"] + [f"- {p}" for p in self.audit.problems()]
        return "\n".join(text)


def run_burst(root: Path, *, n: int = 2000, size: int = 64, seed: int = 1, max_files: int = 250,
              files_per_task: int = 25, probes: int = 3, timeout: float = 1800.0,
              say=print) -> BurstReport:
    """Drop `n` images of `size` x `size` at once into a running daemon under `root`."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    report = BurstReport(n, size, max_files, files_per_task)
    feed = feed_mod.Feed(root / "raw", nx=size, ny=size)
    daemon = DaemonProcess(root, raw=root / "raw", sink=root / "sink", checkpoint=root / "checkpoint",
                           flags=["--keys", KEYS, "--fitskeys", FITSKEYS, "--trigger", "1",
                                  "--max-files-per-trigger", str(max_files),
                                  "--files-per-task", str(files_per_task)])
    sampler = RssSampler(daemon)
    try:
        daemon.start()
        deadline = time.monotonic() + 300
        while not daemon.watching() and daemon.running and time.monotonic() < deadline:
            time.sleep(0.5)
        if not daemon.watching():
            report.note = f"the daemon did not start: {daemon.tail(10)}"
            return report
        sampler.start()
        t0 = time.monotonic()
        dropped = feed.burst(n, seed=seed)
        say(f"dropped {n} images in {time.monotonic() - t0:.1f} s; waiting for their verdicts ...")
        daemon.wait_verdicts([a.path for a in dropped], timeout, poll=2.0)
        report.seconds = time.monotonic() - t0
        sampler.stop()
        report.rss = list(sampler.samples)
        report.burst = daemon.batches()
        say(f"absorbed in {report.seconds:.0f} s, {len(report.burst)} batches; dropping "
            f"{probes} probe images")
        for a in feed_mod.plan(probes, seed=seed + 1, mix={"good": 1}, start=n):
            feed.drop(feed_mod.Arrival(a.index, a.kind, f"probe/{a.index:05d}_probe.fits", a.seed))
        daemon.wait_verdicts([a.path for a in feed.snapshot()], 300)
        report.probe = daemon.batches()[len(report.burst):]
        report.exit_code = daemon.sigterm(240)
        say("auditing ...")
        plan = extractor.prepare(settings.load(keys=tuple(split_list(KEYS)),
                                               fitskeys=tuple(split_list(FITSKEYS))))
        report.audit = audit(daemon.sink, feed.snapshot(), Oracle(plan))
        return report
    finally:
        if sampler.is_alive():
            sampler.stop()
        daemon.stop()
