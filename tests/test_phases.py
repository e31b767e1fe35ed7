"""End to end: the check graph as a person sees it.

Real repositories, real SQLite, the real CLI as separate processes and the fake agent CLI. Phase
recipes run ``stamp.py`` (written next to the repository), which logs each start and end with its
time, the tree it checked and where it ran, so the tests can tell what ran, when, side by side or
not, and what was reused instead of run.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

from runner.sqldialect import SQLITE
from runner.state import MIGRATIONS, SCHEMA_VERSION, migration_sql
from tests.conftest import git
from tests.loop_helpers import Sample, make_sample, stop, wait_for

# A phase recipe: `stamp.py NAME SECONDS [ARGS...]`. SECONDS is "first:later" or one number. It logs
# a start and an end event as JSON lines to $STAMP_LOG, and fails when the tree holds FAIL_<NAME>
# saying "yes", or, once, when it holds FLAKY_<NAME> (the second run of the same check passes).
STAMP_PY = """\
import json, os, pathlib, subprocess, sys, time
name, secs, args = sys.argv[1], sys.argv[2], sys.argv[3:]
log = pathlib.Path(os.environ["STAMP_LOG"])
here = pathlib.Path.cwd()
stage = "integrate" if "integration" in here.parts else "verify" if "checks" in here.parts else "check"
tree = subprocess.run(["git", "rev-parse", "HEAD^{tree}"], capture_output=True, text=True).stdout.strip()
first, _, later = secs.partition(":")
slowed = log.with_name(f"{log.name}.{name}.slowed")
delay = float(first) if not slowed.exists() else float(later or first)
slowed.touch()

def event(ev):
    entry = {"phase": name, "ev": ev, "t": time.time(), "args": args, "stage": stage, "tree": tree,
             "pid": os.getpid(), "mode": os.environ.get("MODE")}
    with open(log, "a") as out:
        out.write(json.dumps(entry) + "\\n")

event("start")
time.sleep(delay)
event("end")
fail = here / f"FAIL_{name}"
if fail.exists() and fail.read_text().strip() == "yes":
    print(f"stamp {name}: FAIL_{name} says yes, so this check fails")
    sys.exit(1)
flaked = log.with_name(f"{log.name}.{name}.flaked")
if (here / f"FLAKY_{name}").exists() and not flaked.exists():
    flaked.touch()
    print(f"stamp {name}: a flaky failure")
    sys.exit(1)
print(f"stamp {name}: ok")
"""


def sample(tmp_path: Path, **config: Any) -> Sample:
    """The sample repository with no phases yet (each test declares its graph), and stamp.py beside it."""
    s = make_sample(tmp_path, **config)
    s.config["phases"] = {}
    # These tests count and script every run of a phase at verify and integrate; base's own checks
    # before agents start (tests/test_doctor.py) would add runs of their own.
    s.config["check_base"] = False
    s.write_config()
    (tmp_path / "stamp.py").write_text(STAMP_PY)
    s.env["STAMP_LOG"] = str(tmp_path / "stamps.jsonl")
    return s


def stamp(s: Sample, name: str, seconds: float | str = 0, *args: str) -> list[str]:
    """A recipe running stamp.py as phase ``name``."""
    return ["python3", str(s.repo.parent / "stamp.py"), name, str(seconds), *args]


def events(s: Sample, phase: str | None = None, ev: str = "start", stage: str | None = None) -> list[dict[str, Any]]:
    path = Path(s.env["STAMP_LOG"])
    if not path.exists():
        return []
    found = [json.loads(line) for line in path.read_text().splitlines()]
    return [
        e for e in found
        if e["ev"] == ev and (phase is None or e["phase"] == phase) and (stage is None or e["stage"] == stage)
    ]  # fmt: skip


def ran(s: Sample, phase: str, stage: str | None = None) -> int:
    """How many times ``phase`` started (at ``stage``)."""
    return len(events(s, phase, "start", stage))


def span(s: Sample, phase: str, stage: str) -> tuple[float, float]:
    (start,) = events(s, phase, "start", stage)
    (end,) = events(s, phase, "end", stage)
    return float(start["t"]), float(end["t"])


def phase_rows(s: Sample, task_id: str) -> list[dict[str, Any]]:
    """The phase rows of a task with the stage (verify or integrate) of their attempt, oldest first."""
    conn = sqlite3.connect(s.root / "state.db")
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute(
            "SELECT c.id, p.id AS parent, p.phase AS stage, c.phase, c.status, c.cached_from, c.error_summary, "
            "c.tree, c.exit_code FROM pipeline_runs c JOIN pipeline_runs p ON c.parent_id = p.id "
            "WHERE c.task_id = ? ORDER BY c.id",
            (task_id,),
        ).fetchall()
        return [dict(r) for r in rows]
    finally:
        conn.close()


def row(rows: list[dict[str, Any]], stage: str, phase: str, nth: int = -1) -> dict[str, Any]:
    """The ``nth`` row of ``phase`` at ``stage`` (the last by default)."""
    found = [r for r in rows if r["stage"] == stage and r["phase"] == phase]
    assert found, f"no {stage} row for phase {phase}: {rows}"
    return found[nth]


def attempts(s: Sample, task_id: str) -> list[str]:
    return [
        f"{p}:{st}"
        for p, st in s.rows(
            "SELECT phase, status FROM pipeline_runs WHERE task_id = ? AND parent_id IS NULL ORDER BY id", (task_id,)
        )
    ]


def until_idle(s: Sample, *args: str) -> str:
    done = s.cli("run", "--until-idle", *args, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def once_until(s: Sample, status: str, count: int, limit: int = 60) -> None:
    """Run separate `run --once` processes until ``count`` tasks have ``status``."""
    for _ in range(limit):
        done = s.cli("run", "--once")
        assert done.returncode == 0, done.stdout + done.stderr
        if s.rows("SELECT COUNT(*) FROM tasks WHERE status = ?", (status,)) == [(count,)]:
            return
    raise AssertionError(f"not {count} {status} after {limit} runs: {s.rows('SELECT id, status FROM tasks')}")


def system_comments(s: Sample, task_id: str) -> str:
    return "\n".join(
        body for (body,) in s.rows("SELECT body FROM task_comments WHERE task_id = ? AND author = 'system'", (task_id,))
    )


def receipt(s: Sample, rev: str | None = None) -> dict[str, Any]:
    done = s.cli("receipt", *([rev] if rev else []), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def stage_of(data: dict[str, Any], stage: str) -> dict[str, dict[str, Any]]:
    """The receipt's phases at ``stage``, by name."""
    (found,) = [c for c in data["checks"] if c["stage"] == stage]
    return {p["phase"]: p for p in found["phases"]}


