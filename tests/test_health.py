"""The readiness rule without a JVM: the life cycle, the trigger and backlog bounds, the
backlog's clock, and the health file `sexstream status --json` reads."""
from __future__ import annotations

import json
import subprocess
import sys

from sexstream.health import BacklogClock, Bounds, Health, daemon_readiness, health_file, readiness

BOUNDS = Bounds(backlog_age=60.0, trigger_age=30.0, stale=15.0)


def running(**fields) -> dict:
    beat = {"state": "running", "query_active": True, "batch_in_progress": False, "last_trigger_at": 1000.0,
            "backlog": 0, "backlog_since": None, "updated_at": 1000.0}
    beat.update(fields)
    return beat


def test_a_running_daemon_with_a_recent_trigger_and_no_old_backlog_is_ready():
    r = readiness(running(), BOUNDS, now=1010.0)
    assert (r["ready"], r["reasons"], r["last_trigger_age_s"]) == (True, [], 10.0)


def test_each_bound_and_each_state_says_why_it_is_not_ready():
    assert readiness({"state": "starting", "step": "building the Spark session"}, BOUNDS, 0.0)["reasons"] == [
        "starting: building the Spark session"]
    assert readiness(running(query_active=False), BOUNDS, 1001.0)["reasons"] == ["the streaming query is not active"]
    assert readiness(running(), BOUNDS, 1031.0)["reasons"] == ["no trigger for 31 s (bound 30 s)"]
    assert readiness(running(batch_in_progress=True), BOUNDS, 1500.0)["ready"]  # a long batch is activity
    r = readiness(running(backlog=7, backlog_since=900.0, last_trigger_at=1000.0), BOUNDS, 1001.0)
    assert r["reasons"] == ["the oldest of 7 waiting arrival(s) has waited 101 s (bound 60 s)"]
    assert r["backlog_oldest_s"] == 101.0
    assert readiness({"state": "stopping"}, BOUNDS, 0.0)["reasons"] == ["stopping: finishing the batch in progress"]
    assert readiness({"state": "stopped", "exit_code": 0}, BOUNDS, 0.0)["reasons"] == ["stopped (exit code 0)"]
    assert readiness({"state": "failed", "error": "boom"}, BOUNDS, 0.0)["reasons"] == ["failed: boom"]


def test_a_heartbeat_older_than_the_stale_bound_means_the_daemon_is_gone():
    beat = running(pid=42, host="node1", updated_at=1000.0)
    assert readiness(beat, BOUNDS, 1010.0, heartbeat=True)["ready"]
    r = readiness(beat, BOUNDS, 1020.0, heartbeat=True)
    assert r["reasons"][0] == "no heartbeat for 20 s (pid 42 on node1): the daemon is gone or hung"


def test_the_backlog_clock_ages_the_oldest_uncommitted_entry_from_its_first_sight():
    clock = BacklogClock()
    assert clock.observe(5, 5, 100.0) == (0, None)  # nothing waits
    assert clock.observe(8, 5, 101.0) == (3, 101.0)  # 6..8 seen at 101
    assert clock.observe(12, 5, 105.0) == (7, 101.0)
    assert clock.observe(12, 8, 106.0) == (4, 105.0)  # 6..8 committed: 9..12 seen at 105
    assert clock.observe(12, 12, 107.0) == (0, None)
    assert clock.observe(13, 12, 200.0) == (1, 200.0)


def test_the_backlog_clock_holds_a_bounded_number_of_marks_and_errs_old():
    clock = BacklogClock(max_marks=3)
    for seq in range(1, 10):
        clock.observe(seq, 0, float(seq))
    assert len(clock._marks) == 3
    assert clock.observe(9, 0, 10.0) == (9, 1.0)  # the oldest time is kept


def test_status_json_says_what_the_daemons_readyz_says(tmp_path):
    checkpoint = tmp_path / "checkpoint"
    assert daemon_readiness(checkpoint)["state"] == "unknown"
    health = Health(BOUNDS, health_file(checkpoint))
    health.starting("checking the executors")
    health.running()
    health.sample(query_active=True, last_trigger_at=health.beat()["updated_at"], backlog=0)
    assert health.readiness()["ready"] and daemon_readiness(checkpoint)["ready"]
    health.failed("the streaming query failed: boom\nat line 2")
    out = subprocess.run([sys.executable, "-m", "streaming.cli", "status", "--sink", str(tmp_path / "sink"),
                          "--checkpoint", str(checkpoint), "--json"], capture_output=True, text=True, check=True)
    daemon = json.loads(out.stdout)["daemon"]
    assert daemon["ready"] is False and daemon["state"] == "failed"
    assert daemon["reasons"] == health.readiness()["reasons"] == ["failed: the streaming query failed: boom"]
    text = subprocess.run([sys.executable, "-m", "streaming.cli", "status", "--sink", str(tmp_path / "sink"),
                           "--checkpoint", str(checkpoint)], capture_output=True, text=True, check=True).stdout
    assert text.splitlines()[0] == "daemon       not ready: failed: the streaming query failed: boom"


def test_an_error_that_quotes_a_traceback_is_reported_by_its_exception_line():
    spark = ("An exception was raised by the Python Proxy. Return Message: Traceback (most recent call last):\n"
             '  File "/x/engine.py", line 3, in plan\n    raise RuntimeError("disk")\n'
             "RuntimeError: No space left on device\n\n=== Streaming Query ===\nIdentifier: q")
    from sexstream.health import error_line

    assert error_line(spark) == "RuntimeError: No space left on device"
    assert error_line("OSError: gone\nmore") == "OSError: gone"
