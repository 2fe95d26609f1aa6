"""A full disk under the sink: the Delta tables on a small tmpfs that fills up mid-run.

What must hold while it is full: nothing corrupt (every file the Delta log names is on
disk and readable; readers get exactly those rows), nothing committed twice, and the
daemon fails loudly (a non-zero exit naming "No space left on device") rather than
committing half a batch or going on silently. After the file system grows and the
daemon restarts, every image is there exactly once (the audit).

The checkpoint stays on the ordinary disk: only the sink's file system fills. Needs
root and `mount` (a tmpfs); `DiskFullReport.skipped` says why when it cannot run.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from sexstream import extractor, settings
from sexstream.settings import split_list
from chaos import feed as feed_mod
from chaos.audit import Audit, Oracle, audit
from chaos.daemon import DaemonProcess
from chaos.report import table
from chaos.faults import Tmpfs

KEYS = "NUMBER,EXT_NUMBER,FLUX_ISO,MAG_ISO,X_IMAGE,Y_IMAGE,ALPHA_J2000,DELTA_J2000,FLAGS"
FITSKEYS = "FILTER,RUNID"
ENOSPC = "No space left on device"


@dataclass
class DiskFullReport:
    skipped: str | None = None
    size_kib: int = 0
    full_exit: int | None = None       # the daemon's exit status once the disk was full
    loud: bool = False                 # ... and its log named the cause
    while_full: Audit | None = None    # the sink as the full disk left it
    used_kib: int = 0
    exit_code: int | None = None       # the final SIGTERM after the disk grew
    audit: Audit | None = None
    note: str = ""

    @property
    def sound_while_full(self) -> bool:
        a = self.while_full
        return (a is not None and all(t.sound for t in a.tables) and not a.duplicated
                and not a.duplicate_sources and not a.wrong and not a.mismatched)

    @property
    def ok(self) -> bool:
        return (self.skipped is None and self.full_exit not in (None, 0) and self.loud
                and self.sound_while_full and self.audit is not None and self.audit.ok
                and self.exit_code == 0)

    def table(self) -> str:
        if self.skipped:
            return f"disk-full: skipped: {self.skipped}"
        a, w = self.audit, self.while_full
        lines = [
            ("sink file system", f"tmpfs of {self.size_kib} KiB, {self.used_kib} KiB used when the daemon stopped"),
            ("daemon on a full disk", f"exit {self.full_exit}, log names '{ENOSPC}': {self.loud}"),
            ("while full: images rows / lost so far", f"{w.rows} / {len(w.lost)}" if w else "-"),
            ("while full: corrupt or duplicated", "no" if self.sound_while_full else "YES"),
            ("after growing + restart: SIGTERM exit", str(self.exit_code)),
        ]
        if a is not None:
            lines += [("images dropped / rows", f"{a.images} / {a.rows}"),
                      ("lost", str(len(a.lost))),
                      ("duplicated", str(a.extra_rows + a.duplicate_sources)),
                      ("orphan parts (never read)", ", ".join(f"{t.name} {t.orphans}" for t in a.tables))]
        lines.append(("verdict", "PASS" if self.ok else "FAIL"))
        text = table(lines)
        if self.note:
            text.append(self.note)
        for label, x in (("while full", w), ("at the end", a)):
            # while full, images not yet measured are expected: only the rest is a problem
            found = [p for p in (x.problems() if x else []) if x is a or not p.startswith("lost:")]
            if found:
                text += ["", f"Problems {label}:"] + [f"- {p}" for p in found]
        return "\n".join(text)


def run_disk_full(root: Path, *, size_kib: int = 384, images: int = 36, seed: int = 1,
                  say=print) -> DiskFullReport:
    """Fill the sink's tmpfs of `size_kib` KiB with a running daemon, then grow it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    report = DiskFullReport(size_kib=size_kib)
    report.skipped = Tmpfs.unavailable(root)
    if report.skipped:
        return report
    fs = Tmpfs(root / "sinkfs", f"{size_kib}k").mount()
    feed = feed_mod.Feed(root / "raw")
    daemon = DaemonProcess(root, raw=root / "raw", sink=fs.mountpoint / "sink",
                           checkpoint=root / "checkpoint",
                           flags=["--keys", KEYS, "--fitskeys", FITSKEYS, "--trigger", "1",
                                  "--max-files-per-trigger", "4"])
    plan = extractor.prepare(settings.load(keys=tuple(split_list(KEYS)),
                                           fitskeys=tuple(split_list(FITSKEYS))))
    arrivals = feed_mod.plan(images + 4, seed=seed, mix={"good": 1})
    try:
        for a in arrivals[: images // 2]:
            feed.drop(a)
        daemon.start()
        later = iter(arrivals[images // 2: images])
        deadline = time.monotonic() + 300
        while daemon.running and time.monotonic() < deadline:
            a = next(later, None)
            if a is not None:
                feed.drop(a)
            elif {x.path for x in feed.snapshot()} <= daemon.verdicts():
                break
            time.sleep(0.5)
        report.used_kib = fs.usage()[0] // 1024
        if daemon.running:
            report.note = "the disk never stopped the daemon: make --size-kib smaller"
            report.full_exit = daemon.sigterm(240)
            return report
        report.full_exit = daemon.wait_exit(5)
        report.loud = ENOSPC in daemon.run_text()
        say(f"the daemon stopped on the full disk: exit {report.full_exit} "
            f"({report.used_kib} KiB used); auditing what it left ...")
        oracle = Oracle(plan)
        report.while_full = audit(daemon.sink, feed.snapshot(), oracle)
        fs.resize("64m")
        say("grew the file system to 64 MiB; restarting ...")
        daemon.start()
        for a in arrivals[images:]:
            feed.drop(a)
        daemon.wait_verdicts([x.path for x in feed.snapshot()], 300)
        report.exit_code = daemon.sigterm(240) if daemon.running else daemon.wait_exit(5)
        report.audit = audit(daemon.sink, feed.snapshot(), oracle)
        return report
    finally:
        daemon.stop()
        fs.umount()
