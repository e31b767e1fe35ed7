"""Warm workspaces (runner.warm): a released workspace is reused for the next task, and that task
starts from exactly base's tip whatever the earlier agent left there. Real repositories, real
processes (tests/fakes/litter-agent does the littering)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from runner import killpoints
from runner.git import Git
from runner.layout import Layout
from runner.warm import Taken, WarmPool, users_of
from runner.workspace import Workspaces
from tests.conftest import FAKES, clean_env, git, make_repo
from tests.loop_helpers import all_done, kill_leftovers, make_sample

FILES = {"README.md": "hello world\n", "src/a.py": "a = 1\n", "src/b.py": "b = 2\n", "docs/keep.md": "keep\n"}


def setup(tmp_path: Path, keep: int = 2) -> tuple[Path, Workspaces]:
    repo = make_repo(tmp_path / "repo", files=FILES)
    layout = Layout(tmp_path / "root")
    layout.ensure()
    return repo, Workspaces(Git(repo), layout, WarmPool(layout.root, keep=keep))


def litter(workspace: Path, outside: Path, *extra: str) -> None:
    outside.mkdir(exist_ok=True)
    (outside / "theirs.txt").write_text("not the runner's\n")
    subprocess.run([str(FAKES / "litter-agent"), str(outside), *extra], cwd=workspace, env=clean_env(), check=True)


def move_base(repo: Path) -> None:
    (repo / "src" / "b.py").write_text("b = 3\n")
    (repo / "new.txt").write_text("new\n")
    git(repo, "rm", "-q", "docs/keep.md")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base moves")


def files_of(path: Path) -> dict[str, str]:
    found = {}
    for folder, dirs, names in os.walk(path):
        dirs[:] = [d for d in dirs if not (folder == str(path) and d == ".git")]
        for name in names + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            full = Path(folder) / name
            found[str(full.relative_to(path))] = "LINK" if full.is_symlink() else full.read_text()
    return found


def assert_pristine(workspace: Path, repo: Path, ws: Workspaces, task_id: str) -> None:
    """Exactly base's tip, and a git directory as the runner makes it: nothing else."""
    names = git(repo, "ls-tree", "-r", "--name-only", "live").splitlines()
    assert files_of(workspace) == {n: git(repo, "show", f"live:{n}") + "\n" for n in names}
    dot_git = workspace / ".git"
    assert not (dot_git / "info" / "exclude").exists()
    assert not (dot_git / "config.worktree").exists()
    assert not (dot_git / "hooks").exists() or not any((dot_git / "hooks").iterdir())
    assert (dot_git / "config").read_text() == ws.checkouts.config_text()
    local = ws.checkouts.git_of(workspace)
    refs = local.out("for-each-ref", "--format=%(refname)").splitlines()
    assert sorted(refs) == ["refs/heads/live", f"refs/heads/{task_id}"]
    assert local.out("symbolic-ref", "HEAD") == f"refs/heads/{task_id}"
    assert local.out("rev-parse", "HEAD") == git(repo, "rev-parse", "live")
    assert local.out("status", "--porcelain", "--ignored", "--untracked-files=all") == ""
    # Objects the earlier agent wrote are gone with its git directory (a planted object would
    # stand for base's content under base's name).
    assert not [p for p in (dot_git / "objects").rglob("*") if p.is_file() and "info" not in p.parts]


def test_a_recycled_workspace_holds_exactly_base_and_nothing_the_last_agent_left(tmp_path: Path) -> None:
    repo, ws = setup(tmp_path)
    first = ws.acquire("t-1", "live")
    litter(first, tmp_path / "outside")
    ws.release("t-1")
    assert ws.warm is not None and len(ws.warm.entries()) == 1
    assert not first.exists()
    move_base(repo)

    second = ws.acquire("t-2", "live")

    assert ws.warm.entries() == []  # it was taken, not made cold beside it
    assert_pristine(second, repo, ws, "t-2")
    # The symlink was removed, not followed: the directory it pointed to is untouched.
    assert files_of(tmp_path / "outside") == {"theirs.txt": "not the runner's\n"}
    # The planted hook never ran; the file nobody touched was not written again.
    assert not (tmp_path / "outside" / "hook-ran").exists()
    # Rewritten in place with its size and times kept: written again all the same.
    assert (second / "README.md").read_text() == "hello world\n"


def test_files_untouched_since_the_last_checkout_are_not_written_again(tmp_path: Path) -> None:
    repo, ws = setup(tmp_path)
    first = ws.acquire("t-1", "live")
    kept = (first / "src" / "a.py").stat()
    time.sleep(1.1)  # past the index's own second, in which git compares content instead
    ws.release("t-1")
    move_base(repo)
    second = ws.acquire("t-2", "live")
    assert first != second
    again = (second / "src" / "a.py").stat()
    assert (again.st_ino, again.st_mtime_ns) == (kept.st_ino, kept.st_mtime_ns)
    assert not (second / "docs" / "keep.md").exists()  # removed from base: removed here
    assert (second / "src" / "b.py").read_text() == "b = 3\n"
    assert_pristine(second, repo, ws, "t-2")