def landed_commits(s: Sample, since: str) -> list[str]:
    return git(s.repo, "rev-list", "--reverse", f"{since}..live").splitlines()


# -- 1. order, parallelism, reuse at integration -------------------------------------------------


def test_independent_phases_run_side_by_side_a_phase_waits_for_its_needs_and_integration_reuses_them(
    tmp_path: Path,
) -> None:
    s = sample(tmp_path, concurrency=1, check_concurrency=2)
    s.write_config(phases={
        "a": {"run": [stamp(s, "a", 0.8, "{task_id}")]},
        "b": {"run": [stamp(s, "b", 0.8, "{task_id}")]},
        "c": {"run": [stamp(s, "c", 0, "{task_id}")], "needs": ["a", "b"]},
        "d": {"run": [stamp(s, "d", 0, "{task_id}")], "on": ["integrate"]},
    })  # fmt: skip
    s.add("one")
    until_idle(s)
    assert s.trailers() == ["t-1"]

    start_a, end_a = span(s, "a", "verify")
    start_b, end_b = span(s, "b", "verify")
    start_c, _ = span(s, "c", "verify")
    assert start_a < end_b and start_b < end_a, "a and b did not run side by side"
    assert start_c >= max(end_a, end_b), "c started before both its needs ended"
    # Base did not move: the candidate is the verified tree, so a, b and c ran once, d only there.
    assert [ran(s, p) for p in "abcd"] == [1, 1, 1, 1]
    assert ran(s, "d", "integrate") == 1
    rows = phase_rows(s, "t-1")
    for p in "abc":
        assert row(rows, "integrate", p)["cached_from"] == row(rows, "verify", p)["id"]
        assert row(rows, "integrate", p)["status"] == "success"
    assert row(rows, "integrate", "d")["cached_from"] is None
    verify_tree = row(rows, "verify", "a")["tree"]
    assert verify_tree == git(s.repo, "rev-parse", "live^{tree}") == events(s, "a")[0]["tree"]

    # With one slot, the same graph runs one phase at a time.
    s.write_config(check_concurrency=1)
    done = s.cli("check", "--rev", "live", "--no-cache")
    assert done.returncode == 0, done.stdout + done.stderr
    start_a, end_a = span(s, "a", "check")
    start_b, end_b = span(s, "b", "check")
    assert end_a <= start_b or end_b <= start_a, "a and b overlapped with check_concurrency: 1"


# -- 2. a failure stops what depends on it -------------------------------------------------------


def test_a_failing_phase_stops_its_dependants_and_rejects_the_attempt_with_its_output(tmp_path: Path) -> None:
    s = sample(tmp_path, concurrency=1, check_concurrency=2)
    s.write_config(phases={
        "a": {"run": [stamp(s, "a", 0)]},
        "slow": {"run": [stamp(s, "slow", 1)]},
        "c": {"run": [stamp(s, "c", 0)], "needs": ["a"]},
        "late": {"run": [stamp(s, "late", 0)], "needs": ["slow"]},
    })  # fmt: skip
    s.plan({"t-1": [{"files": {"FAIL_a": "yes\n"}}, {"files": {"FAIL_a": "no\n"}}]})
    s.add("breaks a, then fixes it")
    until_idle(s)
    assert s.trailers() == ["t-1"]
    assert attempts(s, "t-1")[:3] == ["dev:success", "verify:failure", "dev:success"]

    rows = phase_rows(s, "t-1")
    first = [r for r in rows if r["parent"] == rows[0]["parent"]]
    by_name = {r["phase"]: r for r in first}
    assert by_name["a"]["status"] == "failure" and by_name["a"]["exit_code"] == 1
    assert by_name["c"]["status"] == "cancelled" and by_name["c"]["error_summary"] == "not run: needs a (failed)"
    # Already running when a failed: it finished, passed, and its pass was kept.
    assert by_name["slow"]["status"] == "success"
    assert len(events(s, "slow", "end")) >= 1
    assert (by_name["slow"]["id"],) in s.rows("SELECT run_id FROM check_results WHERE phase = 'slow'")
    # Waiting for slow when a failed: never started.
    assert by_name["late"]["status"] == "cancelled"
    assert "rejected by a" in by_name["late"]["error_summary"]
    first_tree = by_name["a"]["tree"]
    assert [e for e in events(s, "c") if e["tree"] == first_tree] == []
    assert [e for e in events(s, "late") if e["tree"] == first_tree] == []

    # The next attempt is told which phase failed, with its output.
    prompt = (s.state / "t-1.1.prompt").read_text()
    assert "phase a failed" in prompt and "FAIL_a says yes, so this check fails" in prompt
    assert "not run: c" in prompt
    comments = system_comments(s, "t-1")
    assert "verification failed" in comments and "phase a failed" in comments
    assert "FAIL_a says yes" in comments


