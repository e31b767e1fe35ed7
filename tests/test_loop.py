"""End to end: the real loop over real git repositories, with fake agent CLIs as real processes."""

from __future__ import annotations

import fcntl
import hashlib
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from phases.agents import SUPERVISOR_MODULE
from runner import killpoints, procs
from runner.layout import Layout
from tests.conftest import git
from tests.loop_helpers import all_done, kill_leftovers, make_sample, stop, wait_for


def test_three_tasks_land_in_dependency_and_priority_order(tmp_path: Path) -> None:
    s = make_sample(tmp_path, concurrency=1)
    a = s.add("first, P2", "--priority", "P2")
    c = s.add("third, P3", "--priority", "P3")
    b = s.add("depends on c, P1", "--priority", "P1", "--depends-on", c)
    s.run_until(all_done(3))
    # Newest first: a (P2) before c (P3); b (P1) waited for c.
    assert s.trailers() == [b, c, a]
    assert len(s.base_log()) == 4
    for task_id in (a, b, c):
        assert (s.repo / f"{task_id}.txt").read_text() == f"{task_id} done\n"
        task = s.task(task_id)
        assert task["status"] == "done"
        bodies = [c["body"] for c in task["comments"]]
        assert any("dev started" in x for x in bodies) and any("integrated into live" in x for x in bodies)
        assert [(r["phase"], r["status"]) for r in task["runs"]] == [
            ("dev", "success"),
            ("verify", "success"),
            ("integrate", "success"),
        ]
    assert s.leftover_worktrees() == []
    assert s.task_branches() == []
    # base is checked out in the main worktree: it follows, with no phantom changes.
    assert git(s.repo, "status", "--porcelain", "--untracked-files=no") == ""


def test_verify_failure_feeds_the_next_prompt(tmp_path: Path) -> None:
    s = make_sample(tmp_path)
    s.plan({"t-1": [{"files": {"x.txt": "BAD value\n"}}, {"files": {"x.txt": "good\n"}}]})
    s.add("fix x")
    s.run_until(all_done(1))
    first = (s.state / "t-1.0.prompt").read_text()
    second = (s.state / "t-1.1.prompt").read_text()
    assert "Previous Review Feedback" not in first
    assert "previous patchset was rejected" in second.lower()
    assert "bad files: ['x.txt']" in second
    task = s.task("t-1")
    assert task["patchset"] == 1
    assert (s.repo / "x.txt").read_text() == "good\n"
    assert [r["phase"] + ":" + r["status"] for r in task["runs"]] == [
        "dev:success",
        "verify:failure",
        "dev:success",
        "verify:success",
        "integrate:success",
    ]
    log = Path(task["runs"][1]["log_path"])
    assert "bad files" in log.read_text()


def test_always_failing_task_reaches_needs_help_and_stops(tmp_path: Path) -> None:
    s = make_sample(tmp_path, limits={"max_retries": 3})
    s.plan({"t-1": [{"files": {"x.txt": "BAD\n"}}]})
    s.add("hopeless")
    doc = s.run_until(lambda d: d["needs_help"] == 1)
    assert "max_retries=3" in doc["needs_help_tasks"][0]["reason"]
    assert s.rows("SELECT COUNT(*) FROM pipeline_runs WHERE phase='dev'") == [(3,)]
    s.cli("run", "--once")
    s.cli("run", "--once")
    assert s.rows("SELECT COUNT(*) FROM pipeline_runs WHERE phase='dev'") == [(3,)]
    assert s.base_log() == ["initial"]

    # A person resumes it: the count restarts, and it can now succeed.
    s.plan({"t-1": [{"files": {"x.txt": "fine\n"}}]})
    assert s.cli("task", "set-status", "t-1", "open").returncode == 0
    s.run_until(all_done(1))


def test_cost_cap_sends_task_to_needs_help_with_agentd(tmp_path: Path) -> None:
    s = make_sample(
        tmp_path,
        agent={"preset": "agentd", "command": None},
        limits={"max_retries": 10, "max_task_cost": 100},
    )
    s.plan({"t-1": [{"files": {"x.txt": "BAD\n"}, "cost": 40}]})
    s.add("expensive")
    doc = s.run_until(lambda d: d["needs_help"] == 1)
    assert doc["cost_cents"] == 120
    assert "max_task_cost=100" in doc["needs_help_tasks"][0]["reason"]
    assert s.rows("SELECT COUNT(*) FROM pipeline_runs WHERE phase='dev'") == [(3,)]


