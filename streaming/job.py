"""`spark-submit [--master URL] streaming/job.py [run] ...`: the daemon as a Spark
application, with the same flags as `sexstream run` (any other subcommand works too).

The master given to spark-submit is the run's master: `run` and `replay` get it as their
`--master` unless their own flags name one (otherwise the settings' master, `local[*]`
by default, would replace it when the session is built). Where the wheel is installed,
this file is `$(python -c 'import streaming.job as j; print(j.__file__)')`.
"""
from __future__ import annotations

import os
import sys

from streaming.cli import main

#: The subcommands that build a Spark session from the settings' master.
SPARK_COMMANDS = ("run", "replay")


def submitted_master() -> str | None:
    """The master spark-submit was given; None when this Python was not started by
    spark-submit (its JVM hands the gateway's port over in PYSPARK_GATEWAY_PORT)."""
    if not os.environ.get("PYSPARK_GATEWAY_PORT"):
        return None
    from pyspark import SparkConf, SparkContext

    SparkContext._ensure_initialized()  # joins spark-submit's JVM: SparkConf() then reads its conf
    return SparkConf().get("spark.master", None)


def job_argv(args: list[str]) -> list[str]:
    """The program's arguments: `run` when no subcommand is named, and spark-submit's
    master as `--master` of run/replay when they name none."""
    argv = list(args) if args and not args[0].startswith("-") else ["run", *args]
    if argv[0] in SPARK_COMMANDS and not any(a == "--master" or a.startswith("--master=") for a in argv):
        master = submitted_master()
        if master:
            argv[1:1] = ["--master", master]
    return argv


if __name__ == "__main__":
    sys.exit(main(job_argv(sys.argv[1:])))
