"""Supervisor of a detached agent command: enforces its timeout and records how it ended.

Started detached by the command backend as ``python -I -S .../supervise.py --status-file F
--timeout S -- ARGV...`` (stdlib only, so it starts fast and needs no installed package). It starts ARGV in a process group of its own, writes the group id to the
status file, waits, kills the whole group on timeout (or when itself told to stop), and finally
writes the exit code atomically, so that any later runner process can harvest the result.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

GRACE_SECONDS = 5.0


def write_status(path: Path, data: dict[str, Any]) -> None:
    """Write the status file atomically (rename over the old one)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def read_status(path: Path) -> dict[str, Any] | None:
    """The status file's content, or None when absent or half-written."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _kill_group(pgid: int) -> None:
    """TERM the group, then KILL what is left after a grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + GRACE_SECONDS
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)


def main(argv: list[str] | None = None) -> int:
    """Run the supervised command; the exit code mirrors the command's."""
    parser = argparse.ArgumentParser(prog="runner.supervise")
    parser.add_argument("--status-file", required=True, type=Path)
    parser.add_argument("--timeout", required=True, type=float)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    status_file: Path = args.status_file
    started = time.time()
    try:
        child = subprocess.Popen(command, start_new_session=True, stdin=subprocess.DEVNULL)
    except OSError as exc:
        write_status(
            status_file,
            {
                "state": "finished",
                "exit_code": 127,
                "timed_out": False,
                "error": f"{command[0]!r} could not be started: {exc}",
                "started_at": started,
                "finished_at": time.time(),
            },
        )
        return 127
    pgid = child.pid
    write_status(status_file, {"state": "running", "pid": child.pid, "pgid": pgid, "started_at": started})

    stopping = {"signal": 0}
    timed_out = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stopping["signal"] = signum
        threading.Thread(target=_kill_group, args=(pgid,), daemon=True).start()

    def on_timeout() -> None:
        timed_out.set()
        _kill_group(pgid)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    timer = threading.Timer(args.timeout, on_timeout)
    timer.daemon = True
    timer.start()
    # A blocking wait notices the exit at once (a wait with a timeout polls, adding latency).
    exit_code = child.wait()
    timer.cancel()
    # Children the agent left behind in its group die with it.
    _kill_group(pgid)
    timed_out_flag = timed_out.is_set()
    error = None
    if timed_out_flag:
        error = f"agent timed out after {args.timeout:g}s and was killed with its process group"
    elif stopping["signal"]:
        error = f"agent stopped by signal {stopping['signal']} sent to its supervisor"
    write_status(
        status_file,
        {
            "state": "finished",
            "pid": child.pid,
            "pgid": pgid,
            "exit_code": exit_code,
            "timed_out": timed_out_flag,
            "error": error,
            "started_at": started,
            "finished_at": time.time(),
        },
    )
    return 0 if exit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