# -- 3. optional phases, skip codes, recipes that do not apply -----------------------------------


def test_an_optional_failure_a_skip_code_and_a_phase_that_applies_to_nothing_do_not_reject(
    tmp_path: Path,
) -> None:
    lint = ["python3", "-c", "import sys; print('lint: 3 style problems'); sys.exit(1)"]
    skip = ["python3", "-c", "raise SystemExit(3)"]
    s = sample(tmp_path, concurrency=2)
    s.write_config(phases={
        "main": {"run": [stamp(s, "main", 0)]},
        "lint": {"run": [lint], "optional": True},
        "partial": {"run": [stamp(s, "partial", 0), skip, stamp(s, "after-skip", 0)], "skip_exit_codes": [3]},
        "ns": {"run": [stamp(s, "ns", 0, "{namespace}")]},
    })  # fmt: skip
    s.add("no namespace")
    s.add("with one", "--namespace", "src")
    until_idle(s)
    assert sorted(s.trailers()) == ["t-1", "t-2"]

    rows = phase_rows(s, "t-1")
    assert row(rows, "verify", "main")["status"] == "success"
    assert row(rows, "verify", "lint")["status"] == "failure"
    assert row(rows, "verify", "partial")["status"] == "skipped"
    assert row(rows, "verify", "ns")["status"] == "skipped"
    # Not a full check: recorded as a skip, never as a success, and the comment says why.
    assert attempts(s, "t-1") == ["dev:success", "verify:skipped", "integrate:success"]
    comments = system_comments(s, "t-1")
    assert "optional phase lint failed" in comments
    assert "exited 3 (a skip code)" in comments and "(no namespace)" in comments
    assert ran(s, "after-skip") == 0
    # The phase about the namespace ran only for the task that has one, with it.
    assert [e["args"] for e in events(s, "ns")] == [["src"]] * ran(s, "ns") and ran(s, "ns") >= 1
    rows_2 = phase_rows(s, "t-2")
    assert row(rows_2, "verify", "ns")["status"] == "success"
    # The receipt reports the optional failure as such.
    data = receipt(s, git(s.repo, "log", "--format=%H", "--grep", "Task-Id: t-1", "live"))
    lint_entry = stage_of(data, "integrate")["lint"]
    assert lint_entry["state"] == "failed" and lint_entry["optional"] is True


# -- 4. reuse, and when there must be none -------------------------------------------------------


def test_a_pass_is_reused_across_tasks_unless_the_recipe_names_the_task(tmp_path: Path) -> None:
    s = sample(tmp_path, concurrency=1)
    s.write_config(phases={
        "unit": {"run": [stamp(s, "unit", 0)]},
        "tagged": {"run": [stamp(s, "tagged", 0, "{task_id}")]},
    })  # fmt: skip
    # Two tasks making the same change on the same base: the same tree.
    same = {"files": {"shared.txt": "the same fix\n"}}
    s.plan({"t-1": [same], "t-2": [same, {"files": {"t2.txt": "its own\n"}}]})
    s.add("fix it", "--priority", "P1")
    s.add("fix it too", "--priority", "P2")
    # Step by step (`run --once` waits for the verifications it started): t-2's agent starts only
    # after t-1's, so t-2 is verified after t-1's verification kept its passes.
    once_until(s, "done", 2)

    rows_1, rows_2 = phase_rows(s, "t-1"), phase_rows(s, "t-2")
    unit_1, unit_2 = row(rows_1, "verify", "unit"), row(rows_2, "verify", "unit", 0)
    assert unit_1["tree"] == unit_2["tree"]
    assert unit_2["cached_from"] == unit_1["id"]
    # {task_id} makes a different recipe, so a different check: it ran for each task.
    assert row(rows_2, "verify", "tagged", 0)["cached_from"] is None
    tagged_trees = [(e["tree"], e["args"]) for e in events(s, "tagged", stage="verify")]
    assert (unit_1["tree"], ["t-1"]) in tagged_trees and (unit_1["tree"], ["t-2"]) in tagged_trees
    assert [e["tree"] for e in events(s, "unit")].count(unit_1["tree"]) == 1
    # Empty on the base t-1 moved, t-2 was developed again and landed its own change.
    assert sorted(s.trailers()) == ["t-1", "t-2"]
    assert (s.repo / "t2.txt").exists()


