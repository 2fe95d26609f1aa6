#!/usr/bin/env python3
"""Start and stop a Spark standalone cluster on 127.0.0.1 (pip's pyspark, no install).

    scripts/spark_cluster.py start --workers 2      # prints spark://127.0.0.1:PORT
    sexstream run --master "$(scripts/spark_cluster.py url)"
    scripts/spark_cluster.py status
    scripts/spark_cluster.py stop

`start` writes the pids of the master and workers to a state file (default
var/spark-cluster.json); `stop` ends exactly those processes and their children
(executors, Python workers), SIGTERM first, SIGKILL after a grace period.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the harness

from cluster import StandaloneCluster  # noqa: E402

DEFAULT_STATE = Path("var/spark-cluster.json")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, as a namespace."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=("start", "stop", "status", "url"))
    p.add_argument("--state", type=Path, default=DEFAULT_STATE,
                   help=f"state file with the pids (default {DEFAULT_STATE})")
    p.add_argument("--workers", type=int, default=2, help="number of workers (default 2)")
    p.add_argument("--cores", type=int, default=1, help="cores per worker (default 1)")
    p.add_argument("--memory", default="1g", help="executor memory per worker (default 1g)")
    p.add_argument("--workdir", type=Path,
                   help="logs and scratch space (default: a new temp folder, removed by stop)")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="seconds to wait for the workers to register (default 120)")
    return p.parse_args(argv)


def _attached(state_file: Path) -> StandaloneCluster | None:
    if not state_file.is_file():
        return None
    return StandaloneCluster.attach(json.loads(state_file.read_text()))


def start(args: argparse.Namespace) -> int:
    """Start a detached cluster, write the state file, print the master URL."""
    running = _attached(args.state)
    if running is not None and running.running_pids():
        print(f"a cluster from {args.state} is running ({running.master_url}); stop it first",
              file=sys.stderr)
        return 1
    began = time.monotonic()
    cluster = StandaloneCluster(workers=args.workers, cores_per_worker=args.cores,
                                worker_memory=args.memory, workdir=args.workdir,
                                start_timeout=args.timeout, detach=True).start()
    args.state.parent.mkdir(parents=True, exist_ok=True)
    args.state.write_text(json.dumps(cluster.state(), indent=2) + "\n")
    print(f"started in {time.monotonic() - began:.1f} s: master pid {cluster.master.pid}, "
          f"worker pids {cluster.worker_pids}; web UI {cluster.web_url}; logs in "
          f"{cluster.workdir}; state in {args.state}", file=sys.stderr)
    print(cluster.master_url)
    return 0


def stop(args: argparse.Namespace) -> int:
    """Stop the cluster of the state file and remove the file."""
    cluster = _attached(args.state)
    if cluster is None:
        print(f"no state file at {args.state}: nothing to stop", file=sys.stderr)
        return 0
    pids = cluster.running_pids()
    cluster.stop()
    args.state.unlink()
    print(f"stopped {len(pids)} process(es): {pids}", file=sys.stderr)
    return 0


def status(args: argparse.Namespace) -> int:
    """Print the master's URL, its alive workers, and the processes still running."""
    cluster = _attached(args.state)
    if cluster is None:
        print(f"no state file at {args.state}", file=sys.stderr)
        return 1
    if args.command == "url":
        print(cluster.master_url)
        return 0
    try:
        alive = cluster.status().get("aliveworkers")
    except OSError as exc:
        alive = f"master unreachable ({exc})"
    print(json.dumps({"master_url": cluster.master_url, "web_url": cluster.web_url,
                      "alive_workers": alive, "running_pids": cluster.running_pids()}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    handler = {"start": start, "stop": stop, "status": status, "url": status}[args.command]
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
