"""The loop's sleep ends when an agent's supervisor exits or a worker signals, not at the timeout."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from runner.waking import HAS_PIDFD, Exits, Waker


@pytest.mark.skipif(not HAS_PIDFD, reason="pidfds are Linux-only")
def test_the_exit_of_a_watched_process_ends_the_wait() -> None:
    waker = Waker()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    try:
        started = time.monotonic()
        assert waker.wait(60, [proc.pid]) is True
        # Woken by the exit, long before the 60 s timeout.
        assert time.monotonic() - started < 30
        assert proc.poll() is not None
    finally:
        proc.kill()
        proc.wait()
        waker.close()


def test_a_pid_already_gone_ends_the_wait_at_once() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    waker = Waker()
    try:
        assert waker.wait(60, [proc.pid]) is True
    finally:
        waker.close()


def test_a_signal_from_another_thread_ends_the_wait_and_is_consumed() -> None:
    waker = Waker()
    try:
        threading.Timer(0.2, waker.set).start()
        assert waker.wait(60) is True
        # Consumed: the next wait runs to its timeout.
        assert waker.wait(0.05) is False
        # Signals raised while nobody waits are kept for the next wait.
        waker.set()
        waker.set()
        assert waker.wait(60) is True
        assert waker.wait(0.05) is False
    finally:
        waker.close()


def test_a_signal_after_close_is_ignored() -> None:
    waker = Waker()
    waker.close()
    waker.set()
    waker.close()


def test_without_pidfds_the_waker_says_so_and_the_caller_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    # A kernel without pidfd_open cannot be had here: its refusal is simulated.
    def refuse(_pid: int, _flags: int = 0) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr("os.pidfd_open", refuse, raising=False)
    waker = Waker()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        assert waker.wait(60, [proc.pid]) is True  # wakes the caller at once to look for itself
        assert waker.watches_pids is False
        assert waker.wait(0.05, [proc.pid]) is False  # no longer watches: a plain timeout
    finally:
        proc.kill()
        proc.wait()
        waker.close()


def _sleeper(seconds: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not HAS_PIDFD, reason="pidfds are Linux-only")
def test_exits_tells_running_from_ended_and_keeps_one_pidfd_a_process() -> None:
    asked: list[int] = []

    def ours(pid: int) -> bool:
        asked.append(pid)
        return True

    exits = Exits()
    short, long = _sleeper(0.2), _sleeper(60)
    both = {short.pid: short.pid, long.pid: long.pid}
    try:
        before = _open_fds()
        assert exits.exited(both, ours) == set()
        assert exits.exited(both, ours) == set()
        assert _open_fds() == before + 2  # one pidfd each, held, not opened at every look
        short.wait()
        assert exits.exited(both, ours) == {short.pid}
        # The command line was looked at once a process, when first watched, never again.
        assert sorted(asked) == sorted([short.pid, long.pid])
        exits.keep_only([])
        assert _open_fds() == before  # the ended one closed when seen, the other when let go
    finally:
        long.kill()
        long.wait()
        exits.close()


@pytest.mark.skipif(not HAS_PIDFD, reason="pidfds are Linux-only")
def test_exits_takes_a_pid_that_is_no_longer_the_process_meant_for_ended() -> None:
    # A pid read back from the state after a restart may belong to another process by now: the
    # command line (here: not the one meant) decides once, and the stranger is never waited for.
    stranger = _sleeper(60)
    exits = Exits()
    try:
        assert exits.exited({stranger.pid: stranger.pid}, lambda _key: False) == {stranger.pid}
        assert stranger.poll() is None  # still running: it just is not ours
    finally:
        stranger.kill()
        stranger.wait()
        exits.close()


def test_exits_without_pidfds_asks_every_time() -> None:
    alive = {"yes": True}
    calls: list[int] = []

    def check(pid: int) -> bool:
        calls.append(pid)
        return alive["yes"]

    exits = Exits()
    exits.usable = False  # a kernel or sandbox without pidfd_open
    assert exits.exited({12345: 12345}, check) == set()
    alive["yes"] = False
    assert exits.exited({12345: 12345}, check) == {12345}
    assert calls == [12345, 12345]


def _with_pid(pid: int, tries: int = 50) -> subprocess.Popen[bytes] | None:
    """A sleeper given ``pid`` (an ended process's, reaped), through ns_last_pid (root only)."""
    for _ in range(tries):
        try:
            Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
        except OSError:
            return None
        proc = _sleeper(60)
        if proc.pid == pid:
            return proc
        proc.kill()
        proc.wait()
    return None


@pytest.mark.skipif(not HAS_PIDFD, reason="pidfds are Linux-only")
def test_exits_does_not_take_a_new_run_given_an_ended_runs_pid_for_ended() -> None:
    # Run 1's supervisor exits; its run is not recorded yet (its commit is being brought in) when
    # run 2's supervisor is given the same pid. Run 2 is running: it is not told ended (the loop
    # would wake at once, again and again, for as long as it runs).
    exits = Exits()

    def ours(_key: int) -> bool:
        return True

    first = _sleeper(0.2)
    pid = first.pid
    assert exits.exited({1: pid}, ours) == set()
    first.wait()
    assert exits.exited({1: pid}, ours) == {1}
    second = _with_pid(pid)
    if second is None:
        exits.close()
        pytest.skip("cannot have the kernel hand out a given pid here (ns_last_pid)")
    try:
        assert exits.exited({1: pid, 2: pid}, ours) == {1}
        second.kill()
        second.wait()
        assert exits.exited({1: pid, 2: pid}, ours) == {1, 2}
    finally:
        second.kill()
        second.wait()
        exits.close()