def test_an_integrate_only_phase_failing_once_reuses_the_verified_phases_on_the_retry(tmp_path: Path) -> None:
    s = sample(tmp_path, concurrency=1)
    s.write_config(phases={
        "unit": {"run": [stamp(s, "unit", 0)]},
        "gate": {"run": [stamp(s, "gate", 0)], "on": ["integrate"]},
    })  # fmt: skip
    # The gate fails its first run only; the agent, redeveloping, makes exactly the same tree.
    s.plan({"t-1": [{"files": {"t1.txt": "done\n", "FLAKY_gate": "x\n"}}]})
    s.add("one")
    until_idle(s)
    assert s.trailers() == ["t-1"]
    assert attempts(s, "t-1") == [
        "dev:success", "verify:success", "integrate:failure", "dev:success", "verify:success", "integrate:success",
    ]  # fmt: skip
    prompt = (s.state / "t-1.1.prompt").read_text()
    assert "phase gate failed" in prompt and "stamp gate: a flaky failure" in prompt
    rows = phase_rows(s, "t-1")
    assert ran(s, "unit") == 1, "unit ran again on a tree that had passed it"
    assert ran(s, "gate", "integrate") == 2
    first_unit = row(rows, "verify", "unit", 0)
    assert row(rows, "verify", "unit", 1)["cached_from"] == first_unit["id"]
    assert [r["cached_from"] for r in rows if r["stage"] == "integrate" and r["phase"] == "unit"] == [
        first_unit["id"], first_unit["id"],
    ]  # fmt: skip
    assert [r["status"] for r in rows if r["phase"] == "gate"] == ["failure", "success"]
    assert all(r["cached_from"] is None for r in rows if r["phase"] == "gate")


def test_a_flaky_phase_is_never_cached_as_a_pass_and_an_identical_retry_reuses_the_rest(tmp_path: Path) -> None:
    s = sample(tmp_path, concurrency=1, check_concurrency=2)
    s.write_config(phases={
        "unit": {"run": [stamp(s, "unit", 0.3)]},
        "flaky": {"run": [stamp(s, "flaky", 0)]},
    })  # fmt: skip
    # The agent's commit makes the flaky phase fail its first run and pass its second, on one tree.
    s.plan({"t-1": [{"files": {"t1.txt": "done\n", "FLAKY_flaky": "x\n"}}]})
    s.add("one")
    until_idle(s)
    assert s.trailers() == ["t-1"]
    assert attempts(s, "t-1") == ["dev:success", "verify:failure", "dev:success", "verify:success", "integrate:success"]
    rows = phase_rows(s, "t-1")
    failed, passed = row(rows, "verify", "flaky", 0), row(rows, "verify", "flaky", 1)
    assert failed["tree"] == passed["tree"]
    assert failed["status"] == "failure" and passed["status"] == "success"
    assert passed["cached_from"] is None, "the retry reused a phase whose only run on this tree had failed"
    assert ran(s, "flaky") == 2
    # The pass kept for the tree is the run that passed, and integration reused it.
    (kept,) = s.rows("SELECT run_id FROM check_results WHERE phase = 'flaky'")
    assert kept == (passed["id"],)
    assert row(rows, "integrate", "flaky")["cached_from"] == passed["id"]
    # unit passed on the first attempt (beside the failure) and was reused by the identical retry.
    assert ran(s, "unit") == 1
    assert row(rows, "verify", "unit", 1)["cached_from"] == row(rows, "verify", "unit", 0)["id"]


def test_editing_a_phase_env_or_recipe_means_it_runs_again(tmp_path: Path) -> None:
    s = sample(tmp_path, concurrency=1)
    s.write_config(phases={"unit": {"run": [stamp(s, "unit", 0)], "env": {"MODE": "one"}}})
    s.add("one")
    s.run_once_until_verified()
    assert [e["mode"] for e in events(s, "unit")] == ["one"]

    # The env changed between verification and integration: the same tree is checked again.
    s.write_config(phases={"unit": {"run": [stamp(s, "unit", 0)], "env": {"MODE": "two"}}})
    once_until(s, "done", 1)
    assert [(e["stage"], e["mode"]) for e in events(s, "unit")] == [("verify", "one"), ("integrate", "two")]
    assert row(phase_rows(s, "t-1"), "integrate", "unit")["cached_from"] is None

    # Unchanged, `check` on what landed reuses integration's pass...
    done = s.cli("check", "--rev", "live")
    assert done.returncode == 0, done.stdout + done.stderr
    integrated = row(phase_rows(s, "t-1"), "integrate", "unit")["id"]
    assert f"[unit] unit: passed (cached from run {integrated}," in done.stdout, done.stdout
    assert ran(s, "unit") == 2
    # ...but not after the recipe changed.
    s.write_config(phases={"unit": {"run": [stamp(s, "unit", 0, "--verbose")], "env": {"MODE": "two"}}})
    done = s.cli("check", "--rev", "live")
    assert done.returncode == 0 and "cached" not in done.stdout, done.stdout + done.stderr
    assert ran(s, "unit", "check") == 1 and events(s, "unit", stage="check")[0]["args"] == ["--verbose"]


