"""The result of a chaos run as a table a person reads (Markdown, so it pastes into a README)."""
from __future__ import annotations

import os
from collections import Counter

from chaos.faults import EXTRA_KINDS, STOP_KINDS


def program(command: str) -> str:
    """A short name for a command line: the script a Python runs, else the program."""
    args = command.split()
    if not args:
        return "?"
    if "python" in os.path.basename(args[0]) and len(args) > 1:
        rest = [a for a in args[1:] if not a.startswith("-")]
        return os.path.basename(args[args.index("-m") + 1]) if "-m" in args else (
            os.path.basename(rest[0]) if rest else "python")
    return os.path.basename(args[0])


def _counts(counter: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items(), key=lambda kv: -kv[1])) or "-"


def rows(report) -> list[tuple[str, str]]:
    """(what, value) lines of a `rounds.ChaosReport`."""
    c, a = report.config, report.audit
    kinds = Counter(f.kind for f in report.faults)
    where = "a 2-worker standalone cluster" if c.cluster else "local Spark"
    out = [
        ("run", f"seed {c.seed} on {where}, {c.nx}x{c.ny} images, --timeout {c.timeout:g}, "
                f"--max-files-per-trigger {c.max_files_per_trigger}, {report.seconds / 60:.1f} min"),
        ("rounds", str(c.rounds)),
        ("kill -9 rounds", str(sum(kinds[k] for k in STOP_KINDS if k != "sigterm"))),
    ]
    for kind in (*STOP_KINDS, *EXTRA_KINDS):
        if kinds.get(kind):
            out.append((f"faults: {kind}", str(kinds[kind])))
    out.append(("faults that went differently", str(len(report.misbehaved))))
    out.append(("processes that outlived the driver (ended by pid)",
                f"{len(report.orphans)} ({_counts(Counter(map(program, report.orphans)))})"
                if report.orphans else "0"))
    out.append(("final SIGTERM exit", str(report.drain_exit)))
    if a is not None:
        out += [
            ("images dropped", f"{a.images} ({_counts(a.kinds)})"),
            ("images rows", f"{a.rows} ({_counts(a.statuses)})"),
            ("sources rows", str(a.sources)),
            ("lost", str(len(a.lost))),
            ("duplicated", f"{a.extra_rows + a.duplicate_sources} (current images rows beyond one per "
                           f"file {a.extra_rows}, sources rows repeating a key {a.duplicate_sources})"),
            ("wrong verdicts", str(len(a.wrong))),
            ("sources differing from a direct run", str(len(a.mismatched))),
            ("superseded verdicts (bytes a file had before)", str(a.history_rows)),
        ]
        for t in a.tables:
            out.append((f"{t.name}: files in log / orphans on disk (never read)",
                        f"{t.in_log} / {t.orphans} ({t.orphan_rows} rows a bare folder read would add)"))
            out.append((f"{t.name}: rows read = rows in logged files",
                        f"{t.read_rows} = {t.log_rows}" if t.sound else
                        f"NO: {t.read_rows} vs {t.log_rows}, {t.missing} missing, {t.unreadable} unreadable"))
    out.append(("verdict", "PASS" if report.ok else "FAIL"))
    return out


def table(lines: list[tuple[str, str]]) -> list[str]:
    """(label, value) pairs as the lines of a two-column Markdown table."""
    width = max(len(k) for k, _ in lines)
    text = [f"| {'':<{width}} | result |", f"|{'-' * (width + 2)}|--------|"]
    return text + [f"| {k:<{width}} | {v} |" for k, v in lines]


def render(report) -> str:
    """A two-column Markdown table, then the problems found, if any."""
    lines = rows(report)
    text = table(lines)
    problems = []
    for f in report.misbehaved:
        problems.append(f"round {f.round + 1} {f.kind}: {f.outcome}")
    if report.audit is not None:
        problems += report.audit.problems()
    if problems:
        text += ["", "Problems:"] + [f"- {p}" for p in problems]
    return "\n".join(text)
