"""End to end: a check that fails where the same check of the same tree passed before is checked
once more before the task is charged, and `status` lists it as flaky."""

from __future__ import annotations

import json
from pathlib import Path

from tests.loop_helpers import Sample, all_done, make_sample

# A check whose verdict is scripted by run number: FAIL_ON lists the runs (1, 2, ...) that fail.
SCRIPTED = """\
import os, pathlib, sys, time
counter = pathlib.Path(os.environ["COUNTER"])
n = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(n))
failing = {int(x) for x in os.environ["FAIL_ON"].split(",") if x}
print(f"run {n}:", "failing" if n in failing else "passing")
if n in failing:
    time.sleep(0.5)  # the phase beside it has ended by then, and is not stopped by this failure
sys.exit(1 if n in failing else 0)
"""


def scripted(tmp_path: Path, fail_on: str) -> Sample:
    """One task, one uncached phase on both stages whose runs fail as ``fail_on`` says, and one
    that always passes (``steady``, counted in its own file)."""
    script = tmp_path / "scripted.py"
    script.write_text(SCRIPTED)
    env = {"COUNTER": str(tmp_path / "counter"), "FAIL_ON": fail_on}
    steady = {"COUNTER": str(tmp_path / "steady"), "FAIL_ON": ""}
    s = make_sample(
        tmp_path, concurrency=1, check_base=False,
        phases={
            "steady": {"run": [["python3", str(script)]], "cache": False, "env": steady},
            "unit": {"run": [["python3", str(script)]], "cache": False, "env": env},
        },
    )  # fmt: skip
    s.add("one")
    return s


def runs_of_unit(tmp_path: Path) -> int:
    return int((tmp_path / "counter").read_text())


def attempts(s: Sample) -> list[tuple[str, str]]:
    return [(str(p), str(st)) for p, st in s.rows(
        "SELECT phase, status FROM pipeline_runs WHERE parent_id IS NULL AND task_id = 't-1' ORDER BY id"
    )]  # fmt: skip


def unit_rows(s: Sample, stage: str) -> list[str]:
    return [r[0] for r in s.rows(
        "SELECT c.status FROM pipeline_runs c JOIN pipeline_runs p ON c.parent_id = p.id "
        "WHERE p.phase = ? AND c.phase = 'unit' ORDER BY c.id", (stage,),
    )]  # fmt: skip


def test_a_failure_after_a_pass_of_the_same_tree_is_rerun_and_the_task_lands_uncharged(tmp_path: Path) -> None:
    # Run 1 (verify) passes; run 2 (integration, the same tree: base did not move) fails; run 3,
    # the rerun, passes.
    s = scripted(tmp_path, "2")
    s.run_once_until(all_done(1))
    assert runs_of_unit(tmp_path) == 3
    assert attempts(s) == [("dev", "success"), ("verify", "success"), ("integrate", "success")]
    assert unit_rows(s, "integrate") == ["failure", "success"]  # both results recorded
    # The phase that passed is not run again (once at verify, once at integration): the rerun's
    # row reuses the first run's pass.
    assert int((tmp_path / "steady").read_text()) == 2
    steady = s.rows(
        "SELECT c.id, c.status, c.cached_from FROM pipeline_runs c JOIN pipeline_runs p ON c.parent_id = p.id "
        "WHERE p.phase = 'integrate' AND c.phase = 'steady' ORDER BY c.id"
    )
    assert [(st, cached) for _, st, cached in steady] == [("success", None), ("success", steady[0][0])]
    # The rerun's rows name the first run's: `task show` and the receipt tell them apart.
    (first, again) = s.rows(
        "SELECT c.id, c.rerun_of FROM pipeline_runs c JOIN pipeline_runs p ON c.parent_id = p.id "
        "WHERE p.phase = 'integrate' AND c.phase = 'unit' ORDER BY c.id"
    )
    assert first[1] is None and again[1] == first[0]
    assert s.trailers() == ["t-1"]
    task = s.task("t-1")
    assert task["patchset"] == 0 and not any("failed" in c["body"] for c in task["comments"])
    shown = {(p["name"], p["status"], p["rerun_of"]) for p in task["runs"][2]["phases"]}
    assert {("unit", "failed", None), ("unit", "passed", first[0])} <= shown
    assert f"[rerun of run {first[0]}]" in s.cli("task", "show", "t-1").stdout
    done = s.cli("receipt", "--json")
    assert done.returncode == 0, done.stderr
    (integrated,) = [c for c in json.loads(done.stdout)["checks"] if c["stage"] == "integrate"]
    assert [p.get("rerun_of") for p in integrated["phases"] if p["phase"] == "unit"] == [first[0]]
    log = Path(task["runs"][2]["log_path"]).read_text()
    assert "checking once more" in log and "passed on the rerun" in log
    status = s.status()
    (flaky,) = status["flaky_checks"]
    assert (flaky["phase"], flaky["passes"], flaky["fails"], flaky["reruns"], flaky["cleared"]) == ("unit", 2, 1, 1, 1)
    text = s.cli("status").stdout
    assert "Flaky checks" in text and "unit: 2 passed, 1 failed on the same content; 1 of 1 reruns cleared" in text


