"""`status` and `task show` show each verification's and integration's phases.

Real repositories, the real loop as a separate process, the fake agent CLI; the last tests build
rows in-process for the cases a run does not make on demand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runner.phaseview import PhaseShown, phase_views
from runner.state import Phase, Runs, RunStatus, open_db
from tests.loop_helpers import Sample, all_done, make_sample, stop, wait_for

# Waits (at most a minute) for the file named by its argument: a phase that runs until released.
WAIT = (
    "import pathlib, sys, time\n"
    "p = pathlib.Path(sys.argv[1])\n"
    "end = time.time() + 60\n"
    "while not p.exists() and time.time() < end:\n"
    "    time.sleep(0.05)\n"
)

PHASE_KEYS = {"name", "status", "exit_code", "duration", "cached_from", "cached_at", "log_path", "error", "rerun_of"}


def with_phases(s: Sample, phases: dict[str, Any], **config: Any) -> None:
    """Replace the sample's phases (its config merges mappings, which would keep the default one)."""
    s.config["phases"] = phases
    s.write_config(**config)


def attempts(s: Sample, task_id: str) -> dict[str, dict[str, Any]]:
    """The task's last attempt of each kind, from `task show --json`."""
    return {run["phase"]: run for run in s.task(task_id)["runs"]}


def by_name(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in run["phases"]}


def active_verify(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The running verification, once its second phase is running."""
    runs: list[dict[str, Any]] = doc["active_runs"]
    for run in runs:
        if run["phase"] == "verify" and [p["status"] for p in run["phases"]] == ["passed", "running"]:
            return run
    return None


def test_status_shows_a_verification_live_and_task_show_the_attempts_after_it_landed(tmp_path: Path) -> None:
    release = tmp_path / "release"
    s = make_sample(tmp_path, check_base=False)  # the slow phase would hold base's own check first
    with_phases(s, {"lint": {"run": [["python3", "check.py"]]},
                    "slow": {"run": [["python3", "-c", WAIT, str(release)]], "needs": ["lint"]}})  # fmt: skip
    s.plan({"t-1": [{"files": {"good.txt": "fine\n"}}]})
    s.add("lands")
    proc = s.start()
    try:
        doc = wait_for(lambda: active_verify(s.status()), 60, proc)
        assert doc["task_id"] == "t-1"
        lint, slow = doc["phases"]
        assert set(lint) == PHASE_KEYS
        assert (lint["name"], lint["exit_code"], lint["cached_from"]) == ("lint", 0, None)
        assert lint["error"] is None
        assert lint["duration"] >= 0 and "bad files" in Path(lint["log_path"]).read_text()
        assert (slow["name"], slow["exit_code"]) == ("slow", None) and slow["duration"] >= 0
        text = s.cli("status").stdout
        assert "t-1  verify  patchset 0" in text
        assert "lint: passed in " in text and ", exit 0" in text and "slow: running for " in text
        assert s.status()["schema_version"] == 2
        release.write_text("go")
        wait_for(lambda: all_done(1)(s.status()), 60, proc)
    finally:
        stop(proc)
    runs = attempts(s, "t-1")
    assert list(runs) == ["dev", "verify", "integrate"] and runs["dev"]["phases"] == []
    verified = by_name(runs["verify"])
    assert [(p["name"], p["status"], p["exit_code"]) for p in runs["verify"]["phases"]] == [
        ("lint", "passed", 0), ("slow", "passed", 0)]  # fmt: skip
    # The candidate on base's unmoved tip has the verified tree: both passes were reused.
    reused = by_name(runs["integrate"])
    for name in ("lint", "slow"):
        assert reused[name]["status"] == "cached" and reused[name]["log_path"] is None
        assert reused[name]["cached_at"] is not None
    sources = {name: reused[name]["cached_from"] for name in ("lint", "slow")}
    rows = dict(s.rows("SELECT phase, id FROM pipeline_runs WHERE parent_id = ?", (runs["verify"]["id"],)))
    assert sources == rows
    assert all(v["log_path"] for v in verified.values())
    text = s.cli("task", "show", "t-1").stdout
    assert f"lint: passed (cached from run {sources['lint']}, " in text
    assert "slow: passed in " in text


def test_a_failing_phase_and_the_phase_that_needs_it_show_their_reasons(tmp_path: Path) -> None:
    s = make_sample(tmp_path)
    with_phases(s, {"lint": {"run": [["python3", "check.py"]]},
                    "unit": {"run": [["python3", "-c", "pass"]], "needs": ["lint"]}},
                limits={"max_retries": 1})  # fmt: skip
    s.plan({"t-1": [{"files": {"x.txt": "BAD\n"}}]})
    s.add("breaks lint")
    done = s.cli("run", "--until-idle", timeout=90)
    assert done.returncode == 3, done.stdout + done.stderr
    runs = attempts(s, "t-1")
    assert runs["verify"]["status"] == "failure" and "integrate" not in runs
    lint, unit = runs["verify"]["phases"]
    assert (lint["name"], lint["status"], lint["exit_code"]) == ("lint", "failed", 1)
    assert "failed (exit 1)" in lint["error"] and "bad files: ['x.txt']" in lint["error"]
    assert (unit["name"], unit["status"], unit["exit_code"]) == ("unit", "not_run", None)
    assert unit["log_path"] is None
    assert unit["error"] == "not run: needs lint (failed)"
    text = s.cli("task", "show", "t-1").stdout
    assert "lint: failed in " in text and ", exit 1: `python3 check.py` failed (exit 1):" in text
    assert "\n          checked " in text and " bad files: ['x.txt']\n" in text  # the output's last line
    assert "unit: not run: needs lint (failed)" in text


# -- rows the loop makes only when stopped, or from `pipeline-runner check` ------------------------


def test_stopped_phases_reuse_of_a_check_pass_and_attempts_without_phases(tmp_path: Path) -> None:
    db = open_db(tmp_path / "state.db")
    try:
        runs = Runs(db)
        old = runs.start("t-1", Phase.VERIFY, 0)  # an attempt from before the check graph
        runs.finish(old, RunStatus.FAILURE, error="all recipes failed")
        attempt = runs.start("t-1", Phase.VERIFY, 0)
        reused = runs.start_check(attempt, "t-1", "lint", 0, tree="abc")
        runs.finish(reused, RunStatus.SUCCESS, exit_code=0, duration=0.0)  # a pass `check` made
        runs.start_check(attempt, "t-1", "unit", 0, tree="abc")
        runs.cancel_running_checks("runner stopped while the phase ran")
        runs.start_check(attempt, "t-1", "e2e", 0, tree="abc")
        views = phase_views(runs, runs.for_task("t-1"), now=10**10)
    finally:
        db.close()
    assert views[old] == []
    lint, unit, e2e = views[attempt]
    assert (lint.state, lint.cached_from) == (PhaseShown.CACHED, None)
    assert lint.describe() == "lint: passed (cached from `pipeline-runner check`)"
    assert unit.state is PhaseShown.CANCELLED
    assert unit.describe() == "unit: cancelled: runner stopped while the phase ran"
    assert e2e.state is PhaseShown.RUNNING and (e2e.duration or 0) > 1e9
    assert e2e.describe().startswith("e2e: running for ")
