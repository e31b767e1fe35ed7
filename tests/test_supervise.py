"""The agent supervisor: nothing an agent starts outlives its run, and its output stays bounded."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from phases.agents import AgentRequest, AgentState, CommandBackend
from runner import procs
from runner.config import AgentConfig
from runner.supervise import read_status
from tests.proc_helpers import DAEMONS, LOUD, LOUD_EXTRA, PYTHON, alive, cleanup, read_pids, script, wait_for

CUT = re.compile(rb"\[\.\.\. (\d+) bytes cut \.\.\.\]\n")


# Each test runs with the supervisor forked from the fork server (as the runner starts them) and
# started as an interpreter of its own (where no fork server can be used).
START = "forked"


@pytest.fixture(autouse=True, params=["forked", "started"])
def _how_started(request: pytest.FixtureRequest) -> None:
    global START
    START = request.param


def supervise(tmp: Path, command: list[str], *options: str, env: dict[str, str] | None = None) -> int:
    """Start the supervisor detached, as the command backend does; its pid."""
    if START == "forked":
        return procs.spawn_supervisor(
            ["--status-file", str(tmp / "run.json"), *options, "--", *command], tmp, log_path=tmp / "run.log", env=env
        )
    argv = procs.python_script_argv(
        procs.SUPERVISOR_SCRIPT, "--status-file", str(tmp / "run.json"), *options, "--", *command
    )
    return procs.spawn_detached(argv, tmp, log_path=tmp / "run.log", env=env)


def finished(tmp: Path, timeout: float = 30) -> dict[str, Any]:
    """The supervisor's final status, once written."""
    wait_for(lambda: (read_status(tmp / "run.json") or {}).get("state") == "finished", timeout, "final status")
    status = read_status(tmp / "run.json")
    assert status is not None
    return status


def test_daemons_an_agent_leaves_behind_end_with_its_run(tmp_path: Path) -> None:
    daemons = script(tmp_path, "daemons.py", DAEMONS)
    with cleanup([]) as pids:
        supervise(tmp_path, [PYTHON, daemons, str(tmp_path / "pids"), "0"], "--timeout", "60")
        status = finished(tmp_path)
        pids += read_pids(tmp_path / "pids")
        assert status["exit_code"] == 0 and status["error"] is None
        # The setsid one and the double-forked one used to be left running for good.
        assert [pid for pid in pids if alive(pid)] == []
        assert "started 3 daemons" in (tmp_path / "run.log").read_text()


def test_daemons_end_when_the_agent_times_out(tmp_path: Path) -> None:
    daemons = script(tmp_path, "daemons.py", DAEMONS)
    with cleanup([]) as pids:
        supervise(tmp_path, [PYTHON, daemons, str(tmp_path / "pids"), "600"], "--timeout", "1")
        pids += read_pids(tmp_path / "pids")
        status = finished(tmp_path)
        pids.append(status["pid"])
        assert status["timed_out"] is True and "timed out after 1s" in status["error"]
        assert [pid for pid in pids if alive(pid)] == []


def test_daemons_end_when_the_supervisor_is_told_to_stop(tmp_path: Path) -> None:
    daemons = script(tmp_path, "daemons.py", DAEMONS)
    with cleanup([]) as pids:
        supervisor = supervise(tmp_path, [PYTHON, daemons, str(tmp_path / "pids"), "600"], "--timeout", "600")
        pids += read_pids(tmp_path / "pids")
        os.kill(supervisor, signal.SIGTERM)
        status = finished(tmp_path)
        pids.append(status["pid"])
        assert "stopped by signal 15" in status["error"]
        assert [pid for pid in pids if alive(pid)] == []


def test_a_flood_of_output_leaves_a_bounded_log_with_its_start_and_end(tmp_path: Path) -> None:
    loud = script(tmp_path, "loud.py", LOUD)
    (tmp_path / "run.log").write_bytes(b"earlier run\n")
    supervise(tmp_path, [PYTHON, loud, "200"], "--timeout", "120", "--max-bytes", str(procs.MAX_OUTPUT_BYTES))
    assert finished(tmp_path, 120)["exit_code"] == 0
    log = (tmp_path / "run.log").read_bytes()
    assert log.startswith(b"earlier run\nFIRST LINE\n") and log.endswith(b"\n" + b"." * 99 + b"\nLAST LINE\n")
    run = log[len(b"earlier run\n") :]
    assert len(run) <= procs.MAX_OUTPUT_BYTES
    (marker,) = CUT.findall(run)
    # The marker says exactly how much is missing, and it falls between whole lines.
    assert int(marker) + len(run) - len(CUT.search(run).group(0)) == 200 * 1_000_000 + LOUD_EXTRA  # type: ignore[union-attr]
    head, _, tail = run.partition(CUT.search(run).group(0))  # type: ignore[union-attr]
    assert head.endswith(b"\n") and tail.startswith(b".") and len(tail) % 100 == len(b"LAST LINE\n") % 100