def test_a_failure_the_rerun_confirms_is_charged_and_only_one_rerun_is_made(tmp_path: Path) -> None:
    # Run 1 passes at verify; runs 2 and 3 (integration and its one rerun) fail: a real failure.
    s = scripted(tmp_path, "2,3")
    s.run_once_until(lambda d: d["open"] == 1 or d["done"] == 1)
    assert runs_of_unit(tmp_path) == 3
    assert attempts(s)[:3] == [("dev", "success"), ("verify", "success"), ("integrate", "failure")]
    assert unit_rows(s, "integrate") == ["failure", "failure"]
    assert s.task("t-1")["patchset"] == 1  # charged, and developed again
    (flaky,) = s.status()["flaky_checks"]
    assert (flaky["reruns"], flaky["cleared"]) == (1, 0)


def test_a_failure_on_content_never_seen_passing_is_not_rerun(tmp_path: Path) -> None:
    s = scripted(tmp_path, "1")
    s.run_once_until(lambda d: d["open"] == 1 or d["done"] == 1)
    assert unit_rows(s, "verify")[:1] == ["failure"]
    first_verify = next(r for r in attempts(s) if r[0] == "verify")
    assert first_verify == ("verify", "failure")
    # Nothing was checked twice for that attempt, and nothing is listed as flaky.
    assert runs_of_unit(tmp_path) == len(unit_rows(s, "verify")) + len(unit_rows(s, "integrate"))
    assert s.status()["flaky_checks"] == []
    assert json.loads(s.cli("status", "--json").stdout)["flaky_checks"] == []


def test_a_check_that_keeps_failing_after_one_pass_gets_one_rerun_per_attempt_at_most(tmp_path: Path) -> None:
    # Adversarial: after its first pass the check fails every time. Each attempt may spend one
    # rerun on it, never more, and the task ends needing help at its retry limit as always.
    s = scripted(tmp_path, ",".join(str(n) for n in range(2, 100)))
    s.write_config(limits={"max_retries": 2})
    s.run_once_until(lambda d: d["needs_help"] == 1)
    per_attempt = s.rows(
        "SELECT p.id, COUNT(*), COUNT(c.rerun_of) FROM pipeline_runs c JOIN pipeline_runs p ON c.parent_id = p.id "
        "WHERE c.phase = 'unit' AND c.status IN ('success', 'failure') GROUP BY p.id"
    )
    assert any(reruns == 1 for _, _, reruns in per_attempt)  # the evidence was acted on
    assert all(ran <= 2 and reruns <= 1 and ran == 1 + reruns for _, ran, reruns in per_attempt)
    assert runs_of_unit(tmp_path) == sum(ran for _, ran, _ in per_attempt)  # nothing ran unrecorded
    failed = s.rows("SELECT COUNT(*) FROM pipeline_runs WHERE task_id = 't-1' AND parent_id IS NULL AND status = 'failure'")
    assert failed == [(2,)]  # each confirmed failure charged once
