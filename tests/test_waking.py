"""The loop's sleep ends when an agent's supervisor exits or a worker signals, not at the timeout."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from runner.waking import HAS_PIDFD, Waker


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
