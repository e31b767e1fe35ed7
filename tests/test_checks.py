"""End to end: a task lands only when a check ran and passed; what is not a pass is shown as such.

Real repositories, the real loop as a separate process, the fake agent CLI.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import git
from tests.loop_helpers import Sample, make_sample

ALWAYS_BAD = {"files": {"x.txt": "BAD\n"}}


def commit_to_base(s: Sample, files: dict[str, str]) -> None:
    """A person's commit on base, in the main checkout, before any task runs."""
    for name, text in files.items():
        (s.repo / name).write_text(text)
    git(s.repo, "add", *files)
    git(s.repo, "commit", "-q", "-m", "setup")


def until_idle(s: Sample, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return s.cli("run", "--until-idle", timeout=timeout)


def runs_of(s: Sample, task_id: str) -> list[str]:
    return [f"{r['phase']}:{r['status']}" for r in s.task(task_id)["runs"]]


def system_comments(s: Sample, task_id: str) -> str:
    return "\n".join(c["body"] for c in s.task(task_id)["comments"] if c["author"] == "system")


# -- stray directories -------------------------------------------------------------------------


def test_a_stray_directory_under_worktrees_does_not_stop_the_runner(tmp_path: Path) -> None:
    s = make_sample(tmp_path)
    s.add("x")
    stray = s.root / "worktrees" / "not a task"
    stray.mkdir(parents=True)
    (stray / "notes.md").write_text("mine\n")
    done = s.cli("run", "--once")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "not a task" in done.stderr  # warned about, by name
    s.run_once_until(lambda d: d["done"] == 1)
    assert s.trailers() == ["t-1"]
    assert (stray / "notes.md").read_text() == "mine\n"  # not ours to delete
