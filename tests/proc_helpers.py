"""Real processes for the process-layer tests: daemons that try to outlive their run, loud commands."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from runner import procs

# A command that starts three sleepers meant to outlive it: a `setsid sleep 600 &`, a plain
# `sleep 600 &`, and a double-forked daemon (orphaned at once, in a session of its own). It writes
# their pids to the file named by its first argument, then sleeps its second argument's seconds.
DAEMONS = """\
import os, subprocess, sys, time
pids_file, linger = sys.argv[1], float(sys.argv[2])
pids = [subprocess.Popen(["sleep", "600"], start_new_session=True).pid,
        subprocess.Popen(["sleep", "600"]).pid]
read_end, write_end = os.pipe()
if os.fork() == 0:
    os.setsid()
    grandchild = os.fork()
    if grandchild == 0:
        os.execvp("sleep", ["sleep", "600"])
    os.write(write_end, str(grandchild).encode())
    os._exit(0)
os.close(write_end)
pids.append(int(os.read(read_end, 32)))
with open(pids_file + ".tmp", "w") as fh:
    fh.write(" ".join(map(str, pids)))
os.replace(pids_file + ".tmp", pids_file)
print("started", len(pids), "daemons", flush=True)
time.sleep(linger)
"""

# Prints FIRST, then argv[1] megabytes of 100-byte lines, then LAST.
LOUD = """\
import sys
out = sys.stdout.buffer
out.write(b"FIRST LINE\\n")
block = (b"." * 99 + b"\\n") * 10_000
for _ in range(int(sys.argv[1])):
    out.write(block)
out.write(b"LAST LINE\\n")
"""
LOUD_EXTRA = len(b"FIRST LINE\n") + len(b"LAST LINE\n")


def script(tmp: Path, name: str, text: str) -> str:
    """Write a Python script into ``tmp``; its path."""
    path = tmp / name
    path.write_text(text)
    return str(path)


def wait_for(condition: Callable[[], object], timeout: float = 20, what: str = "condition") -> None:
    """Poll ``condition`` until it is true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.02)


def read_pids(path: Path, timeout: float = 20) -> list[int]:
    """The pids a DAEMONS command wrote, once it has."""
    wait_for(path.exists, timeout, f"{path} written")
    return [int(p) for p in path.read_text().split()]


def alive(pid: int) -> bool:
    """A running (not exited, not zombie) process."""
    return procs.pid_alive(pid)


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), or None when it is gone: with the pid, it
    names one process, where the pid alone may be reused by another once that one has exited."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def marked(name: str, value: str) -> list[int]:
    """Live processes whose environment has NAME=VALUE (read independently of procs.kill_marked)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"{name}={value}".encode() in environ and alive(int(entry)):
            found.append(int(entry))
    return found


@contextmanager
def cleanup(pids: list[int]) -> Iterator[list[int]]:
    """Kill whatever of ``pids`` (filled in by the test) is left, so a failing test leaks nothing."""
    try:
        yield pids
    finally:
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def peak_rss_kib() -> int:
    """This process's peak resident memory (VmHWM) in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/self/status")


def reset_peak_rss() -> None:
    """Start the peak-memory count afresh from the current size (Linux 4.0+), where allowed."""
    with suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


PYTHON = sys.executable
