"""End to end: a person steering tasks from another process while the real runner works, with the
fake agents as real processes and real git repositories. Nothing of a cancelled task ever lands."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

from tests.conftest import git
from tests.loop_helpers import all_done, make_sample, stop, wait_for


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_a_cancelled_queued_task_never_starts_its_dependant_is_blocked_and_retry_reopens_it(
    tmp_path: Path,
) -> None:
    s = make_sample(tmp_path)
    first = s.add("cancel me")
    after = s.add("needs the first", "--depends-on", first)
    other = s.add("unrelated")
    done = s.cli("task", "cancel", first)
    assert done.returncode == 0 and "cancelled" in done.stdout
    batch = s.cli("run", "--until-idle")
    # Everything that could land did; the dependant waits for a person, and the batch says so.
    assert batch.returncode == 3, batch.stdout + batch.stderr
    assert f"{after}  blocked" in batch.stdout and first in batch.stdout
    assert not (s.state / f"{first}.0.prompt").exists() and not (s.state / f"{after}.0.prompt").exists()
    assert s.trailers() == [other]
    doc = s.status()
    assert (doc["cancelled"], doc["open"], doc["needs_help"]) == (1, 1, 0)
    assert [(b["id"], b["blocked_by"]) for b in doc["blocked_tasks"]] == [(after, [first])]
    shown = s.cli("status").stdout
    assert f"blocked: {first} was cancelled" in shown.split(f"  {after}  open")[1].splitlines()[1]
    dry = s.cli("run", "--dry-run").stdout
    assert f"would leave {after} open: it depends on {first}, cancelled" in dry

    assert s.cli("task", "retry", first).returncode == 0
    assert s.cli("run", "--until-idle").returncode == 0
    assert sorted(s.trailers()) == sorted([first, after, other])


def test_cancel_while_the_agent_runs_stops_it_and_nothing_lands(tmp_path: Path) -> None:
    s = make_sample(tmp_path, interval=0.5)
    s.plan({"t-1": [{"sleep": 60}]})
    s.add("slow")
    proc = s.start()
    try:
        wait_for(lambda: s.status()["active_dev_runs"] == 1 and (s.state / "t-1.0.prompt").exists(), 30, proc)
        (pid,) = s.rows("SELECT pid FROM pipeline_runs WHERE phase = 'dev'")[0]
        assert alive(pid)
        done = s.cli("task", "cancel", "t-1")
        assert done.returncode == 0 and "stopped by the runner" in done.stdout
        wait_for(lambda: s.status()["active_runs"] == [], 20, proc)
    finally:
        stop(proc)
    assert not alive(pid)
    assert s.rows("SELECT phase, status FROM pipeline_runs WHERE parent_id IS NULL") == [("dev", "cancelled")]
    assert s.task("t-1")["status"] == "cancelled"
    assert s.base_log() == ["initial"]
    assert s.leftover_worktrees() == [] and git(s.repo, "for-each-ref", "refs/pipeline") == ""


SLOW = ["python3", "-c", "import time; time.sleep(60)"]


def test_cancel_during_integration_ends_its_checks_and_never_moves_base(tmp_path: Path) -> None:
    s = make_sample(tmp_path, interval=0.5, check_base=False,  # SLOW would hold base's own check first
                    phases={"verify": {"run": [["python3", "check.py"]]},
                            "slow": {"on": ["integrate"], "run": [SLOW]}})  # fmt: skip
    s.add("lands unless cancelled")
    proc = s.start()
    try:
        wait_for(lambda: any(p["name"] == "slow" for r in s.status()["active_runs"] for p in r["phases"]), 60, proc)
        assert s.cli("task", "cancel", "t-1").returncode == 0
        started = time.monotonic()
        wait_for(lambda: s.status()["active_runs"] == [], 30, proc)
        assert time.monotonic() - started < 20  # stopped, not waited out (the check sleeps 60 s)
    finally:
        stop(proc)
    assert s.base_log() == ["initial"]
    assert s.task("t-1")["status"] == "cancelled"
    (integrate,) = s.rows("SELECT status, error_summary FROM pipeline_runs WHERE phase = 'integrate'")
    assert integrate[0] == "cancelled" and "cancelled during integration" in integrate[1]
    assert git(s.repo, "notes", "--ref=pipeline", "list") == ""  # no receipt claims it landed
    assert s.leftover_worktrees() == [] and s.status()["faults"] == []
    # Stopped by the person, not failed: no retry is charged to it.
    assert s.rows("SELECT COUNT(*) FROM pipeline_runs WHERE status = 'failure' AND parent_id IS NULL") == [(0,)]


def test_cancel_during_verification_ends_its_checks(tmp_path: Path) -> None:
    s = make_sample(tmp_path, interval=0.5, check_base=False,  # SLOW would hold base's own check first
                    phases={"slow": {"on": ["verify"], "run": [SLOW]},
                            "verify": {"run": [["python3", "check.py"]]}})  # fmt: skip
    s.add("verified unless cancelled")
    proc = s.start()
    try:
        wait_for(lambda: any(p["name"] == "slow" for r in s.status()["active_runs"] for p in r["phases"]), 60, proc)
        assert s.cli("task", "cancel", "t-1").returncode == 0
        started = time.monotonic()
        wait_for(lambda: s.status()["active_runs"] == [], 30, proc)
        assert time.monotonic() - started < 20
    finally:
        stop(proc)
    assert s.task("t-1")["status"] == "cancelled" and s.base_log() == ["initial"]
    assert s.rows("SELECT status FROM pipeline_runs WHERE phase = 'verify' AND parent_id IS NULL") == [("cancelled",)]
    assert s.leftover_worktrees() == [] and s.status()["faults"] == []
    assert not list((s.root / "checks").glob("t-1/*"))


def test_a_verified_task_cancelled_while_its_integration_is_held_never_lands(tmp_path: Path) -> None:
    s = make_sample(tmp_path)
    s.add("verified, then cancelled")
    (s.repo / "README.md").write_text("edited by a person, not committed\n")
    s.run_once_until_verified()
    assert s.cli("task", "cancel", "t-1").returncode == 0
    git(s.repo, "checkout", "README.md")
    for _ in range(3):
        assert s.cli("run", "--once").returncode == 0
    assert s.base_log() == ["initial"] and s.task("t-1")["status"] == "cancelled"
    assert s.status()["held_integrations"] == []


def test_comments_and_an_edited_title_reach_the_next_prompt_after_a_retry(tmp_path: Path) -> None:
    s = make_sample(tmp_path, limits={"max_retries": 1})
    s.plan({"t-1": [{"files": {"x.txt": "BAD\n"}}, {"files": {"x.txt": "good\n"}}]})
    s.add("old title")
    assert s.cli("task", "comment", "t-1", "FIRST-NOTE before any attempt").returncode == 0
    assert s.cli("run", "--until-idle").returncode == 3
    assert s.task("t-1")["status"] == "needs_help"
    assert s.cli("task", "comment", "t-1", "USE-THE-BLUE-WIRE please").returncode == 0
    edited = s.cli("task", "edit", "t-1", "--title", "new title", "--priority", "P0")
    assert edited.returncode == 0 and "applies once it is retried" in edited.stdout
    retried = s.cli("task", "retry", "t-1")
    assert retried.returncode == 0 and "fresh retry budget" in retried.stdout
    assert s.cli("run", "--until-idle").returncode == 0
    first = (s.state / "t-1.0.prompt").read_text()
    second = (s.state / "t-1.1.prompt").read_text()
    assert "FIRST-NOTE" in first and "BLUE-WIRE" not in first and "old title" in first
    assert "FIRST-NOTE" in second and "USE-THE-BLUE-WIRE please" in second
    assert "new title" in second and "old title" not in second and "Priority: P0" in second
    # The runner's own notes (a failure, a status change) are not presented as a person's words.
    assert "verification failed" not in second.split("### Comments from a person")[1].split("###")[0]
    receipt = json.loads(s.cli("receipt", "--json").stdout)
    assert receipt["title"] == "new title"
    assert s.status()["done"] == 1 and all_done(1)(s.status())


def test_a_restart_cleans_what_cancelled_and_deleted_tasks_left_and_nothing_of_a_persons(tmp_path: Path) -> None:
    s = make_sample(tmp_path, limits={"max_retries": 1})
    s.plan({"t-1": [{"commits": 0}], "t-2": [{"commits": 0}]})
    s.add("cancelled by hand")
    s.add("deleted by hand")
    s.run_once_until(lambda d: d["needs_help"] == 2)  # each keeps its workspace for a retry
    assert sorted(p.name for p in (s.root / "worktrees").iterdir()) == ["t-1", "t-2"]
    # As a kill between a person's change and the cleanup would leave them.
    conn = sqlite3.connect(s.root / "state.db")
    conn.execute("UPDATE tasks SET status = 'cancelled' WHERE id = 't-1'")
    conn.execute("DELETE FROM tasks WHERE id = 't-2'")
    conn.execute("DELETE FROM pipeline_runs WHERE task_id = 't-2'")
    conn.commit()
    conn.close()
    mine = s.root / "worktrees" / "notes"
    mine.mkdir()
    (mine / "todo.md").write_text("mine\n")
    assert s.cli("run", "--once").returncode == 0
    assert sorted(p.name for p in (s.root / "worktrees").iterdir()) == ["notes"]
    assert (mine / "todo.md").read_text() == "mine\n"


@pytest.mark.parametrize("point", ["before-swap", "swapped"])
def test_a_task_whose_candidate_may_be_on_base_cannot_be_cancelled(tmp_path: Path, point: str) -> None:
    # The runner is killed with the candidate recorded (before or right after base moved to it): a
    # cancel then would leave a task cancelled whose commit is, or may yet be, on base.
    s = make_sample(tmp_path)
    s.add("lands")
    s.run_once_until_killed(point, limit=30)
    refused = s.cli("task", "cancel", "t-1")
    assert refused.returncode == 1 and "landing right now" in refused.stderr
    assert s.task("t-1")["status"] == "verified"
    s.run_once_until(lambda d: d["verified"] == 0)
    # Killed before the swap, recovery drops that candidate and it lands on the next try.
    s.run_once_until(all_done(1))
    assert s.trailers() == ["t-1"]
