"""The process layer: detached children, runs that leave nothing behind, bounded output, PWD."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

from runner import procs
from runner.supervise import read_status
from tests.proc_helpers import (
    DAEMONS,
    LOUD,
    PYTHON,
    alive,
    cleanup,
    marked,
    peak_rss_kib,
    read_pids,
    reset_peak_rss,
    script,
    wait_for,
)


def test_a_child_just_started_is_alive_even_while_it_is_still_exec_ing(tmp_path: Path) -> None:
    # Right after Popen returns, the kernel may not have set up the child's new command line
    # yet; a runner that took that for "gone" failed agent runs that were in fact working.
    script = tmp_path / "sleeper.py"
    script.write_text("import time\ntime.sleep(2)\n")
    pids = []
    for _ in range(60):
        pid = procs.spawn_detached(procs.python_script_argv(str(script)), tmp_path, log_path=tmp_path / "log")
        pids.append(pid)
        assert procs.pid_alive(pid, str(script))
    for pid in pids:
        procs.kill_group(pid)


def test_a_finished_child_or_a_foreign_pid_is_not_alive(tmp_path: Path) -> None:
    script = tmp_path / "quick.py"
    script.write_text("")
    pid = procs.spawn_detached(procs.python_script_argv(str(script)), tmp_path, log_path=tmp_path / "log")
    deadline = time.monotonic() + 10
    while procs.pid_alive(pid, str(script)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not procs.pid_alive(pid, str(script))
    sleeper = tmp_path / "sleeper.py"
    sleeper.write_text("import time\ntime.sleep(5)\n")
    other = procs.spawn_detached(procs.python_script_argv(str(sleeper)), tmp_path, log_path=tmp_path / "log")
    try:
        deadline = time.monotonic() + 10
        while not Path(f"/proc/{other}/cmdline").read_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)
        # A live process that is not ours (pid reused by something else) does not count.
        assert not procs.pid_alive(other, str(script))
        assert procs.pid_alive(other, str(sleeper))
    finally:
        procs.kill_group(other)


# -- what a run leaves behind -------------------------------------------------------------------


def test_kill_marked_ends_what_a_killed_supervisor_left_behind(tmp_path: Path) -> None:
    daemons = script(tmp_path, "daemons.py", DAEMONS)
    run_id, other_id = f"run-{uuid.uuid4()}", f"run-{uuid.uuid4()}"
    with cleanup([]) as pids:
        bystander = procs.spawn_detached(
            ["sleep", "600"], tmp_path, log_path=tmp_path / "other.log", env={**os.environ, "PIPELINE_RUN_ID": other_id}
        )
        pids.append(bystander)
        supervisor = procs.spawn_detached(
            procs.python_script_argv(
                procs.SUPERVISOR_SCRIPT, "--status-file", str(tmp_path / "run.json"), "--timeout", "600",
                "--", PYTHON, daemons, str(tmp_path / "pids"), "600",
            ),
            tmp_path, log_path=tmp_path / "run.log", env={**os.environ, "PIPELINE_RUN_ID": run_id},
        )  # fmt: skip
        pids += read_pids(tmp_path / "pids")
        leader = (read_status(tmp_path / "run.json") or {})["pid"]
        pids.append(leader)
        os.kill(supervisor, signal.SIGKILL)  # nothing of it runs to clean up: its descendants go to init
        wait_for(lambda: not alive(supervisor), what="supervisor gone")
        assert all(alive(pid) for pid in pids)
        assert procs.kill_marked("PIPELINE_RUN_ID", run_id) == 4  # the agent and its three daemons
        wait_for(lambda: not any(alive(pid) for pid in pids if pid != bystander), 5, "marked processes gone")
        assert alive(bystander)  # another run's process is not touched
        assert procs.kill_marked("PIPELINE_RUN_ID", run_id) == 0


def test_run_logged_ends_the_daemons_a_recipe_leaves(tmp_path: Path) -> None:
    daemons = script(tmp_path, "daemons.py", DAEMONS)
    log = tmp_path / "logs" / "verify.log"
    log.parent.mkdir()
    log.write_text("$ earlier recipe\n")
    with cleanup([]) as pids:
        result = procs.run_logged([PYTHON, daemons, str(tmp_path / "pids"), "0"], tmp_path, log_path=log, timeout=60)
        pids += read_pids(tmp_path / "pids")
        assert result.ok and result.exit_code == 0 and result.error is None
        assert [pid for pid in pids if alive(pid)] == []
    assert log.read_text() == "$ earlier recipe\nstarted 3 daemons\n"
    assert result.tail == "started 3 daemons\n"
    assert sorted(p.name for p in log.parent.iterdir()) == ["verify.log"]  # no status file left over


def test_run_logged_reports_exit_code_timeout_and_a_command_that_cannot_start(tmp_path: Path) -> None:
    failing = script(tmp_path, "failing.py", "import sys\nfor i in range(5000):\n    print('line', i)\nsys.exit(3)\n")
    log = tmp_path / "log"
    result = procs.run_logged([PYTHON, failing], tmp_path, log_path=log, timeout=60, tail_bytes=100)
    assert (result.exit_code, result.timed_out, result.ok) == (3, False, False)
    assert result.tail.endswith("line 4998\nline 4999\n") and len(result.tail) <= 100
    daemons = script(tmp_path, "daemons.py", DAEMONS)
    with cleanup([]) as pids:
        started = time.monotonic()
        result = procs.run_logged([PYTHON, daemons, str(tmp_path / "pids"), "600"], tmp_path, log_path=log, timeout=1)
        pids += read_pids(tmp_path / "pids")
        assert result.timed_out and not result.ok and time.monotonic() - started < 10
        assert [pid for pid in pids if alive(pid)] == []
    missing = procs.run_logged([str(tmp_path / "no-such-tool"), "x"], tmp_path, log_path=log, timeout=60)
    assert missing.exit_code is None and not missing.ok
    assert missing.error is not None and "could not be started" in missing.error


def test_a_recipe_ends_soon_after_its_runner_is_killed(tmp_path: Path) -> None:
    daemons = script(tmp_path, "daemons.py", DAEMONS)
    runner = script(
        tmp_path,
        "fake_runner.py",
        "import sys\nfrom pathlib import Path\nfrom runner import procs\n"
        "procs.run_logged([sys.executable, sys.argv[1], sys.argv[2], '600'], Path(sys.argv[3]),"
        " log_path=Path(sys.argv[4]), timeout=600)\n",
    )
    mark = str(uuid.uuid4())
    with cleanup([]) as pids:
        proc = subprocess.Popen(
            [PYTHON, runner, daemons, str(tmp_path / "pids"), str(tmp_path), str(tmp_path / "log")],
            env={**os.environ, "TEST_RECIPE_MARK": mark},
        )
        pids.append(proc.pid)
        pids += read_pids(tmp_path / "pids")
        pids += marked("TEST_RECIPE_MARK", mark)  # the supervisor and the fork server among them
        # The runner, its fork server, the supervisor forked from it, the recipe, three daemons.
        assert len(set(pids)) == 7
        proc.kill()
        proc.wait()
        # Before, the recipe ran on to its end and a restarted runner started a second one beside it.
        wait_for(lambda: not marked("TEST_RECIPE_MARK", mark), 3, "the recipe's processes gone")


def test_a_flood_of_recipe_output_stays_out_of_the_runner_s_memory(tmp_path: Path) -> None:
    loud = script(tmp_path, "loud.py", LOUD)
    log = tmp_path / "log"
    reset_peak_rss()
    before = peak_rss_kib()
    result = procs.run_logged([PYTHON, loud, "200"], tmp_path, log_path=log, timeout=120)
    growth = peak_rss_kib() - before
    assert result.ok and result.tail.endswith("." * 99 + "\nLAST LINE\n")
    assert growth < 32 * 1024, f"the runner grew by {growth} KiB"
    data = log.read_bytes()
    assert len(data) <= procs.MAX_OUTPUT_BYTES
    assert data.startswith(b"FIRST LINE\n") and re.search(rb"\n\[\.\.\. \d+ bytes cut \.\.\.\]\n\.", data)


def test_recipe_output_is_masked(tmp_path: Path) -> None:
    secret = "pw-0a1b2c3d4e5f"
    leaky = script(tmp_path, "leaky.py", "import os\nprint('using', os.environ['DB_PASSWORD'])\n")
    log = tmp_path / "log"
    result = procs.run_logged(
        [PYTHON, leaky], tmp_path, log_path=log, timeout=60, env={**os.environ, "DB_PASSWORD": secret}
    )
    assert result.ok and log.read_text() == "using ***\n" and result.tail == "using ***\n"


# -- PWD ------------------------------------------------------------------------------------------

SHOW_DIRS = "import os\nprint(os.environ.get('PWD'))\nprint(os.getcwd())\n"


def test_every_child_sees_pwd_equal_to_its_working_directory(tmp_path: Path) -> None:
    show = script(tmp_path, "show.py", SHOW_DIRS)
    work = tmp_path / "work"
    work.mkdir()
    expected = f"{work}\n{work}\n"
    stale = {**os.environ, "PWD": "/somewhere/else"}
    assert procs.run([PYTHON, show], cwd=work).output == expected
    assert procs.run([PYTHON, show], cwd=work, env=stale).output == expected
    assert procs.run([PYTHON, show], cwd=work, env={"PATH": os.environ["PATH"]}).output == expected
    logged = procs.run_logged([PYTHON, show], work, log_path=tmp_path / "logged", timeout=60, env=stale)
    assert logged.ok and (tmp_path / "logged").read_text() == expected
    pid = procs.spawn_detached([PYTHON, show], work, log_path=tmp_path / "detached", env=stale)
    wait_for(lambda: not procs.pid_alive(pid), what="detached child done")
    assert (tmp_path / "detached").read_text() == expected