def test_a_preset_s_separate_stdout_keeps_its_final_result_line_whole(tmp_path: Path) -> None:
    chatty = script(
        tmp_path,
        "chatty.py",
        "import json, sys\n"
        "event = json.dumps({'type': 'progress', 'text': 'x' * 200}) + '\\n'\n"
        "for i in range(200_000):\n"
        "    sys.stdout.write(event)\n"
        "    if i % 1000 == 0:\n"
        "        print('warning', i, file=sys.stderr)\n"
        "print(json.dumps({'type': 'result', 'result': 'done', 'cost': 1.5}))\n",
    )
    stdout = tmp_path / "run.stdout"
    cap = 1024 * 1024
    supervise(tmp_path, [PYTHON, chatty], "--timeout", "120", "--stdout", str(stdout), "--max-bytes", str(cap))
    assert finished(tmp_path, 120)["exit_code"] == 0
    out = stdout.read_bytes()
    assert len(out) <= cap and CUT.search(out)
    lines = out.decode().splitlines()
    assert json.loads(lines[-1]) == {"type": "result", "result": "done", "cost": 1.5}
    # Every line kept after the cut is whole, so a JSON-lines parser reads them all.
    after = out.partition(CUT.search(out).group(0))[2].decode().splitlines()  # type: ignore[union-attr]
    assert all(json.loads(line)["type"] in ("progress", "result") for line in after)
    log = (tmp_path / "run.log").read_text()
    assert "warning 0\n" in log and "warning 199000\n" in log and "progress" not in log


def test_one_endless_line_is_streamed_through_not_held_in_memory(tmp_path: Path) -> None:
    endless = script(
        tmp_path,
        "endless.py",
        "import sys\nchunk = b'y' * 1_000_000\nfor _ in range(300):\n    sys.stdout.buffer.write(chunk)\n",
    )
    # The peak memory of the supervisor and the command, as their parent sees it when they end.
    measure = script(
        tmp_path,
        "measure.py",
        "import resource, subprocess, sys\n"
        "with open(sys.argv[1], 'ab') as log:\n    subprocess.run(sys.argv[2:], stdout=log)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n",
    )
    argv = procs.python_script_argv(
        procs.SUPERVISOR_SCRIPT, "--status-file", str(tmp_path / "run.json"), "--timeout", "120",
        "--", PYTHON, endless,
    )  # fmt: skip
    log = tmp_path / "run.log"
    peak = subprocess.run([PYTHON, measure, str(log), *argv], capture_output=True, check=True, timeout=120).stdout
    # A whole 300 MB line would be held by a reader that waits for the line's end.
    assert int(peak) < 100 * 1024
    assert (read_status(tmp_path / "run.json") or {})["exit_code"] == 0
    assert log.stat().st_size <= procs.MAX_OUTPUT_BYTES and CUT.search(log.read_bytes())


def test_secrets_are_masked_wherever_they_are_in_a_long_output(tmp_path: Path) -> None:
    secret = "tok-9f8e7d6c5b4a"
    noisy = script(
        tmp_path,
        "noisy.py",
        "import os, sys\nsecret = os.environ['SERVICE_TOKEN']\n"
        "print('start', secret, 'https://bob:hunter22@example.com/x')\n"
        "for i in range(100_000):\n    print('line', i, 'with some text to fill the log')\n"
        "print('end', secret)\n",
    )
    supervise(
        tmp_path, [PYTHON, noisy], "--timeout", "60", "--max-bytes", "200000",
        env={**os.environ, "SERVICE_TOKEN": secret},
    )  # fmt: skip
    assert finished(tmp_path)["exit_code"] == 0
    log = (tmp_path / "run.log").read_text()
    assert "start *** https://***@example.com/x\n" in log and log.endswith("end ***\n")
    assert secret not in log and "hunter22" not in log


def test_an_agent_whose_supervisor_was_killed_is_ended_when_polled(tmp_path: Path) -> None:
    daemons = script(tmp_path, "daemons.py", DAEMONS)
    run_id = f"t-1-{uuid.uuid4()}"
    backend = CommandBackend(
        AgentConfig(preset="command", command=[PYTHON, daemons, str(tmp_path / "pids"), "600"], timeout=600)
    )
    request = AgentRequest(
        run_id=run_id, workspace=tmp_path, prompt_file=tmp_path / "prompt.md", log_path=tmp_path / "agent.log",
        status_file=tmp_path / "run.json", values={}, env={**os.environ, "PIPELINE_RUN_ID": run_id},
    )  # fmt: skip
    with cleanup([]) as pids:
        handle = backend.start(request)
        pids += read_pids(tmp_path / "pids")
        assert handle.pid is not None and backend.poll(handle).state is AgentState.RUNNING
        os.kill(handle.pid, signal.SIGKILL)  # with the machine's OOM killer, say: no clean-up runs
        wait_for(lambda: not alive(handle.pid or 0), what="supervisor gone")
        outcome = backend.poll(handle)
        assert outcome.state is AgentState.FAILED and "disappeared" in (outcome.error or "")
        # Its setsid and double-forked daemons used to run on.
        wait_for(lambda: not any(alive(pid) for pid in pids), 5, "the agent's processes gone")
