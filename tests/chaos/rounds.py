"""The chaos loop: seeded rounds of faults against a real daemon, then a drain and an audit.

One round is one life of the daemon: it starts (with a crash hook armed for the kinds
that need one), the writer drops the round's arrivals at random moments, and the
round's fault ends that life: a kill -9 (at a random moment, inside SExtractor, or at a
crash hook) or a SIGTERM. Some rounds also lose a Spark worker on the way (on the
standalone cluster), and some are followed by the loss of the checkpoint folder. After
the last round the writer finishes, a daemon runs undisturbed until every dropped file
has its verdict, stops with SIGTERM, and `audit.audit` compares the sink with the truth.

Everything random comes from `ChaosConfig.seed`: the same seed plans the same arrivals
and the same faults in the same order (their exact moments still depend on the machine).
"""
from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from sexstream import extractor, settings
from sexstream.settings import split_list
from chaos import feed as feed_mod
from chaos.audit import Audit, Oracle, audit
from chaos.daemon import DaemonProcess, reap_pidfiles
from chaos.faults import (HOOK_EXIT, HOOKS, KILL_KINDS, Fault, delete_checkpoint,
                                    hook_flags, next_batch_id)
from chaos.report import render

ROOT = Path(__file__).resolve().parents[2]
#: The SExtractor double that crashes, exits, hangs or is slow by image name.
FAULTY_DOUBLE = ROOT / "tests" / "doubles" / "sextractor_faulty"
KEYS = "NUMBER,EXT_NUMBER,FLUX_ISO,FLUXERR_ISO,MAG_ISO,X_IMAGE,Y_IMAGE,ALPHA_J2000,DELTA_J2000,FLAGS"
FITSKEYS = "FILTER,RUNID,EXPTIME"
PIDDIR_ENV = "SEXSTREAM_DOUBLE_PIDDIR"


@dataclass(frozen=True)
class ChaosConfig:
    """A chaos run. Times in seconds; `nx` x `ny` pixels per image."""

    seed: int = 1
    rounds: int = 6
    images: int = 30
    sigterm_share: float = 1 / 6       # the other rounds end with a kill -9 of some kind
    cluster: bool = False              # a 2-worker standalone cluster, with worker losses
    worker_loss_share: float = 0.3
    checkpoint_loss_share: float = 0.1  # and always after the first crash_between_commits
    nx: int = 256
    ny: int = 256
    timeout: float = 4.0               # --timeout: a hung SExtractor is killed after it
    window_s: float = 15.0             # faults land within this long after the query starts
    max_files_per_trigger: int = 6
    keys: str = KEYS
    fitskeys: str = FITSKEYS
    mix: dict[str, int] | None = None
    drain_timeout: float = 900.0


@dataclass
class RoundPlan:
    index: int
    kind: str
    arrivals: list[feed_mod.Arrival]
    worker_loss: bool = False
    checkpoint_loss: bool = False


def schedule(config: ChaosConfig) -> list[RoundPlan]:
    """The rounds of `config`, from its seed: every kill kind in turn, SIGTERMs mixed in."""
    rng = random.Random(config.seed)
    n_term = round(config.rounds * config.sigterm_share)
    kinds = [KILL_KINDS[i % len(KILL_KINDS)] for i in range(config.rounds - n_term)]
    kinds += ["sigterm"] * n_term
    rng.shuffle(kinds)
    arrivals = feed_mod.plan(config.images, seed=config.seed, mix=config.mix)
    per_round = [arrivals[i::config.rounds] for i in range(config.rounds)]
    plans, split_seen = [], False
    for i, kind in enumerate(kinds):
        p = RoundPlan(i, kind, sorted(per_round[i], key=lambda a: a.index))
        p.worker_loss = config.cluster and rng.random() < config.worker_loss_share
        p.checkpoint_loss = rng.random() < config.checkpoint_loss_share
        if kind == "crash_between_commits" and not split_seen:
            p.checkpoint_loss = split_seen = True
        plans.append(p)
    if config.cluster and plans and not any(p.worker_loss for p in plans):
        plans[rng.randrange(len(plans))].worker_loss = True
    return plans


def spare_arrivals(config: ChaosConfig) -> list[feed_mod.Arrival]:
    """One `slow` arrival per round, dropped by a kill9_in_sextractor round when nothing
    is being extracted at its moment (so that the kill lands inside SExtractor)."""
    return feed_mod.plan(config.rounds, seed=config.seed + 3, mix={"slow": 1},
                         start=config.images)


@dataclass
class ChaosReport:
    config: ChaosConfig
    faults: list[Fault] = field(default_factory=list)
    audit: Audit | None = None
    seconds: float = 0.0
    orphans: list[str] = field(default_factory=list)  # commands that outlived the driver
    drain_exit: int | None = None
    root: str = ""

    @property
    def misbehaved(self) -> list[Fault]:
        return [f for f in self.faults if f.outcome != "ok"]

    @property
    def ok(self) -> bool:
        return self.audit is not None and self.audit.ok and not self.misbehaved \
            and self.drain_exit == 0

    def table(self) -> str:
        return render(self)