def test_a_landing_moves_base_so_the_next_candidate_is_checked_again_and_each_landed_commit_has_a_receipt(
    tmp_path: Path,
) -> None:
    s = sample(tmp_path, concurrency=2, check_concurrency=1)
    s.write_config(phases={"unit": {"run": [stamp(s, "unit", 0.6)]}})
    start = git(s.repo, "rev-parse", "live")
    s.add("one")
    s.add("two")
    until_idle(s)
    commits = landed_commits(s, start)
    assert len(commits) == 2
    first, second = (git(s.repo, "log", "-1", "--format=%(trailers:key=Task-Id,valueonly)", c).strip() for c in commits)
    assert sorted([first, second]) == ["t-1", "t-2"]

    # Both were verified on the old base; the first candidate was its verified tree, the second's was not.
    rows_first, rows_second = phase_rows(s, first), phase_rows(s, second)
    assert row(rows_first, "integrate", "unit")["cached_from"] == row(rows_first, "verify", "unit")["id"]
    second_int = row(rows_second, "integrate", "unit")
    assert second_int["cached_from"] is None
    assert second_int["tree"] != row(rows_second, "verify", "unit")["tree"]
    assert second_int["tree"] == git(s.repo, "rev-parse", f"{commits[1]}^{{tree}}")
    assert [e["tree"] for e in events(s, "unit", stage="integrate")] == [second_int["tree"]]
    # One slot, shared by both tasks' checks: no two recipes ever ran at once.
    ends = {e["pid"]: e["t"] for e in events(s, "unit", "end")}
    spans = sorted((e["t"], ends[e["pid"]]) for e in events(s, "unit"))
    assert len(spans) == 3 and all(end <= later for (_, end), (later, _) in itertools.pairwise(spans)), spans

    # A receipt on every landed commit, in git and through `receipt --json`.
    for sha, task_id in zip(commits, (first, second), strict=True):
        note = git(s.repo, "notes", "--ref=pipeline", "show", sha)
        assert note.startswith(f"pipeline-runner receipt: task {task_id} (patchset 0)")
        assert "unit: passed" in note or "unit: cached" in note
    data_first = receipt(s, commits[0])
    assert data_first["commit"] == commits[0] and data_first["task"] == first and data_first["patchset"] == 0
    assert stage_of(data_first, "integrate")["unit"]["reused"] is True
    assert stage_of(data_first, "verify")["unit"]["reused"] is False
    # Both stages say what happened in the same words.
    assert stage_of(data_first, "verify")["unit"]["state"] == "passed"
    assert stage_of(data_first, "integrate")["unit"]["state"] == "cached"
    data_second = receipt(s)  # base's tip by default
    assert data_second["commit"] == commits[1] and data_second["task"] == second
    assert stage_of(data_second, "integrate")["unit"]["reused"] is False
    assert stage_of(data_second, "integrate")["unit"]["state"] == "passed"


# A phase recipe that, on its first run only, commits to base in the main checkout, as a person
# pushing while the candidate is checked would.
PUSH_PY = """\
import pathlib, subprocess, sys
repo, marker = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
if not marker.exists():
    marker.touch()
    (repo / "person.md").write_text("a person's change\\n")
    subprocess.run(["git", "add", "person.md"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "A person's commit"], cwd=repo, check=True)
"""


def test_base_moving_while_a_phase_checks_the_candidate_lands_a_new_candidate_and_only_it_has_a_receipt(
    tmp_path: Path,
) -> None:
    s = sample(tmp_path, concurrency=1)
    (tmp_path / "push.py").write_text(PUSH_PY)
    push = ["python3", str(tmp_path / "push.py"), str(s.repo), str(tmp_path / "pushed")]
    s.write_config(phases={
        "unit": {"run": [stamp(s, "unit", 0)]},
        "gate": {"run": [push, stamp(s, "gate", 0)], "on": ["integrate"]},
    })  # fmt: skip
    s.add("one")
    until_idle(s)
    assert s.base_log() == ["t-1: attempt 0", "A person's commit", "initial"]
    tip = git(s.repo, "rev-parse", "live")
    # The candidate checked before base moved never landed: its note went with it.
    annotated = [line.split()[1] for line in git(s.repo, "notes", "--ref=pipeline", "list").splitlines()]
    assert annotated == [tip]
    # The first candidate's check ends as soon as the loop sees base moved (its stamp may not run).
    assert ran(s, "gate") in (1, 2)
    data = receipt(s)
    integrate = stage_of(data, "integrate")
    assert data["commit"] == tip and data["tree"] == git(s.repo, "rev-parse", "live^{tree}")
    # The new candidate's tree was never checked: nothing about it is reused.
    assert not integrate["unit"]["reused"] and not integrate["gate"]["reused"]
    assert [e["tree"] for e in events(s, "unit", stage="integrate")][-1] == data["tree"]
    done = s.cli("receipt", "live~1")
    assert done.returncode != 0 and "has no receipt" in done.stderr, done.stdout + done.stderr


