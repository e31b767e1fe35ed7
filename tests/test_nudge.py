"""A daemon idling on a long interval starts a task the moment `task add` stores it; with no
daemon, or something odd where the pipe should be, `task add` neither waits nor breaks."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from tests.loop_helpers import make_sample, stop, wait_for


def test_a_daemon_wakes_at_once_on_task_add(tmp_path: Path) -> None:
    sample = make_sample(tmp_path, interval=60)
    sample.add("before the daemon")  # the state exists, and the daemon has something to do first
    proc = sample.start()
    try:
        wait_for(lambda: sample.status()["done"] == 1, 30, proc)
        fifo = sample.root / "wake.fifo"
        assert stat.S_ISFIFO(fifo.stat().st_mode)
        time.sleep(1.0)  # idle now, asleep for up to 60 s
        added = time.monotonic()
        sample.add("while it sleeps")
        wait_for(lambda: sample.status()["done"] == 2, 30, proc)
        took = time.monotonic() - added
    finally:
        stop(proc)
    assert took < 15, f"the daemon took {took:.1f}s to take up a new task (interval 60 s)"


def test_task_add_with_no_daemon_listening_returns_at_once(tmp_path: Path) -> None:
    sample = make_sample(tmp_path, interval=60)
    sample.add("one")
    fifo = sample.root / "wake.fifo"
    os.mkfifo(fifo)  # what a daemon that has stopped leaves behind: a pipe nobody reads
    started = time.monotonic()
    sample.add("two")
    assert time.monotonic() - started < 10
    # A regular file where the pipe belongs is neither written into nor in the way.
    fifo.unlink()
    fifo.write_text("")
    sample.add("three")
    assert fifo.read_text() == ""
    proc = sample.start()
    try:
        wait_for(lambda: stat.S_ISFIFO(fifo.stat().st_mode), 30, proc)
    finally:
        stop(proc)
