"""The sandbox's kept child (`sexstream.sandbox.Worker`): calls one after the other in
one child, a new child after a lost one, nothing left behind."""
from __future__ import annotations

import os
import signal
import time

from sexstream import sandbox
from test_poison import children


def pid_of(phase) -> int:
    return os.getpid()


def sleep_for(phase, seconds: float) -> int:
    phase("sleeping")
    time.sleep(seconds)
    return os.getpid()


def kill_self(phase) -> None:
    phase("about to die")
    os.kill(os.getpid(), signal.SIGKILL)


def fail(phase) -> None:
    raise ValueError("bad value\nsecond line")


def test_calls_run_one_after_the_other_in_one_child_which_ends_on_close():
    with sandbox.Worker() as worker:
        pids = [worker.call(pid_of, bound=10).value for _ in range(5)]
        assert len(set(pids)) == 1 and pids[0] != os.getpid()
        assert pids[0] in children(os.getpid())
    assert pids[0] not in children(os.getpid())


def new_children(before: set[int]) -> set[int]:
    """Children of this process not there before (a Spark JVM or a server an earlier
    test started in this process is not the worker's)."""
    return set(children(os.getpid())) - before


def test_a_lost_child_is_replaced_and_the_verdicts_say_how_it_was_lost():
    before = set(children(os.getpid()))
    with sandbox.Worker() as worker:
        first = worker.call(pid_of, bound=10).value
        out = worker.call(kill_self, bound=10)
        assert (out.kind, out.error, out.phase, out.pid) == ("died", "killed by SIGKILL", "about to die", first)
        second = worker.call(pid_of, bound=10).value
        assert second != first
        t0 = time.monotonic()
        out = worker.call(sleep_for, 3600, bound=0.5)
        assert (out.kind, out.phase, out.pid) == ("timeout", "sleeping", second)
        assert time.monotonic() - t0 < 5
        assert second not in children(os.getpid())  # killed and reaped
        out = worker.call(fail, bound=10)
        assert (out.kind, out.error) == ("raised", "ValueError: bad value")
        assert worker.call(pid_of, bound=10).value not in (first, second)
    assert new_children(before) == set()


def test_a_child_is_retired_after_max_calls_and_a_call_that_does_not_pickle_gets_a_new_one():
    before = set(children(os.getpid()))
    with sandbox.Worker(max_calls=2) as worker:
        pids = [worker.call(pid_of, bound=10).value for _ in range(5)]
        assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]
        local = worker.call(lambda phase: os.getpid(), bound=10)  # a lambda: inherited, not pickled
        assert local.kind == "value" and local.value != pids[4]
    assert new_children(before) == set()


def test_a_child_that_ended_while_idle_is_not_charged_to_the_next_call():
    with sandbox.Worker() as worker:
        pid = worker.call(pid_of, bound=10).value
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        out = worker.call(pid_of, bound=10)
        assert out.kind == "value" and out.value != pid