def test_agentd_failure_and_cost_are_recorded(tmp_path: Path) -> None:
    s = make_sample(tmp_path, agent={"preset": "agentd", "command": None, "provider": "acme"},
                    limits={"max_retries": 1})  # fmt: skip
    s.plan({"t-1": [{"commits": 0, "error": "model refused", "cost": 7}]})
    s.add("x")
    s.run_until(lambda d: d["needs_help"] == 1)
    row = s.rows("SELECT status, error_summary, cost_cents FROM pipeline_runs WHERE phase='dev'")[0]
    assert row == ("failure", "model refused", 7.0)
    run_state = json.loads((s.state / "agentd" / "t-1-1.json").read_text())
    assert run_state["provider"] == "acme" and run_state["max_cost"] == 300


def test_agent_misbehaviour_is_judged(tmp_path: Path) -> None:
    s = make_sample(tmp_path, limits={"max_retries": 1}, agent={"timeout": 2}, concurrency=3)
    s.plan({
        "t-1": [{"commits": 0}],
        "t-2": [{"commits": 2}],
        "t-3": [{"sleep": 30, "sleeper": 4}],
    })  # fmt: skip
    for title in ("no commit", "two commits", "too slow"):
        s.add(title)
    s.run_until(lambda d: d["needs_help"] == 3, timeout=60)
    errors = dict(s.rows("SELECT task_id, error_summary FROM pipeline_runs WHERE status='failure'"))
    assert errors["t-1"] == "agent made no commit"
    assert "expected exactly 1 commit" in errors["t-2"] and "found 2" in errors["t-2"]
    assert "timed out after 2s" in errors["t-3"]
    # The agent's child, which would have written a marker after 4 s, died with its group.
    time.sleep(3)
    assert not (s.state / "t-3.0.sleeper-survived").exists()


def test_agent_non_zero_exit_is_a_failure_with_its_output(tmp_path: Path) -> None:
    s = make_sample(tmp_path, limits={"max_retries": 1})
    s.plan({"t-1": [{"exit": 3, "error": "rate limited by provider"}]})
    s.add("x")
    s.run_until(lambda d: d["needs_help"] == 1)
    (error,) = s.rows("SELECT error_summary FROM pipeline_runs WHERE phase='dev'")[0]
    assert "exited with status 3" in error and "rate limited by provider" in error


def test_conflicting_tasks_second_redeveloped_on_new_base(tmp_path: Path) -> None:
    s = make_sample(tmp_path)
    s.plan({
        "t-1": [{"files": {"shared.txt": "from one\n"}}],
        "t-2": [{"files": {"shared.txt": "from two\n"}}],
    })  # fmt: skip
    s.add("one", "--priority", "P1")
    s.add("two", "--priority", "P2")
    s.run_until(all_done(2))
    # Both were developed on the same base; whichever landed second conflicted and was redone.
    first, second = reversed(s.trailers())
    assert sorted([first, second]) == ["t-1", "t-2"]
    assert s.task(first)["patchset"] == 0
    redone = s.task(second)
    assert redone["patchset"] == 1
    assert any("conflict" in c["body"] for c in redone["comments"])
    assert [(r["phase"], r["status"]) for r in redone["runs"]][:4] == [
        ("dev", "success"),
        ("verify", "success"),
        ("integrate", "failure"),
        ("dev", "success"),
    ]
    # Redeveloped on the new base, with the conflict in its prompt; its change is what base holds.
    assert "conflict" in (s.state / f"{second}.1.prompt").read_text().lower()
    word = {"t-1": "one", "t-2": "two"}[second]
    assert (s.repo / "shared.txt").read_text() == f"from {word}\n"


def test_commit_pushed_to_base_during_verify_is_kept(tmp_path: Path) -> None:
    s = make_sample(tmp_path)
    s.env["PUSH_FROM"] = str(s.repo)
    s.plan({"t-1": [{"files": {"t1.txt": "mine\n", "PUSH_DURING_verify": "x"}}]})
    s.add("task")
    s.run_until(all_done(1))
    assert s.base_log() == ["t-1: attempt 0", "A person's commit", "initial"]
    assert (s.repo / "person.md").exists() and (s.repo / "t1.txt").exists()
    assert git(s.repo, "status", "--porcelain", "--untracked-files=no") == ""


