"""The process layer: detached children, runs that leave nothing behind, bounded output, PWD."""

from __future__ import annotations

import os
import time
from pathlib import Path

from runner import procs
from tests.proc_helpers import PYTHON, script, wait_for


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
    pid = procs.spawn_detached([PYTHON, show], work, log_path=tmp_path / "detached", env=stale)
    wait_for(lambda: not procs.pid_alive(pid), what="detached child done")
    assert (tmp_path / "detached").read_text() == expected