def test_a_workspace_a_process_still_writes_in_is_never_handed_on(tmp_path: Path) -> None:
    repo, ws = setup(tmp_path)
    first = ws.acquire("t-1", "live")
    outside = tmp_path / "outside"
    litter(first, outside, "--writer", "20")
    pid = int((outside / "writer.pid").read_text())
    try:
        ws.release("t-1")
        assert ws.warm is not None
        parked = ws.warm.dir / ws.warm.entries()[0]
        assert users_of(parked) == [pid]
        assert ws.warm.take("t-2", ws.layout.worktree("t-2")).status is Taken.IN_USE
        assert not parked.exists() and ws.warm.entries() == []
        second = ws.acquire("t-2", "live")  # made cold
        time.sleep(0.2)  # the writer goes on, in a directory no task has any more
        assert_pristine(second, repo, ws, "t-2")
    finally:
        os.kill(pid, signal.SIGKILL)


def test_a_workspace_git_cannot_clean_is_made_afresh(tmp_path: Path) -> None:
    repo, ws = setup(tmp_path)
    first = ws.acquire("t-1", "live")
    locked = first / "build" / "locked"
    locked.mkdir(parents=True)
    (locked / "x").write_text("x\n")
    locked.chmod(0)
    ws.release("t-1")
    second = ws.acquire("t-2", "live")
    assert_pristine(second, repo, ws, "t-2")


def test_half_parked_and_half_recycled_workspaces_are_not_used(tmp_path: Path) -> None:
    repo, ws = setup(tmp_path)
    assert ws.warm is not None
    first = ws.acquire("t-1", "live")
    ws.release("t-1")
    # A kill between the two renames of parking: an index without its directory.
    (ws.warm.dir / "orphan.index").write_text("not an index")
    # A kill in the middle of recycling: the earlier task's git directory, at the new task's path.
    name = ws.warm.entries()[0]
    second_path = ws.layout.worktree("t-2")
    os.rename(ws.warm.dir / name, second_path)
    (ws.warm.dir / f"{name}.index").unlink()
    (second_path / "stray.txt").write_text("half\n")
    ws.warm.tidy()
    assert sorted(p.name for p in ws.warm.dir.iterdir()) == []
    second = ws.acquire("t-2", "live")
    assert second == second_path and first != second
    assert_pristine(second, repo, ws, "t-2")


def test_the_pool_keeps_no_more_than_it_is_allowed(tmp_path: Path) -> None:
    _repo, ws = setup(tmp_path, keep=1)
    for task in ("t-1", "t-2"):
        ws.acquire(task, "live")
    ws.release("t-1")
    ws.release("t-2")
    assert ws.warm is not None and len(ws.warm.entries()) == 1
    assert not ws.layout.worktree("t-2").exists()
    assert not (ws.warm.indexes / "t-2").exists()


def test_a_symlinked_workspace_is_never_parked(tmp_path: Path) -> None:
    _repo, ws = setup(tmp_path)
    first = ws.acquire("t-1", "live")
    elsewhere = tmp_path / "elsewhere"
    os.rename(first, elsewhere)
    first.symlink_to(elsewhere)
    ws.release("t-1")
    assert ws.warm is not None and ws.warm.entries() == []
    assert elsewhere.is_dir() and not first.exists()


@pytest.mark.parametrize("kill_at", [None, *killpoints.WARM_POINTS])
def test_a_task_started_in_a_littered_warm_workspace_lands_only_its_own_work(tmp_path: Path, kill_at: str | None) -> None:
    # The fake agent commits with `git add -A`: anything left in its workspace would land.
    s = make_sample(tmp_path, concurrency=1)
    s.plan({"t-1": [{"files": {"one.txt": "1\n"}}], "t-2": [{"files": {"two.txt": "2\n"}}]})
    s.add("first")
    s.run_once_until(all_done(1), limit=40)
    (parked,) = [p for p in (s.root / "warm").iterdir() if p.is_dir()]
    (parked / "junk.txt").write_text("left behind\n")
    (parked / "README.md").write_text("tampered\n")
    hook = parked / ".git" / "hooks" / "pre-commit"
    hook.parent.mkdir(parents=True, exist_ok=True)
    hook.write_text("#!/bin/sh\nexit 1\n")
    hook.chmod(0o755)
    s.add("second")
    if kill_at is not None:
        s.run_once_until_killed(kill_at)
    s.run_once_until(all_done(2), limit=40)
    assert not parked.exists()  # taken by t-2, not passed over
    assert sorted(s.trailers()) == ["t-1", "t-2"]
    assert git(s.repo, "ls-tree", "-r", "--name-only", "live").splitlines() == [
        "README.md", "check.py", "one.txt", "two.txt"
    ]
    assert git(s.repo, "show", "live:README.md") == "sample"
    assert s.leftover_worktrees() == []
    assert kill_leftovers(s.root) == []
