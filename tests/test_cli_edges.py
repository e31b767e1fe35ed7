"""What a new user hits at the edges of the CLI: options after the command, a closed pipe, a bug,
a usage error, flags that name nothing. Each runs the real CLI as a process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import CLI, clean_env, default_root, write_config


def _with_closed_reader(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the CLI with standard output a pipe whose reader is already gone (`| head -0`)."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [sys.executable, "-m", "runner", *args],
            cwd=cwd, env=clean_env(), stdout=write, stderr=subprocess.PIPE, text=True, timeout=60,
        )  # fmt: skip
    finally:
        os.close(write)


def test_global_options_are_taken_after_the_command_too(cli: CLI, repo: Path) -> None:
    write_config(repo, "base: live\n", name="other.yaml")
    assert cli("task", "add", "one", "-c", "other.yaml", "-q", cwd=repo).code == 0
    shown = cli("config", "show", "--json", "-c", "other.yaml", cwd=repo)
    assert shown.code == 0, shown.err
    assert shown.json()["config_file"] == "other.yaml"
    # Before the command and after it: the later -c wins, an earlier one is not clobbered.
    assert cli("-c", "other.yaml", "status", "-q", cwd=repo).code == 0
    late = cli("-c", "missing.yaml", "status", "-c", "other.yaml", cwd=repo)
    assert late.code == 0, late.err
    early = cli("-c", "missing.yaml", "task", "list", "-v", cwd=repo)
    assert early.code == 1 and "missing.yaml" in early.err
    # -v after the command turns debug lines on (the error is also logged at debug level).
    assert "DEBUG" in early.err


def test_an_invalid_priority_is_a_usage_error(cli: CLI, repo: Path) -> None:
    done = cli("task", "add", "x", "--priority", "P9", cwd=repo)
    assert done.code == 2
    assert "--priority" in done.err and "P0, P1, P2, P3, P4" in done.err
    assert not default_root(repo).exists()  # nothing written


def test_a_closed_pipe_ends_quietly_with_0(cli: CLI, repo: Path) -> None:
    for n in range(3):
        assert cli("task", "add", f"task {n}", cwd=repo).code == 0
    for args in (["task", "list"], ["task", "show", "t-1"], ["config", "show"], ["status"]):
        done = _with_closed_reader(args, repo)
        assert done.returncode == 0, (args, done.stderr)
        assert done.stderr == "", (args, done.stderr)


def test_a_bug_exits_70_naming_the_file_with_its_traceback(cli: CLI, repo: Path) -> None:
    assert cli("task", "add", "one", cwd=repo).code == 0
    root = default_root(repo)
    # A faults file with values of the wrong types (edited by hand, say): status trips over it.
    (root / "faults.json").write_text(
        json.dumps([{"area": "dev", "message": 5, "since": "x", "count": 1, "retry_at": 0}])
    )
    done = cli("status", cwd=repo)
    assert done.code == 70
    assert "Traceback" not in done.err
    lines = done.err.strip().splitlines()
    assert len(lines) == 1 and "bug in pipeline-runner" in lines[0]
    path = Path(lines[0].rsplit(" ", 1)[1])
    assert path.is_file() and path.is_relative_to(root / "logs")
    assert "Traceback" in path.read_text() and "pipeline-runner status" in path.read_text()



def test_a_locked_database_is_a_clear_error_after_a_bounded_wait(cli: CLI, repo: Path) -> None:
    assert cli("task", "add", "first", cwd=repo).code == 0
    db = default_root(repo) / "state.db"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time\n"
         "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
         "c.execute('BEGIN IMMEDIATE'); print('locked', flush=True); time.sleep(60)", str(db)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        started = time.monotonic()
        done = cli("task", "add", "second", cwd=repo)
        waited = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    assert done.code == 1, done.err
    assert "Traceback" not in done.err and len(done.err.strip().splitlines()) == 1
    assert f"State database {db} is locked by another process" in done.err
    assert 4 < waited < 20
    # Once the lock is gone the same command works, and nothing of the refused one was kept.
    assert cli("task", "add", "second", cwd=repo).code == 0
    titles = [t["title"] for t in cli("task", "list", "--json", cwd=repo).json()]
    assert titles == ["first", "second"]


def test_run_limited_to_a_task_that_does_not_exist_says_so(cli: CLI, repo: Path) -> None:
    write_config(repo, "base: live\nallow_unchecked: true\n")
    for args, env, where in (
        (["--task-id", "t-9"], {}, "flag --task-id"),
        (["--parent", "epic-x"], {}, "flag --parent"),
        ([], {"PIPELINE_TASK_ID": "nope"}, "env PIPELINE_TASK_ID"),
    ):
        done = cli("run", "--once", *args, cwd=repo, env=env)
        assert done.code == 1, done.err
        assert where in done.err and "no task has the id" in done.err
    assert not (default_root(repo) / "state.db").exists()  # a refused run creates nothing
    assert cli("task", "add", "real", cwd=repo).code == 0
    assert cli("task", "add", "epic", "--id", "epic-x", "--type", "epic", cwd=repo).code == 0
    assert cli("run", "--dry-run", "--task-id", "t-1", cwd=repo).code == 0
    assert cli("run", "--dry-run", "--parent", "epic-x", cwd=repo).code == 0
    assert cli("run", "--dry-run", "--task-id", "t-2", cwd=repo).code == 1


def test_a_path_the_machine_refuses_is_an_error_naming_it_not_a_bug(cli: CLI, repo: Path) -> None:
    (repo / "afile").write_text("")
    done = cli("task", "add", "x", cwd=repo, env={"PIPELINE_ROOT": "afile/state"})
    assert done.code == 1, done.err
    assert done.err.strip() == f"pipeline-runner: cannot use {repo / 'afile' / 'state'}: Not a directory"