def test_uncached_phases_workspace_recipes_and_run_no_cache_run_every_time(tmp_path: Path) -> None:
    s = sample(tmp_path, concurrency=1)
    s.write_config(phases={
        "unit": {"run": [stamp(s, "unit", 0)]},
        "net": {"run": [stamp(s, "net", 0)], "cache": False},
        "ws": {"run": [stamp(s, "ws", 0, "{workspace}")]},
    })  # fmt: skip
    s.add("one")
    until_idle(s)
    assert s.trailers() == ["t-1"]
    # Base did not move, yet only unit was reused at integration.
    assert (ran(s, "unit"), ran(s, "net"), ran(s, "ws")) == (1, 2, 2)
    rows = phase_rows(s, "t-1")
    assert row(rows, "integrate", "unit")["cached_from"] is not None
    assert row(rows, "integrate", "net")["cached_from"] is None
    assert row(rows, "integrate", "ws")["cached_from"] is None
    verify_ws, integrate_ws = (e["args"][0] for e in events(s, "ws"))
    assert verify_ws != integrate_ws
    assert s.rows("SELECT COUNT(*) FROM check_results WHERE phase = 'net'") == [(0,)]
    # `check` runs in a workspace of its own too.
    done = s.cli("check", "--rev", "live", "--phase", "ws")
    assert done.returncode == 0 and ran(s, "ws", "check") == 1, done.stdout + done.stderr

    # `run --no-cache`: every phase runs at verify and again at integration, and nothing is kept.
    kept = s.rows("SELECT COUNT(*) FROM check_results")
    s.add("two")
    until_idle(s, "--no-cache")
    assert s.trailers() == ["t-2", "t-1"]
    rows = phase_rows(s, "t-2")
    assert all(r["cached_from"] is None for r in rows)
    tree = row(rows, "verify", "unit")["tree"]
    assert [e["stage"] for e in events(s, "unit") if e["tree"] == tree] == ["verify", "integrate"]
    assert s.rows("SELECT COUNT(*) FROM check_results") == kept


def test_a_phase_that_must_run_again_finds_what_its_needs_built_in_its_checkout(tmp_path: Path) -> None:
    build = ["python3", "-c", "import pathlib; pathlib.Path('build').mkdir(); pathlib.Path('build/out.txt').write_text('ok')"]
    use = "import pathlib, sys; sys.exit(0 if pathlib.Path('build/out.txt').exists() else 'build/out.txt is missing')"
    s = sample(tmp_path, concurrency=1, limits={"max_retries": 2})
    s.write_config(phases={
        "build": {"run": [build, stamp(s, "build", 0)]},
        # Not a function of the tree alone (it talks to a service, say), so never reused.
        "e2e": {"run": [["python3", "-c", use]], "needs": ["build"], "cache": False},
    })  # fmt: skip
    s.add("one")
    until_idle(s)
    assert s.trailers() == ["t-1"]
    assert attempts(s, "t-1") == ["dev:success", "verify:success", "integrate:success"]
    # At integration the build had passed on this very tree, but e2e needs its output there.
    assert ran(s, "build") == 2
    assert row(phase_rows(s, "t-1"), "integrate", "build")["cached_from"] is None

    # `check --phase e2e` likewise builds before it.
    done = s.cli("check", "--rev", "live", "--phase", "e2e")
    assert done.returncode == 0, done.stdout + done.stderr
    assert ran(s, "build", "check") == 1


# -- 6. `check` and the pipeline agree -----------------------------------------------------------


