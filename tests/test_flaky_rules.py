"""The rules that tell a flaky check from a real failure, in-process: when a rejected attempt is
checked once more, which phases are blamed, what a rerun does not run again, and the counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from phases.checks import PhaseOutcome, PhaseState
from phases.verify import VerifyResult, VerifyStatus
from runner.config import PhaseConfig
from runner.flaky import CheckOutcomes, Culprit, Rerun, carried_passes, culprits, decide_rerun
from runner.state import open_db

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
