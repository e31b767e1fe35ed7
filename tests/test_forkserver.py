"""Supervisors forked from the fork server: the same runs as started ones, and nothing lost when the
server or the runner dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from runner import forkserver, procs
from runner.supervise import read_status
from tests.proc_helpers import PYTHON, alive, script, wait_for

SUPERVISOR = procs.SUPERVISOR_SCRIPT


def parent_of(pid: int) -> int:
    """The parent pid of a live process."""
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


def finished(status_file: Path, timeout: float = 30) -> dict[str, object]:
    """The supervisor's final status, once written."""
    wait_for(lambda: (read_status(status_file) or {}).get("state") == "finished", timeout, "final status")
    status = read_status(status_file)
    assert status is not None
    return status


def test_a_forked_supervisor_runs_its_command_where_and_as_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNNER_ONLY", "the runner's")  # the server starts with it
    server = forkserver.ForkServer(SUPERVISOR)
    work = tmp_path / "work"
    work.mkdir()
    gate = tmp_path / "gate"
    show = script(
        tmp_path,
        "show.py",
        "import os, time\nprint(os.getcwd(), os.environ['WHO'], os.environ.get('RUNNER_ONLY'), flush=True)\n"
        f"while not os.path.exists({str(gate)!r}):\n    time.sleep(0.02)\n",
    )
    log = tmp_path / "run.log"
    try:
        with open(log, "ab") as out:
            spawned = server.spawn(
                ["--status-file", str(tmp_path / "run.json"), "--timeout", "60", "--", PYTHON, show],
                str(work), {"WHO": "the task", "PATH": os.environ["PATH"]}, out.fileno(),
                session=True, watch_parent=False,
            )  # fmt: skip
        assert spawned is not None
        # A child of the server, and recognised as a supervisor by its command line.
        assert parent_of(spawned.pid) == server.pid
        wait_for(lambda: log.read_text(), 10, "the command started")
        assert procs.pid_alive(spawned.pid, SUPERVISOR)
        gate.touch()
        status = finished(tmp_path / "run.json")
        assert status["exit_code"] == 0 and status["supervisor"] == spawned.pid
        # Its own directory and exactly the environment asked for, nothing of the runner's.
        assert log.read_text().split() == [str(work), "the", "task", "None"]
        assert spawned.wait(10)
        spawned.close()
    finally:
        server.close()


def test_a_missing_directory_or_a_nul_byte_is_refused_as_an_exec_would_refuse_it(tmp_path: Path) -> None:
    log = tmp_path / "log"
    missing = procs.run_logged(["true"], tmp_path / "gone", log_path=log, timeout=60)
    assert missing.error is not None and "could not be started" in missing.error
    nul = procs.run_logged(["echo", "a\0b"], tmp_path, log_path=log, timeout=60)
    assert nul.error is not None and "could not be started" in nul.error
    bad_env = procs.run_logged(["true"], tmp_path, log_path=log, timeout=60, env={"A=B": "x"})
    assert bad_env.error is not None and "could not be started" in bad_env.error
    # The server still serves after the refusals.
    assert procs.run_logged(["true"], tmp_path, log_path=log, timeout=60).ok


def test_a_killed_server_costs_nothing_but_speed(tmp_path: Path) -> None:
    server = forkserver.ForkServer(SUPERVISOR)
    options = ["--status-file", str(tmp_path / "a.json"), "--timeout", "60", "--", "true"]
    try:
        with open(tmp_path / "log", "ab") as out:
            first = server.spawn(options, str(tmp_path), dict(os.environ), out.fileno(), session=True, watch_parent=False)
            assert first is not None and server.pid is not None
            os.kill(server.pid, signal.SIGKILL)
            # The next request finds it dead and says so; the caller then starts an interpreter.
            again = server.spawn(options, str(tmp_path), dict(os.environ), out.fileno(), session=True, watch_parent=False)
        assert again is None
    finally:
        server.close()
    # What the runner does with that answer, from then on: the run still happens, in a started
    # supervisor.
    status_file = tmp_path / "b.json"
    saved, procs.FORK_SERVER = procs.FORK_SERVER, server
    try:
        pid = procs.spawn_supervisor(
            ["--status-file", str(status_file), "--timeout", "60", "--", "sleep", "1"], tmp_path, log_path=tmp_path / "log"
        )
        # A started interpreter, whose command line names its status file.
        cmdline = Path(f"/proc/{pid}/cmdline")
        wait_for(lambda: str(status_file).encode() in cmdline.read_bytes(), 5, "a started supervisor")
        assert finished(status_file)["exit_code"] == 0
    finally:
        procs.FORK_SERVER = saved
        procs.reap_children()


def test_an_argument_too_large_for_one_request_is_run_all_the_same(tmp_path: Path) -> None:
    # An agent CLI given its whole prompt as an argument.
    # An agent CLI given its whole prompt as arguments (each argument stays under the kernel's limit).
    part = "x" * (forkserver.MAX_REQUEST_BYTES // 2)
    count = script(tmp_path, "count.py", "import sys\nprint(sum(map(len, sys.argv[1:])))\n")
    result = procs.run_logged([PYTHON, count, part, part, part], tmp_path, log_path=tmp_path / "log", timeout=60)
    assert result.ok and (tmp_path / "log").read_text().strip() == str(3 * len(part))


RUNNER = """\
import sys, time
from pathlib import Path
from runner import procs
work = Path(sys.argv[1])
pid = procs.spawn_supervisor(
    ["--status-file", str(work / "agent.json"), "--timeout", "60", "--", sys.executable, "-c",
     "import time; time.sleep(1.5); print('agent done')"],
    work, log_path=work / "agent.log")
print(pid, procs.FORK_SERVER.pid, flush=True)
time.sleep(600)
"""


def test_an_agent_outlives_its_runner_and_the_server_does_not(tmp_path: Path) -> None:
    runner = script(tmp_path, "fake_runner.py", RUNNER)
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [PYTHON, runner, str(tmp_path)], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(root)}
    )
    assert proc.stdout is not None
    supervisor, server = map(int, proc.stdout.readline().split())
    assert parent_of(supervisor) == server
    proc.kill()
    proc.wait()
    # The server ends with its runner; the agent's supervisor, detached, finishes its run.
    wait_for(lambda: not alive(server), 10, "the fork server gone")
    status = finished(tmp_path / "agent.json")
    assert status["exit_code"] == 0 and status["error"] is None
    assert "agent done" in (tmp_path / "agent.log").read_text()


def test_a_run_is_found_by_its_status_file_from_the_moment_the_spawn_returns(tmp_path: Path) -> None:
    # A runner killed right after the spawn, before it recorded the pid: recovery finds the forked
    # supervisor (whose command line does not name the status file) through the status file.
    server = forkserver.ForkServer(SUPERVISOR)
    status_file = tmp_path / "run.json"
    try:
        with open(tmp_path / "log", "ab") as out:
            spawned = server.spawn(
                ["--status-file", str(status_file), "--timeout", "60", "--", "sleep", "5"],
                str(tmp_path), dict(os.environ), out.fileno(), session=True, watch_parent=False,
            )  # fmt: skip
        assert spawned is not None
        status = read_status(status_file)
        assert status is not None and status["supervisor"] == spawned.pid
        wait_for(lambda: (read_status(status_file) or {}).get("state") == "running", 10, "the command started")
        spawned.terminate()
        assert finished(status_file)["error"] is not None
        spawned.close()
    finally:
        server.close()


def test_the_server_is_not_started_by_a_process_that_never_spawns() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "from runner import procs; print(procs.FORK_SERVER.pid)"],
        capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert out.stdout.strip() == "None"