def test_base_moving_during_integration_is_integrated_again(tmp_path: Path) -> None:
    # Not cached: the check must run at integration (it is where the person pushes meanwhile).
    s = make_sample(tmp_path, phases={"check": {"run": [["python3", "check.py"]], "cache": False}})
    s.env["PUSH_FROM"] = str(s.repo)
    s.plan({"t-1": [{"files": {"t1.txt": "mine\n", "PUSH_DURING_integrate": "x"}}]})
    s.add("task")
    s.run_until(all_done(1))
    assert s.base_log() == ["t-1: attempt 0", "A person's commit", "initial"]
    runs = s.rows("SELECT phase, status, error_summary FROM pipeline_runs WHERE task_id='t-1' AND parent_id IS NULL")
    # The candidate on the old tip was dropped uncharged and built again on the person's commit.
    assert [r[:2] for r in runs] == [
        ("dev", "success"), ("verify", "success"), ("integrate", "cancelled"), ("integrate", "success")
    ]
    assert runs[2][2].startswith("rebuilt: live moved")
    assert s.task("t-1")["status"] == "done"


def test_dirty_base_checkout_refuses_then_lands_once_clean(tmp_path: Path) -> None:
    s = make_sample(tmp_path)
    s.add("task")
    (s.repo / "README.md").write_text("edited by a person, not committed\n")
    s.run_once_until_verified()
    done = s.cli("run", "--once")
    assert done.returncode == 0
    assert "uncommitted changes" in done.stderr and "README.md" in done.stderr
    assert s.base_log() == ["initial"]
    assert s.status()["verified"] == 1
    assert (s.repo / "README.md").read_text() == "edited by a person, not committed\n"
    # status says why the verified task is not landing, in both forms.
    held = s.status()["held_integrations"]
    assert [h["id"] for h in held] == ["t-1"] and "uncommitted changes" in held[0]["reason"]
    shown = s.cli("status").stdout
    assert "integration held back" in shown and "README.md" in shown
    git(s.repo, "checkout", "README.md")
    s.run_once_until(all_done(1))
    assert s.trailers() == ["t-1"]
    assert s.status()["held_integrations"] == []


def test_separate_once_processes_harvest_each_others_agents(tmp_path: Path) -> None:
    s = make_sample(tmp_path)
    s.plan({"t-1": [{"sleep": 1}], "t-2": [{"sleep": 1}], "t-3": [{"sleep": 1}]})
    for title in ("a", "b", "c"):
        s.add(title)
    first = s.cli("run", "--once")
    assert first.returncode == 0
    doc = s.status()
    # The first invocation started agents and left while they work.
    assert doc["active_dev_runs"] == 2 and doc["in_progress"] == 2
    runs = s.run_once_until(all_done(3))
    assert runs >= 2
    assert sorted(s.trailers()) == ["t-1", "t-2", "t-3"]
    assert s.leftover_worktrees() == [] and s.task_branches() == []


