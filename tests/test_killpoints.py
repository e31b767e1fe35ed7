"""The runner killed (SIGKILL) at every point where it writes state, then started again.

Whatever the point, the next starts finish every task, and: each task is on base once, every commit
on base passed its checks, no run is left running, no process of a run is left, no runner ref or
workspace is left, and no two agents ever worked in the same workspace at once.
"""

from __future__ import annotations

import os
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from runner import killpoints
from tests.conftest import git
from tests.loop_helpers import Sample, all_done, kill_leftovers, make_sample


def shared_workspaces(s: Sample) -> list[str]:
    """Workspaces in which one agent started while another was still working."""
    log = s.state / "occupancy.log"
    busy: dict[str, set[str]] = {}
    overlaps = []
    for line in log.read_text().splitlines() if log.exists() else []:
        cwd, pid, what, _when = line.split(" ")
        here = busy.setdefault(cwd, set())
        if what == "start":
            if here:
                overlaps.append(f"{cwd}: {pid} started beside {sorted(here)}")
            here.add(pid)
        else:
            here.discard(pid)
    return overlaps


@pytest.mark.parametrize("point", killpoints.POINTS)
def test_killed_at_each_point_the_next_start_finishes_everything(tmp_path: Path, point: str) -> None:
    s = make_sample(tmp_path, concurrency=2, limits={"max_retries": 5})
    # t-1 fails its check once (a new patchset), t-2 lands at once.
    s.plan({"t-1": [{"files": {"x.txt": "BAD\n"}}, {"files": {"x.txt": "ok\n"}}], "t-2": [{}]})
    s.add("first")
    s.add("second")
    s.run_once_until_killed(point)
    s.run_once_until(all_done(2), limit=80)

    assert sorted(s.trailers()) == ["t-1", "t-2"]  # each task once
    history = git(s.repo, "log", "-p", "live").splitlines()
    assert "+BAD" not in history
    # Exactly the landed commits carry a receipt: none is lost, none names a commit that never landed.
    landed = git(s.repo, "rev-list", "live", "--not", "live~2").split()
    noted = {line.split()[1] for line in git(s.repo, "notes", "--ref=pipeline", "list").splitlines()}
    assert noted == set(landed), "a receipt on a commit that never landed, or a landed commit without one"
    assert s.rows("SELECT COUNT(*) FROM pipeline_runs WHERE status='running'") == [(0,)]
    assert s.leftover_worktrees() == []
    assert git(s.repo, "for-each-ref", "refs/pipeline/") == ""
    assert git(s.repo, "status", "--porcelain", "--untracked-files=no") == ""
    assert shared_workspaces(s) == []
    assert kill_leftovers(s.root) == []


def test_a_lock_on_base_left_by_the_runners_killed_swap_is_removed_but_a_persons_is_not(tmp_path: Path) -> None:
    s = make_sample(tmp_path)
    s.add("x")
    s.run_once_until_verified()
    lock = s.repo / ".git" / "refs" / "heads" / "live.lock"
    # A person's git command took the lock before the runner's integration started: left alone.
    lock.write_text("")
    conn = sqlite3.connect(s.root / "state.db")
    with conn:
        conn.execute(
            "INSERT INTO pipeline_runs (task_id, phase, patchset, status, started_at) "
            "VALUES ('t-1', 'integrate', 0, 'running', ?)",
            (datetime.fromtimestamp(time.time() + 1, UTC).isoformat(),),
        )
    conn.close()
    assert s.cli("run", "--once").returncode == 3  # integration paused by the person's lock
    assert lock.exists() and s.base_log() == ["initial"]
    # The runner's own: made after its integration started, when it was killed mid-swap.
    conn = sqlite3.connect(s.root / "state.db")
    with conn:
        conn.execute(
            "INSERT INTO pipeline_runs (task_id, phase, patchset, status, started_at) "
            "VALUES ('t-1', 'integrate', 0, 'running', ?)",
            (datetime.fromtimestamp(time.time() - 5, UTC).isoformat(),),
        )
    conn.close()
    os.utime(lock, (time.time() - 3, time.time() - 3))
    s.run_once_until(all_done(1))
    assert not lock.exists() and s.trailers() == ["t-1"]


def test_locks_left_in_a_kept_workspace_by_killed_git_commands_are_removed(tmp_path: Path) -> None:
    # t-1 fails its check once: its workspace is kept and acquired again for the next attempt.
    s = make_sample(tmp_path)
    s.plan({"t-1": [{"files": {"x.txt": "BAD\n"}}, {"files": {"x.txt": "ok\n"}}]})
    s.add("x")
    s.run_once_until(lambda d: d["open"] == 1 and s.task("t-1")["patchset"] == 1)
    dot_git = s.root / "worktrees" / "t-1" / ".git"
    # What the runner killed inside `git update-ref refs/heads/live` there leaves, and an agent
    # killed inside `git commit`: each made every later attempt fail, so the task never landed.
    locks = [dot_git / "refs" / "heads" / "live.lock", dot_git / "refs" / "heads" / "t-1.lock", dot_git / "HEAD.lock"]
    for lock in locks:
        lock.write_text("")
    s.run_once_until(all_done(1), limit=20)
    assert s.trailers() == ["t-1"]
    assert [lock for lock in locks if lock.exists()] == []
    assert s.rows("SELECT COUNT(*) FROM pipeline_runs WHERE status='cancelled'") == [(0,)]
