"""Supervisor of a detached agent command: enforces its timeout and records how it ended.

Started detached by the command backend as ``python -I -S .../supervise.py --status-file F
--timeout S -- ARGV...`` (stdlib only, so it starts fast and needs no installed package). It
starts ARGV in a process group of its own, writes the group id to the status file, waits, kills
the whole group on timeout (or when itself told to stop), and finally writes the exit code
atomically, so that any later runner process can harvest the result.

The group leader is reaped only after the group has been killed: while it is an unreaped zombie
its pid, and so the group id, cannot be reused, so a kill can never hit an unrelated process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

# Run as a script under -I -S: make the package next to this file importable for redaction.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from runner.redact import redact, register

# Not `from typing import TYPE_CHECKING`: importing typing costs ~2 ms of the start-up of every
# agent run; type checkers honour a module-level TYPE_CHECKING = False just the same.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

GRACE_SECONDS = 5.0
USAGE = "usage: supervise.py --status-file FILE --timeout SECONDS [--stdout FILE] -- COMMAND..."


def write_status(path: str | Path, data: dict[str, Any]) -> None:
    """Write the status file atomically (rename over the old one)."""
    tmp = os.fspath(path) + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(data))
    os.replace(tmp, path)


def read_status(path: str | Path) -> dict[str, Any] | None:
    """The status file's content, or None when absent or half-written."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.loads(fh.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _members(pgid: int, leader: int) -> list[int]:
    """Live processes of the group other than its (exited, unreaped) leader."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == leader:
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 2 and fields[0] != "Z" and fields[2] == str(pgid):
            found.append(int(entry))
    return found


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _clear_group(pgid: int, leader: int) -> None:
    """After the leader exited: TERM what is left of its group, KILL it after a grace period."""
    if not _members(pgid, leader):
        return
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_SECONDS
    while time.monotonic() < deadline:
        if not _members(pgid, leader):
            return
        time.sleep(0.05)
    _signal_group(pgid, signal.SIGKILL)


def _stop_group(pgid: int, done: threading.Event) -> None:
    """Before the leader exited: TERM the group, KILL it if the leader outlives the grace period."""
    _signal_group(pgid, signal.SIGTERM)
    if not done.wait(GRACE_SECONDS):
        _signal_group(pgid, signal.SIGKILL)


def _parse(argv: list[str]) -> tuple[str, float, str | None, list[str]]:
    """The fixed argument shape the backends use (argparse would double start-up time)."""
    stdout = None
    if len(argv) > 5 and argv[4] == "--stdout":
        stdout, argv = argv[5], argv[:4] + argv[6:]
    if len(argv) < 6 or argv[0] != "--status-file" or argv[2] != "--timeout" or argv[4] != "--":
        raise SystemExit(USAGE)
    try:
        return argv[1], float(argv[3]), stdout, argv[5:]
    except ValueError:
        raise SystemExit(USAGE) from None


def _copy_redacted(source: Any, target: Any) -> None:
    """Copy the agent's output line by line, masking secrets, so none reaches a file."""
    for raw in iter(source.readline, b""):
        target.write(redact(raw.decode("utf-8", "replace")))
        target.flush()
    source.close()


def main(argv: list[str] | None = None) -> int:
    """Run the supervised command; the exit code mirrors the command's."""
    status_file, timeout, stdout_file, command = _parse(sys.argv[1:] if argv is None else argv)
    register(os.environ)
    started = time.time()
    try:
        child = subprocess.Popen(
            command, start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if stdout_file else subprocess.STDOUT,
        )  # fmt: skip
    except OSError as exc:
        write_status(status_file, {"state": "finished", "exit_code": 127, "timed_out": False,
                                   "error": f"{command[0]!r} could not be started: {exc}",
                                   "started_at": started, "finished_at": time.time()})  # fmt: skip
        return 127
    pgid = child.pid
    copiers = []
    out_target = open(stdout_file, "a", encoding="utf-8") if stdout_file else sys.stdout  # noqa: SIM115
    streams = [(child.stdout, out_target)] + ([(child.stderr, sys.stdout)] if stdout_file else [])
    for source, target in streams:
        copier = threading.Thread(target=_copy_redacted, args=(source, target), daemon=True)
        copier.start()
        copiers.append(copier)
    write_status(status_file, {"state": "running", "pid": child.pid, "pgid": pgid, "started_at": started})

    leader_exited = threading.Event()
    timed_out = threading.Event()
    stopped_by: list[int] = []

    def stop(reason: threading.Event | None, signum: int = 0) -> None:
        if reason is not None:
            reason.set()
        if signum:
            stopped_by.append(signum)
        threading.Thread(target=_stop_group, args=(pgid, leader_exited), daemon=True).start()

    signal.signal(signal.SIGTERM, lambda signum, _frame: stop(None, signum))
    signal.signal(signal.SIGINT, lambda signum, _frame: stop(None, signum))
    timer = threading.Timer(timeout, stop, args=(timed_out,))
    timer.daemon = True
    timer.start()
    # Wait for the leader to exit without reaping it (the wait blocks, so the exit is seen at once).
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
    leader_exited.set()
    timer.cancel()
    _clear_group(pgid, child.pid)  # children the agent left behind die with it
    for copier in copiers:
        copier.join(timeout=GRACE_SECONDS)
    if stdout_file:
        out_target.close()
    exit_code = child.wait()
    error: str | None = None
    if timed_out.is_set():
        error = f"agent timed out after {timeout:g}s and was killed with its process group"
    elif stopped_by:
        error = f"agent stopped by signal {stopped_by[0]} sent to its supervisor"
    write_status(status_file, {"state": "finished", "pid": child.pid, "pgid": pgid, "exit_code": exit_code,
                               "timed_out": timed_out.is_set(), "error": error, "started_at": started,
                               "finished_at": time.time()})  # fmt: skip
    return 0 if exit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