def test_check_agrees_with_the_pipeline_and_shares_its_cache(tmp_path: Path) -> None:
    s = sample(tmp_path, concurrency=1)
    s.write_config(phases={
        "a": {"run": [stamp(s, "a", 0)]},
        "b": {"run": [stamp(s, "b", 0)]},
        "c": {"run": [stamp(s, "c", 0)], "needs": ["a"]},
        "d": {"run": [stamp(s, "d", 0)], "on": ["integrate"]},
    })  # fmt: skip
    done = s.cli("check", "--rev", "live")
    assert done.returncode == 0, done.stdout + done.stderr
    assert [ran(s, p, "check") for p in "abcd"] == [1, 1, 1, 1]

    # A rev that breaks a: exit 1, naming it, and c (which needs it) is not run.
    git(s.repo, "checkout", "-q", "-b", "broken")
    (s.repo / "FAIL_a").write_text("yes\n")
    git(s.repo, "add", "FAIL_a")
    git(s.repo, "commit", "-q", "-m", "breaks a")
    git(s.repo, "checkout", "-q", "live")
    done = s.cli("check", "--rev", "broken")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "phase a failed" in done.stdout and "FAIL_a says yes" in done.stdout
    assert "[c] c: not run: needs a (failed)" in done.stdout
    assert ran(s, "c", "check") == 1

    # A person checks, by hand, the very tree the agent will commit: the pipeline reuses it all.
    git(s.repo, "checkout", "-q", "-b", "by-hand")
    (s.repo / "t-1.txt").write_text("t-1 done\n")  # what the fake agent writes for t-1
    git(s.repo, "add", "t-1.txt")
    git(s.repo, "commit", "-q", "-m", "by hand")
    git(s.repo, "checkout", "-q", "live")
    assert s.cli("check", "--rev", "by-hand").returncode == 0
    before = len(events(s))
    s.add("one")
    until_idle(s)
    assert s.trailers() == ["t-1"]
    assert len(events(s)) == before, "the pipeline ran a phase `check` had passed on the same tree"
    rows = phase_rows(s, "t-1")
    assert {r["status"] for r in rows} == {"success"}
    # Reused, not run: the rows and the receipt say so, at verify as at integration.
    assert all(r["cached_from"] is not None for r in rows), rows
    data = receipt(s)
    for stage in ("verify", "integrate"):
        assert {(p["state"], p["reused"]) for p in stage_of(data, stage).values()} == {("cached", True)}, data
    assert {p["reused_from_run"] for p in stage_of(data, "verify").values()} == {None}
    (verify_log_path,) = s.rows("SELECT log_path FROM pipeline_runs WHERE task_id = 't-1' AND phase = 'verify'")[0]
    verify_log = Path(verify_log_path).read_text()
    assert "[a] a: passed (cached from `pipeline-runner check`" in verify_log

    # (The other way, `check` reusing the pipeline's passes: test_editing_a_phase_env_or_recipe_...)
    # --phase runs that phase and what it needs, nothing else.
    done = s.cli("check", "--rev", "live", "--phase", "c", "--no-cache")
    assert done.returncode == 0, done.stdout + done.stderr
    assert [e["phase"] for e in events(s)[before:]] == ["a", "c"]
    # --on runs the phases of one stage only: d runs only on the candidate.
    done = s.cli("check", "--rev", "live", "--on", "integrate", "--no-cache")
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(e["phase"] for e in events(s)[before + 2 :]) == ["a", "b", "c", "d"]
    done = s.cli("check", "--rev", "live", "--on", "verify", "--no-cache")
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(e["phase"] for e in events(s)[before + 6 :]) == ["a", "b", "c"]


# -- 7. older configs and databases --------------------------------------------------------------


