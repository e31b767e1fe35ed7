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


# -- run --until-idle ends, and says what is left ----------------------------------------------


def test_until_idle_exits_3_while_an_integration_is_held_then_0_once_it_lands(tmp_path: Path) -> None:
    s = make_sample(tmp_path)
    s.add("lands later")
    (s.repo / "README.md").write_text("a person's uncommitted edit\n")
    done = until_idle(s, timeout=60)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "t-1" in done.stdout and "integration held" in done.stdout and "uncommitted changes" in done.stdout
    assert s.status()["verified"] == 1 and s.base_log() == ["initial"]
    git(s.repo, "checkout", "README.md")
    done = until_idle(s, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert s.trailers() == ["t-1"]


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
