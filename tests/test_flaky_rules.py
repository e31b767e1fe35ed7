"""The rules that tell a flaky check from a real failure, in-process: when a rejected attempt is
checked once more, which phases are blamed, what a rerun does not run again, and the counts."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from phases.checks import GraphRun, PhaseOutcome, PhaseState, RowListener
from phases.outcomes import VerifyStatus
from phases.verify import VerifyResult
from runner.checkoutcomes import CheckOutcomes
from runner.config import PhaseConfig
from runner.flaky import (
    Culprit,
    Rerun,
    carried_passes,
    check_with_rerun,
    culprits,
    decide_rerun,
)
from runner.state import Phase, Runs, open_db

SEEN = Culprit("unit", "k1", passed_before=True)
UNSEEN = Culprit("lint", "k2", passed_before=False)
NO_KEY = Culprit("e2e", None, passed_before=False)


@pytest.mark.parametrize(
    ("status", "cancelled", "reruns", "blamed", "expected"),
    [
        (VerifyStatus.FAIL, False, 0, [SEEN], Rerun.RERUN),
        (VerifyStatus.FAIL, False, 0, [UNSEEN], Rerun.NO_EVIDENCE),  # never seen passing: no rerun wasted
        (VerifyStatus.FAIL, False, 0, [SEEN, UNSEEN], Rerun.NO_EVIDENCE),  # one real failure is enough
        (VerifyStatus.FAIL, False, 0, [NO_KEY], Rerun.NO_EVIDENCE),
        (VerifyStatus.FAIL, False, 0, [], Rerun.NO_EVIDENCE),
        (VerifyStatus.FAIL, False, 1, [SEEN], Rerun.SPENT),  # an alternating check gets one rerun, no more
        (VerifyStatus.FAIL, False, 7, [SEEN], Rerun.SPENT),
        (VerifyStatus.FAIL, True, 0, [SEEN], Rerun.CANCELLED),
        (VerifyStatus.FAULT, False, 0, [SEEN], Rerun.NOT_REJECTED),  # a fault is never the task's
        (VerifyStatus.PASS, False, 0, [], Rerun.NOT_REJECTED),
        (VerifyStatus.SKIP, False, 0, [], Rerun.NOT_REJECTED),
        (VerifyStatus.UNCHECKED, False, 0, [], Rerun.NOT_REJECTED),
    ],
)
def test_decide_rerun(
    status: VerifyStatus, cancelled: bool, reruns: int, blamed: list[Culprit], expected: Rerun
) -> None:
    decision, why = decide_rerun(status, cancelled=cancelled, reruns=reruns, culprits=blamed)
    assert decision is expected
    assert why


def failed(name: str, optional: bool = False) -> PhaseOutcome:
    return PhaseOutcome(name, PhaseState.FAILED, "boom", 1, 0.1, optional=optional, row=10)


def test_culprits_are_the_failed_required_phases_or_the_optional_need_that_failed_them() -> None:
    phases = {
        "build": PhaseConfig(run=[["make"]]),
        "lint": PhaseConfig(run=[["lint"]], optional=True),
        "unit": PhaseConfig(run=[["test"]], needs=["build"]),
        "docs": PhaseConfig(run=[["docs"]], needs=["lint"]),
    }
    ok = PhaseOutcome("build", PhaseState.PASSED, "", 0, 0.1, row=1)
    assert culprits([ok, failed("unit")], phases) == ["unit"]
    # An optional failure alone rejects nothing.
    assert culprits([ok, failed("lint", optional=True)], phases) == []
    # docs could not run because lint failed: lint is what a rerun must see pass.
    assert culprits([failed("lint", optional=True), failed("docs")], phases) == ["lint"]
    assert culprits([], phases) == []


def test_a_rerun_carries_only_what_ran_and_passed() -> None:
    first = VerifyResult(
        VerifyStatus.FAIL,
        phases=(
            PhaseOutcome("build", PhaseState.PASSED, "", 0, 2.5, row=1),
            PhaseOutcome("unit", PhaseState.FAILED, "boom", 1, 0.1, row=2),
            PhaseOutcome("e2e", PhaseState.NOT_RUN, "not run: ...", row=3),
            PhaseOutcome("docs", PhaseState.PASSED, "", 0, 0.2),  # no row: nothing to point to
        ),
    )
    carried = carried_passes(first)
    assert set(carried) == {"build"}
    assert (carried["build"].run_id, carried["build"].duration) == (1, 2.5)


def test_counts_per_content_and_evidence_from_the_check_cache(tmp_path: Path) -> None:
    db = open_db(tmp_path / "state.db")
    outcomes = CheckOutcomes(db)
    assert not outcomes.passed_before("k1")
    outcomes.record("k1", "unit", passed=False)
    assert not outcomes.passed_before("k1")  # a failure is no evidence
    outcomes.record("k1", "unit", passed=True)
    assert outcomes.passed_before("k1")
    outcomes.record("k2", "lint", passed=True)  # passed only: not flaky
    outcomes.rerun("k1", cleared=True)
    (flaky,) = outcomes.flaky()
    assert (flaky.phase, flaky.passes, flaky.fails, flaky.reruns, flaky.cleared) == ("unit", 1, 1, 1, 1)
    # A pass kept for reuse (`pipeline-runner check` keeps only there) is evidence too.
    with db.write() as conn:
        conn.execute(
            "INSERT INTO check_results (key, phase, tree, run_id, duration, exit_code, passed_at) "
            "VALUES ('k3', 'unit', 't', NULL, 1.0, 0, '2026-01-01T00:00:00Z')"
        )
    assert outcomes.passed_before("k3")


# -- the check stage, in-process: real recipes, real SQLite, a new directory per checkout ---------

SCRIPT = """\
import os, pathlib, sys
counter = pathlib.Path(os.environ["COUNTER"])
n = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(n))
pathlib.Path("left-behind").write_text("a recipe may leave files")
sys.exit(1 if str(n) in os.environ["FAIL_ON"].split(",") else 0)
"""


class Stage:
    """One phase ``unit`` (uncached, its runs failing as FAIL_ON says) beside a steady ``build``,
    checked as the runner checks a stage; each checkout is a new, empty directory."""

    def __init__(self, tmp_path: Path, fail_on: str) -> None:
        self.tmp = tmp_path
        script = tmp_path / "script.py"
        script.write_text(SCRIPT)
        self.db = open_db(tmp_path / "state.db")
        self.runs = Runs(self.db)
        self.checkouts: list[Path] = []
        env = {"COUNTER": str(tmp_path / "unit-count"), "FAIL_ON": fail_on}
        self.phases = {
            "build": PhaseConfig(run=[["python3", str(script)]], cache=False,
                                 env={"COUNTER": str(tmp_path / "build-count"), "FAIL_ON": ""}),
            "unit": PhaseConfig(run=[["python3", str(script)]], cache=False, env=env, needs=["build"]),
        }  # fmt: skip

    def checkout(self) -> Path:
        path = self.tmp / f"checkout-{len(self.checkouts)}"
        assert not path.exists()
        path.mkdir()
        self.checkouts.append(path)
        return path

    def check(self, cancel: threading.Event | None = None) -> tuple[VerifyResult, int]:
        parent = self.runs.start("t-1", Phase.VERIFY, 0)
        log_path = self.tmp / "logs" / f"attempt-{parent}.log"
        log_path.parent.mkdir(exist_ok=True)
        graph = GraphRun(
            phases=self.phases, stage="verify", tree="tree1", workdir=self.checkout, values={},
            log_dir=log_path.with_suffix(""), slots=threading.BoundedSemaphore(2), cancel=cancel,
            listener=RowListener(self.runs, parent, "t-1", 0, "tree1", log_path), outcomes=CheckOutcomes(self.db),
        )  # fmt: skip
        result = check_with_rerun(
            graph, CheckOutcomes(self.db), log_path, "t-1",
            lambda rows: RowListener(self.runs, parent, "t-1", 0, "tree1", log_path, rerun_of=rows),
        )  # fmt: skip
        return result, parent

    def count(self, phase: str) -> int:
        path = self.tmp / f"{phase}-count"
        return int(path.read_text()) if path.exists() else 0

    def unit_rows(self, parent: int) -> list[tuple[str, int | None]]:
        return [(str(r.status), r.rerun_of) for r in self.runs.checks([parent])[parent] if r.phase == "unit"]


def test_a_failure_after_a_pass_is_checked_once_more_in_a_fresh_checkout(tmp_path: Path) -> None:
    stage = Stage(tmp_path, fail_on="2")
    assert stage.check()[0].status is VerifyStatus.PASS  # run 1: the pass that is the evidence
    result, parent = stage.check()
    assert result.status is VerifyStatus.PASS and "flaky: unit failed once" in result.summary
    assert stage.count("unit") == 3
    # build needs to have run where unit runs, so it ran in the new checkout too.
    assert stage.count("build") == 3 and len(stage.checkouts) == 3
    first = next(r.id for r in stage.runs.checks([parent])[parent] if r.phase == "unit")
    assert stage.unit_rows(parent) == [("failure", None), ("success", first)]
    (flaky,) = CheckOutcomes(stage.db).flaky()
    assert (flaky.passes, flaky.fails, flaky.reruns, flaky.cleared) == (2, 1, 1, 1)


def test_an_alternating_check_gets_one_rerun_and_a_confirmed_failure_stands(tmp_path: Path) -> None:
    # After one pass it fails, passes, fails... but every rerun lands on a failing run.
    stage = Stage(tmp_path, fail_on=",".join(str(n) for n in range(2, 50)))
    stage.check()
    for _ in range(3):
        result, parent = stage.check()
        assert result.status is VerifyStatus.FAIL
        assert [rerun is not None for _, rerun in stage.unit_rows(parent)] == [False, True]
    assert stage.count("unit") == 1 + 3 * 2  # never more than one rerun per attempt


def test_no_rerun_without_a_pass_on_the_same_content_or_once_cancelled(tmp_path: Path) -> None:
    stage = Stage(tmp_path, fail_on="1,2")
    result, parent = stage.check()
    assert result.status is VerifyStatus.FAIL and stage.count("unit") == 1
    assert stage.unit_rows(parent) == [("failure", None)]
    cancelled = threading.Event()
    cancelled.set()
    stage.check(cancelled)
    assert stage.count("unit") == 1 and CheckOutcomes(stage.db).flaky() == []
