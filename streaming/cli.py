"""The `sexstream` program: the core's commands (`sexstream.cli`) and the Spark ones
(`streaming.commands`: run, replay, jvm-archive)."""
from __future__ import annotations

import sys

from sexstream import cli
from streaming import commands


def main(argv: list[str] | None = None) -> int:
    return cli.run(argv, registrars=(commands.register,))


if __name__ == "__main__":
    sys.exit(main())
