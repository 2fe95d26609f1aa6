"""`python tests/chaos/driver.py [--crash-at PHASE:BATCH] [--fail-at PHASE:BATCH] [--events FILE] run ...`: the real
daemon (`sexstream run ...`, same flags) with the chaos suite's engine hooks.

- `CrashAt` ends the driver with `os._exit(137)`, as a kill -9 would, when the engine
  reaches a phase (`sexstream.engine.PHASES`: parts_written, sources_committed,
  images_committed) of the first batch numbered BATCH or later that has images (a query
  on a new checkpoint may start with an empty batch 0, which reaches no phase);
- `FailAt` raises there instead: the streaming query fails, the driver lives on;
- `EventLog` appends every committed batch's stats to FILE as one JSON object per line
  (the suite reads batches as data, never from the log's text).

The product has no such hooks: they are the engine's `Hooks` interface, set here on the
parsed command line that `sexstream run` would run.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

#: The exit status of the driver after a crash hook (os._exit(137), as a kill -9 shows).
HOOK_EXIT = 137


def _hooks_base():
    from sexstream.engine import Hooks

    return Hooks


class CrashAt(_hooks_base()):
    """Dies at `phase` of the first batch numbered `batch_id` or later that reaches it."""

    def __init__(self, phase: str, batch_id: int):
        self.at = (phase, batch_id)

    def phase(self, name: str, batch_id: int) -> None:
        if name == self.at[0] and batch_id >= self.at[1]:
            logging.getLogger("sexstream").warning("test hook: crashing at %s of batch %d", name, batch_id)
            logging.shutdown()
            os._exit(HOOK_EXIT)


class FailAt(_hooks_base()):
    """Raises at `phase` of the first batch numbered `batch_id` or later that reaches it:
    foreachBatch fails, so the streaming query dies while the driver lives on (the
    daemon then exits 1)."""

    def __init__(self, phase: str, batch_id: int):
        self.at = (phase, batch_id)

    def phase(self, name: str, batch_id: int) -> None:
        if name == self.at[0] and batch_id >= self.at[1]:
            raise RuntimeError(f"test hook: failing at {name} of batch {batch_id}")


class EventLog(_hooks_base()):
    """Appends each batch's stats (JSON) to `path`."""

    def __init__(self, path: str):
        self.path = path

    def batch(self, stats) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(stats.to_json() + "\n")


def main(argv: list[str]) -> int:
    from sexstream import cli
    from streaming import commands

    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--crash-at", metavar="PHASE:BATCH")
    own.add_argument("--fail-at", metavar="PHASE:BATCH")
    own.add_argument("--events", metavar="FILE")
    mine, rest = own.parse_known_args(argv)
    hooks = []
    if mine.crash_at:
        phase, _, batch = mine.crash_at.partition(":")
        hooks.append(CrashAt(phase, int(batch)))
    if mine.fail_at:
        phase, _, batch = mine.fail_at.partition(":")
        hooks.append(FailAt(phase, int(batch)))
    if mine.events:
        hooks.append(EventLog(mine.events))
    args = cli.build_parser((commands.register,)).parse_args(rest)
    args.hooks = hooks
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main(sys.argv[1:]))