def test_the_older_config_form_still_lands_tasks(tmp_path: Path) -> None:
    s = sample(tmp_path, concurrency=1)
    s.write_config(phases={"verify": {"run": [stamp(s, "v", 0)]}, "integrate": {"run": [stamp(s, "i", 0)]}})
    listed = s.cli("phases", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["stages"] == {"verify": ["verify"], "integrate": ["integrate"]}
    s.add("one")
    s.add("two")
    until_idle(s)
    assert sorted(s.trailers()) == ["t-1", "t-2"]
    assert {e["stage"] for e in events(s, "v")} == {"verify"} and ran(s, "v") == 2
    assert {e["stage"] for e in events(s, "i")} == {"integrate"} and ran(s, "i") == 2
    assert stage_of(receipt(s), "integrate")["integrate"]["state"] == "passed"


def _old_database(path: Path, old_sha: str, work_sha: str) -> None:
    """A state.db at schema version 2 with the rows an older runner left: a landed task, one that
    needs help after a failed verification (with a skipped one before it), and one whose
    verification of ``work_sha`` was under way when that runner was killed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    try:
        conn.executescript(migration_sql(MIGRATIONS[0], SQLITE))  # shipped entries are never edited
        conn.execute(
            "INSERT INTO pipeline_runs (task_id, phase, patchset, status, started_at) "
            "VALUES ('t-0', 'dev', 0, 'success', '2024-01-01T00:00:00+00:00')"
        )  # a row before migration 2, to carry its id and the AUTOINCREMENT counter across
        conn.executescript(migration_sql(MIGRATIONS[1], SQLITE))
        t = "2024-05-01T10:00:00.000000+00:00"
        conn.executemany(
            "INSERT INTO tasks (id, title, status, patchset, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            [("t-0", "landed long ago", "done", 0, t, t), ("t-1", "old and stuck", "needs_help", 1, t, t),
             ("t-2", "old and in flight", "in_progress", 0, t, t)],
        )  # fmt: skip
        conn.execute("INSERT INTO id_counter (name, value) VALUES ('task', 2)")
        conn.executemany(
            "INSERT INTO pipeline_runs (task_id, phase, patchset, status, started_at, finished_at, error_summary, "
            "after_sha, cost_cents) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                ("t-0", "verify", 0, "success", t, t, None, old_sha, 0),
                ("t-0", "integrate", 0, "success", t, t, None, old_sha, 0),
                ("t-1", "dev", 0, "success", t, t, None, old_sha, 12.5),
                ("t-1", "verify", 0, "skipped", t, t, "every recipe was skipped", old_sha, 0),
                ("t-1", "verify", 1, "failure", t, t, "`make test` failed (exit 2):\nold failure output", old_sha, 0),
                ("t-2", "dev", 0, "success", t, t, None, work_sha, 3),
                ("t-2", "verify", 0, "running", t, None, None, work_sha, 0),
            ],
        )  # fmt: skip
        conn.execute(
            "INSERT INTO task_comments (task_id, author, body, created_at) VALUES "
            "('t-1', 'system', 'Pipeline: needs help: 2 failed attempts reached limits.max_retries=2', ?)",
            (t,),
        )
        conn.execute("PRAGMA user_version = 2")
        conn.commit()
    finally:
        conn.close()


def test_a_schema_version_2_database_is_migrated_and_its_rows_stay_readable(tmp_path: Path) -> None:
    s = sample(tmp_path, concurrency=1)
    s.write_config(phases={"unit": {"run": [stamp(s, "unit", 0)]}})
    old_sha = git(s.repo, "rev-parse", "live")
    git(s.repo, "checkout", "-q", "-b", "old-work")
    (s.repo / "t2.txt").write_text("done by an older runner's agent\n")
    git(s.repo, "add", "t2.txt")
    git(s.repo, "commit", "-q", "-m", "t-2: its work\n\nTask-Id: t-2")
    git(s.repo, "checkout", "-q", "live")
    _old_database(s.root / "state.db", old_sha, git(s.repo, "rev-parse", "old-work"))

    doc = s.status()
    assert (doc["done"], doc["needs_help"], doc["in_progress"]) == (1, 1, 1)
    assert [(r["task_id"], r["phase"]) for r in doc["active_runs"]] == [("t-2", "verify")]
    assert doc["cost_cents"] == 15.5
    assert doc["needs_help_tasks"][0]["id"] == "t-1"
    assert "max_retries=2" in doc["needs_help_tasks"][0]["reason"]
    assert s.rows("PRAGMA user_version") == [(SCHEMA_VERSION,)]

    old = s.task("t-1")
    assert [(r["phase"], r["status"], r["patchset"]) for r in old["runs"]] == [
        ("dev", "success", 0), ("verify", "skipped", 0), ("verify", "failure", 1),
    ]  # fmt: skip
    assert old["runs"][2]["error_summary"].endswith("old failure output")
    shown = s.cli("task", "show", "t-0")
    assert shown.returncode == 0 and "integrate" in shown.stdout, shown.stdout + shown.stderr

    assert s.add("new") == "t-3"
    ((last_old,),) = s.rows("SELECT MAX(id) FROM pipeline_runs")
    done = s.cli("run", "--until-idle")
    assert done.returncode in (0, 3), done.stdout + done.stderr  # 3: t-1 still needs help
    assert sorted(s.trailers()) == ["t-2", "t-3"]
    # New ids never reuse an old one; old rows keep their ids and contents.
    assert s.task("t-1") == old
    assert s.rows("SELECT MIN(id) FROM pipeline_runs WHERE task_id = 't-3'")[0][0] > last_old
    assert receipt(s)["task"] == s.trailers()[0]
    # The verification the older runner left running was cancelled and done again.
    assert attempts(s, "t-2") == ["dev:success", "verify:cancelled", "verify:success", "integrate:success"]
    assert s.rows("SELECT COUNT(*) FROM pipeline_runs WHERE status = 'running'") == [(0,)]
    assert (s.repo / "t2.txt").exists()
    # A commit landed before receipts existed has none, and `receipt` says why.
    done = s.cli("receipt", old_sha)
    assert done.returncode != 0 and "has no receipt" in done.stderr, done.stdout + done.stderr
    assert s.cli("status").returncode == 0


# -- 8. adversarial ------------------------------------------------------------------------------


def test_a_runner_killed_while_a_phase_runs_leaves_no_running_row_and_the_task_lands(tmp_path: Path) -> None:
    s = sample(tmp_path, concurrency=1)
    # The gate's first run takes long enough to be killed in; later runs are quick.
    s.write_config(phases={
        "unit": {"run": [stamp(s, "unit", 0)]},
        "gate": {"run": [stamp(s, "gate", "30:0")], "on": ["integrate"]},
    })  # fmt: skip
    s.add("one")
    proc = s.start()
    try:
        wait_for(lambda: events(s, "gate"), 60, proc)
        running = s.rows("SELECT phase FROM pipeline_runs WHERE status = 'running' ORDER BY id")
        assert running == [("integrate",), ("gate",)]
    finally:
        # The runner's process alone, as the kernel's OOM killer or `kill -9 PID` would.
        proc.kill()
        stop(proc)
    killed_pid = events(s, "gate")[0]["pid"]
    assert s.base_log() == ["initial"]

    until_idle(s)
    assert s.trailers() == ["t-1"]
    assert s.rows("SELECT COUNT(*) FROM pipeline_runs WHERE status = 'running'") == [(0,)]
    rows = phase_rows(s, "t-1")
    killed = row(rows, "integrate", "gate", 0)
    assert killed["status"] == "cancelled" and "stopped while the phase ran" in killed["error_summary"]
    assert row(rows, "integrate", "gate")["status"] == "success"
    assert attempts(s, "t-1") == ["dev:success", "verify:success", "integrate:cancelled", "integrate:success"]
    assert s.rows("SELECT run_id FROM check_results WHERE phase = 'gate'") == [(row(rows, "integrate", "gate")["id"],)]
    assert receipt(s)["task"] == "t-1"
    # The killed run's recipe did not outlive the runner.
    gone = Path(f"/proc/{killed_pid}")
    try:
        wait_for(lambda: not gone.exists(), 10)
    finally:
        if gone.exists():
            os.kill(killed_pid, signal.SIGKILL)