class ChaosRun:
    """Runs `config` in the folder `root` (raw, sink, checkpoint, logs)."""

    def __init__(self, config: ChaosConfig, root: Path, *, say=print):
        self.config = config
        self.root = Path(root)
        self.say = say
        self.rng = random.Random(config.seed + 1)
        self.raw, self.sink = self.root / "raw", self.root / "sink"
        self.checkpoint = self.root / "checkpoint"
        self.piddir = self.root / "double-pids"
        self.cluster = None
        self.report = ChaosReport(config, root=str(self.root))
        self.owed_worker_losses = 0   # planned, not yet done (carried to the next rounds)
        self._worker_due: float | None = None
        self._seen_orphans = 0

    def flags(self) -> list[str]:
        c = self.config
        flags = ["--keys", c.keys, "--fitskeys", c.fitskeys, "--binary", str(FAULTY_DOUBLE),
                 "--timeout", str(c.timeout), "--trigger", "1",
                 "--max-files-per-trigger", str(c.max_files_per_trigger)]
        if self.cluster is not None:
            flags += ["--master", self.cluster.master_url]
        return flags

    def oracle(self) -> Oracle:
        c = self.config
        plan = extractor.prepare(settings.load(keys=tuple(split_list(c.keys)),
                                               fitskeys=tuple(split_list(c.fitskeys)),
                                               timeout=max(60.0, c.timeout)))
        return Oracle(plan)

    def run(self) -> ChaosReport:
        t0 = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        saved = os.environ.get(PIDDIR_ENV)
        os.environ[PIDDIR_ENV] = str(self.piddir)  # reaches cluster workers and the daemon
        feed = self.feed = feed_mod.Feed(self.raw, nx=self.config.nx, ny=self.config.ny)
        writer = feed_mod.Writer(feed, seed=self.config.seed + 2)
        writer.start()
        daemon = None
        try:
            if self.config.cluster:
                from cluster import StandaloneCluster

                self.cluster = StandaloneCluster(workers=2, cores_per_worker=1,
                                                 worker_memory="1g").start()
            daemon = DaemonProcess(self.root, raw=self.raw, sink=self.sink,
                                   checkpoint=self.checkpoint, flags=self.flags())
            if self.cluster is not None:
                daemon.executor_pids = self.cluster.running_pids
            plans = schedule(self.config)
            self.spares = spare_arrivals(self.config)
            for p in plans:
                writer.submit(p.arrivals, self.config.window_s)
                self.play(daemon, p)
            writer.wait_idle()
            self.drain(daemon, feed)
            self.say("auditing the sink against direct SExtractor runs ...")
            self.report.audit = audit(self.sink, feed.snapshot(), self.oracle())
            self.report.orphans += [cmd for _, cmd in daemon.orphans[self._seen_orphans:]]
        finally:
            writer.close()
            if daemon is not None:
                daemon.stop()
            reap_pidfiles(self.piddir)
            if self.cluster is not None:
                self.cluster.stop()
            if saved is None:
                os.environ.pop(PIDDIR_ENV, None)
            else:
                os.environ[PIDDIR_ENV] = saved
        self.report.seconds = time.monotonic() - t0
        return self.report

    # -- one round

    def play(self, daemon: DaemonProcess, p: RoundPlan) -> None:
        fault = Fault(p.index, p.kind)
        hooks = []
        if p.kind in HOOKS:
            target = next_batch_id(self.checkpoint)
            hooks = hook_flags(p.kind, target)
            fault.detail = f"batch {target}"
        daemon.start(hooks)
        self.owed_worker_losses += p.worker_loss
        self._worker_due = None
        if p.kind in HOOKS:
            self.await_hook(daemon, fault)
        else:
            self.strike(daemon, fault)
        self.report.faults.append(fault)
        self.report.orphans += [cmd for _, cmd in daemon.orphans[self._seen_orphans:]]
        self._seen_orphans = len(daemon.orphans)
        self.report.orphans += [cmd for _, cmd in reap_pidfiles(self.piddir)]
        extra = []
        if p.checkpoint_loss and delete_checkpoint(self.checkpoint):
            self.report.faults.append(Fault(p.index, "checkpoint_loss", detail="while down"))
            extra.append("checkpoint deleted")
        if self.cluster is not None:
            while len(self.cluster.alive_worker_ports()) < 2:
                self.cluster.start_worker()
        note = f" [{', '.join(extra)}]" if extra else ""
        self.say(f"round {p.index + 1}/{self.config.rounds} {p.kind} {fault.detail}: "
                 f"{fault.outcome} (exit {fault.exit_code}, at {fault.at_s or 0:.1f} s, "
                 f"{len(p.arrivals)} arrivals){note}")

    def _moment(self, daemon: DaemonProcess) -> float:
        """A random moment (seconds after start) for a fault: a third of them while the
        daemon starts up, the rest once its query watches the folder."""
        if self.rng.random() < 1 / 3:
            return self.rng.uniform(0.5, 12.0)
        return -self.rng.uniform(0.0, self.config.window_s)  # negative: after "watching"

    def _wait(self, daemon: DaemonProcess, until, fault: Fault, timeout: float,
              disturb: bool = True) -> bool:
        """Poll until `until()` is true, losing an owed worker on the way (`disturb`);
        False if the daemon exited first or `timeout` passed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if disturb:
                self._maybe_lose_worker(daemon, fault)
            if not daemon.running:
                return False
            if until():
                return True
            time.sleep(0.1)
        return False

    def strike(self, daemon: DaemonProcess, fault: Fault) -> None:
        """kill -9 or SIGTERM at a random moment (kill9_in_sextractor: during a run)."""
        moment = self._moment(daemon)
        watched_at = [None]

        def due() -> bool:
            if moment >= 0:
                return daemon.uptime() >= moment
            if watched_at[0] is None and daemon.watching():
                watched_at[0] = daemon.uptime()
            return watched_at[0] is not None and daemon.uptime() >= watched_at[0] - moment

        if not self._wait(daemon, due, fault, 300):
            return self._died(daemon, fault)
        if fault.kind == "kill9_in_sextractor":
            seen = self._wait(daemon, daemon.extracting, fault, 3)
            if not seen and daemon.running:
                # nothing in progress: drop a slow image of the plan's reserve and wait for it
                self.feed.drop(self.spares[fault.round])
                fault.detail = f"on {self.spares[fault.round].name}"
                seen = self._wait(daemon, lambda: daemon.extracting("slow"), fault, 90)
            if not daemon.running:
                return self._died(daemon, fault)
            if not seen:
                fault.detail = "no SExtractor run seen (killed anyway)"
        fault.at_s = daemon.uptime()
        if fault.kind == "sigterm":
            watching = daemon.watching()
            code = daemon.sigterm(240)
            fault.exit_code = code
            if code is None:
                fault.outcome = "did not stop within 240 s of SIGTERM"
            elif code == -15 and not watching:
                fault.detail = "before the query started: ended by the signal itself"
            elif code != 0:
                fault.outcome = f"exit {code} after SIGTERM: {daemon.tail(5)}"
            return
        daemon.kill9()
        fault.exit_code = -9

    def await_hook(self, daemon: DaemonProcess, fault: Fault) -> None:
        self._wait(daemon, lambda: False, fault, 240)
        code = daemon.wait_exit(0.1)
        fault.at_s = daemon.uptime()
        if code is None:
            daemon.kill9()
            fault.outcome = "crash hook not reached in 240 s (killed)"
            fault.exit_code = -9
            return
        fault.exit_code = code
        if code != HOOK_EXIT:
            fault.outcome = f"exit {code} instead of the hook's {HOOK_EXIT}: {daemon.tail(5)}"

    def _died(self, daemon: DaemonProcess, fault: Fault) -> None:
        code = daemon.wait_exit(60)
        fault.exit_code = code
        fault.at_s = daemon.uptime()
        fault.outcome = f"the daemon exited by itself ({code}): {daemon.tail(8)}"

    def _maybe_lose_worker(self, daemon: DaemonProcess, fault: Fault) -> None:
        """Kill an owed worker a random while after the query started watching."""
        if self.cluster is None or not self.owed_worker_losses or not daemon.watching():
            return
        if self._worker_due is None:
            self._worker_due = daemon.uptime() + self.rng.uniform(0.5, max(1.0, self.config.window_s / 2))
        elif daemon.uptime() >= self._worker_due:
            self.owed_worker_losses -= 1
            self._worker_due = None
            self.lose_worker(fault)

    def lose_worker(self, fault: Fault) -> None:
        alive = self.cluster.alive_worker_ports()
        choices = [i for i, d in enumerate(self.cluster.worker_daemons) if d.port in alive]
        if len(choices) < 2:
            return
        index = self.rng.choice(choices)
        pid = self.cluster.kill_worker(index)
        self.report.faults.append(Fault(fault.round, "worker_loss", detail=f"worker pid {pid}"))

    # -- the end

    def drain(self, daemon: DaemonProcess, feed: feed_mod.Feed) -> None:
        """Run undisturbed until every dropped file has a verdict, then SIGTERM."""
        want = {a.path for a in feed.snapshot()}
        daemon.start()
        self.say(f"draining: {len(want)} files dropped, waiting for their verdicts ...")

        def done() -> bool:
            return daemon.watching() and want <= daemon.verdicts()

        if not self._wait(daemon, done, Fault(-1, "drain"), self.config.drain_timeout, disturb=False):
            self.say(f"drain ended without every verdict: {daemon.tail(10)}")
        quiet_since, seen = time.monotonic(), len(daemon.batches())
        while daemon.running and time.monotonic() - quiet_since < 3.0:  # no batch for 3 s
            time.sleep(0.5)
            if len(daemon.batches()) != seen:
                quiet_since, seen = time.monotonic(), len(daemon.batches())
        self.report.drain_exit = daemon.sigterm(240) if daemon.running else daemon.wait_exit(1)