def test_second_invocation_while_locked_exits_quietly(tmp_path: Path) -> None:
    s = make_sample(tmp_path)
    s.add("x")
    s.root.mkdir(parents=True, exist_ok=True)
    with open(s.root / "runner.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        done = s.cli("run", "--once")
        quiet = s.cli("-q", "run", "--once")
    assert done.returncode == 0 and quiet.returncode == 0
    # Said on stderr, never on stdout (cron mails output); under -q not at all.
    assert "Another pipeline-runner" in done.stderr and done.stdout == ""
    assert quiet.stdout == "" and quiet.stderr == ""
    assert s.status()["open"] == 1


def test_sigkill_mid_cycle_then_restart_finishes_everything(tmp_path: Path) -> None:
    s = make_sample(tmp_path, concurrency=2)
    s.plan(
        {f"t-{i}": [{"sleep": 0.3}] for i in range(1, 6)}
        | {"t-3": [{"files": {"x.txt": "BAD\n"}, "sleep": 0.3}, {"files": {"x.txt": "ok\n"}}]}
    )
    for i in range(5):
        s.add(f"task {i}")
    for delay in (0.6, 1.1, 0.9, 1.7):
        proc = s.start()
        time.sleep(delay)
        stop(proc, signal.SIGKILL)
    s.run_until(all_done(5), timeout=120)
    assert sorted(s.trailers()) == [f"t-{i}" for i in range(1, 6)]
    assert s.rows("SELECT COUNT(*) FROM pipeline_runs WHERE status='running'") == [(0,)]
    assert s.leftover_worktrees() == [] and s.task_branches() == []
    assert git(s.repo, "status", "--porcelain", "--untracked-files=no") == ""
    # No supervisor or agent is left running.
    assert kill_leftovers(s.root) == []


def _snapshot(path: Path) -> dict[str, str]:
    out = {}
    for file in sorted(path.rglob("*")):
        if file.is_file() and not file.is_symlink():
            out[str(file.relative_to(path))] = hashlib.sha256(file.read_bytes()).hexdigest()
        elif file.is_dir():
            out[str(file.relative_to(path)) + "/"] = "dir"
    return out


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    s = make_sample(tmp_path)
    s.plan({"t-2": [{"sleep": 30}]})
    for title in ("a", "b", "c", "d"):
        s.add(title)
    s.run_once_until_verified()  # t-1 verified, t-2 (and t-3) still working
    before = _snapshot(tmp_path)
    done = s.cli("run", "--dry-run", "--concurrency", "4")
    assert done.returncode == 0, done.stderr
    assert "DRY RUN: would integrate t-1" in done.stdout
    assert "would start a command agent for t-4" in done.stdout
    assert _snapshot(tmp_path) == before
    assert kill_leftovers(s.root)  # the sleeping agent started above
    # And with no state at all, a dry run creates none.
    fresh = make_sample(tmp_path / "fresh")
    snap = _snapshot(fresh.repo)
    assert fresh.cli("run", "--dry-run").returncode == 0
    assert _snapshot(fresh.repo) == snap


def test_run_writes_json_log_file(tmp_path: Path) -> None:
    s = make_sample(tmp_path)
    s.add("x")
    s.run_once_until(all_done(1))
    lines = (s.root / "logs" / "pipeline.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    messages = [r["record"]["message"] for r in records]
    assert any("dev started" in m for m in messages)
    assert any("integrated into live" in m for m in messages)


def test_task_text_never_reaches_a_shell(tmp_path: Path) -> None:
    s = make_sample(
        tmp_path,
        agent={"command": ["fake-agent", "{prompt_file}"]},
        phases={
            "verify": {
                "run": [
                    ["python3", "check.py"],
                    [
                        "python3",
                        "-c",
                        "import sys; open('ns.out','w').write(sys.argv[1]); sys.exit(0)",
                        "{namespace}",
                    ],
                ]
            }
        },
    )
    evil = "$(touch pwned); `touch pwned2`; echo > pwned3"
    s.add(evil, "--namespace", evil, "--description", evil)
    s.run_until(all_done(1))
    for name in ("pwned", "pwned2", "pwned3"):
        assert not list(tmp_path.rglob(name))


def test_kill_between_base_swap_and_bookkeeping_is_recovered(tmp_path: Path) -> None:
    """A runner killed right after moving base: the next start sees the task landed."""
    s = make_sample(tmp_path)
    s.add("task")
    s.run_once_until_verified()
    # What the integration worker had done when killed: base moved by compare-and-swap, the
    # candidate recorded on a running row, the base checkout not yet updated.
    old = git(s.repo, "rev-parse", "live")
    scratch = tmp_path / "scratch"
    git(s.repo, "worktree", "add", "-q", "--detach", str(scratch), old)
    git(scratch, "cherry-pick", "refs/pipeline/tasks/t-1")
    new = git(scratch, "rev-parse", "HEAD")
    git(s.repo, "worktree", "remove", "--force", str(scratch))
    git(s.repo, "update-ref", "refs/heads/live", new, old)
    conn = sqlite3.connect(s.root / "state.db")
    with conn:
        conn.execute(
            "INSERT INTO pipeline_runs (task_id, phase, patchset, status, started_at, after_sha) "
            "VALUES ('t-1', 'integrate', 0, 'running', '2026-01-01T00:00:00+00:00', ?)",
            (new,),
        )
    conn.close()
    assert git(s.repo, "status", "--porcelain", "--untracked-files=no") != ""  # stale checkout

    assert s.cli("run", "--once").returncode == 0
    task = s.task("t-1")
    assert task["status"] == "done"
    assert any("recovered after a restart" in c["body"] for c in task["comments"])
    assert s.trailers() == ["t-1"]  # landed once, not twice
    assert git(s.repo, "status", "--porcelain", "--untracked-files=no") == ""
    assert s.task_branches() == [] and s.leftover_worktrees() == []


def test_the_daemon_acts_on_each_finish_rather_than_waiting_out_the_interval(tmp_path: Path) -> None:
    # With cycles an hour apart, two dependent tasks still go through dev, verify and integrate
    # one after the other: every agent exit, verification and integration wakes the loop.
    s = make_sample(tmp_path, interval=3600, concurrency=1)
    first = s.add("first")
    s.add("second", "--depends-on", first)
    s.run_until(all_done(2), timeout=60)
    assert len(s.trailers()) == 2


def test_a_commit_without_the_task_id_trailer_lands_with_it(tmp_path: Path) -> None:
    s = make_sample(tmp_path)
    s.plan({"t-1": [{"message": "Fix the frobnicator\n\nCo-authored-by: Someone <someone@example.com>\n"}]})
    s.add("fix it")
    s.run_until(all_done(1))
    assert s.base_log() == ["Fix the frobnicator", "initial"]
    assert s.trailers() == ["t-1"]
    # Added to the trailer block the agent wrote, not as a paragraph of its own.
    coauthors = git(s.repo, "log", "-1", "--format=%(trailers:key=Co-authored-by,valueonly)", "live")
    assert coauthors.strip() == "Someone <someone@example.com>"
    # The task's run rows and base agree on what landed.
    (after,) = s.rows("SELECT after_sha FROM pipeline_runs WHERE phase='integrate'")[0]
    assert after == git(s.repo, "rev-parse", "live")


def test_untracked_files_in_the_way_in_base_checkout_refuse_then_land_once_moved(tmp_path: Path) -> None:
    s = make_sample(tmp_path)
    s.plan({"t-1": [{"files": {"t-1.txt": "t-1 done\n", "docs/guide.md": "guide\n"}}]})
    s.add("task")
    # A person's untracked files where the task adds its own: one file, one file-for-a-directory.
    (s.repo / "t-1.txt").write_text("mine\n")
    (s.repo / "docs").write_text("also mine\n")
    s.run_once_until_verified()
    done = s.cli("run", "--once")
    assert done.returncode == 0
    assert "untracked files" in done.stderr and "t-1.txt" in done.stderr and "docs/guide.md" in done.stderr
    assert s.base_log() == ["initial"]
    assert (s.repo / "t-1.txt").read_text() == "mine\n" and (s.repo / "docs").read_text() == "also mine\n"
    assert git(s.repo, "status", "--porcelain", "--untracked-files=no") == ""
    # Refused before the integrate recipes ran, so a long build is not redone at every retry.
    assert list((s.root / "logs" / "tasks" / "t-1").glob("integrate-*.log")) == []
    (s.repo / "t-1.txt").unlink()
    (s.repo / "docs").unlink()
    s.run_once_until(all_done(1))
    assert s.trailers() == ["t-1"]
    assert (s.repo / "docs" / "guide.md").read_text() == "guide\n"
    assert git(s.repo, "status", "--porcelain") == ""


def test_a_finished_run_whose_supervisor_pid_went_to_another_supervisor_like_process_is_harvested(
    tmp_path: Path,
) -> None:
    # The runner was down while t-1's agent finished (its status file says so) and the supervisor's
    # pid went to another process whose command line names the supervisor too (another pipeline's
    # supervisor on the host, or a runner's fork server, lives for hours). The run is recorded at
    # the next start, by its status file, as before pidfds told the ends: it does not wait for the
    # stranger to exit.
    s = make_sample(tmp_path, concurrency=1)
    s.add("one")
    s.env[killpoints.ENV] = "agent-recorded"
    assert s.cli("run", "--once").returncode == -9
    del s.env[killpoints.ENV]
    ((row, pid, run_id),) = s.rows("SELECT id, pid, agent_run_id FROM pipeline_runs WHERE phase = 'dev'")
    status_file = Layout(s.root).status_file(run_id)
    wait_for(lambda: '"finished"' in (status_file.read_text() if status_file.exists() else ""), 30)
    wait_for(lambda: not procs.pid_alive(pid), 30)
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", SUPERVISOR_MODULE])
    try:
        conn = sqlite3.connect(s.root / "state.db")
        with conn:
            conn.execute("UPDATE pipeline_runs SET pid = ? WHERE id = ?", (stranger.pid, row))
        conn.close()
        started = time.monotonic()
        s.run_once_until(lambda d: s.task("t-1")["status"] != "in_progress", limit=5)
        assert time.monotonic() - started < 60
        assert stranger.poll() is None  # still running: never ours to stop
    finally:
        stranger.kill()
        stranger.wait()
        kill_leftovers(s.root)
    assert s.rows("SELECT status FROM pipeline_runs WHERE id = ?", (row,)) == [("success",)]
