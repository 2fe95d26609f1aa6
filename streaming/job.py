"""`spark-submit streaming/job.py [run] ...`: the daemon as a Spark application, with the
same flags as `sexstream run` (any other subcommand works too)."""
from __future__ import annotations

import sys

from streaming.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] if len(sys.argv) > 1 and not sys.argv[1].startswith("-")
                  else ["run", *sys.argv[1:]]))
