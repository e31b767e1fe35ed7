"""Base moving under an integration: a lost race is tried again on the new tip, a bounded number
of times, and every candidate that did not land loses its receipt. Real git, in-process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from phases.integrate import MAX_BASE_RACES, RECEIPTS, IntegrateStatus, integrate
from phases.verify import VerifyResult, VerifyStatus
from runner.git import Git
from tests.conftest import git, make_repo


def _task_commit(repo: Path) -> str:
    git(repo, "checkout", "-q", "-b", "task")
    (repo / "task.txt").write_text("the task's change\n")
    git(repo, "add", "task.txt")
    git(repo, "commit", "-q", "-m", "the task")
    sha = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "live")
    return sha


def _person_pushes(repo: Path, n: int) -> None:
    (repo / f"person-{n}.txt").write_text(f"push {n}\n")
    git(repo, "add", f"person-{n}.txt")
    git(repo, "commit", "-q", "-m", f"a person's push {n}")


def _checks_passing_while_a_person_pushes(
    repo: Path, pushes: int
) -> tuple[list[str], Callable[[str], VerifyResult]]:
    checked: list[str] = []

    def check(candidate: str) -> VerifyResult:
        checked.append(candidate)
        if len(checked) <= pushes:
            _person_pushes(repo, len(checked))  # base moves while the candidate is checked
        return VerifyResult(VerifyStatus.PASS, "ok", passed=1)

    return checked, check


def test_a_few_lost_races_land_on_the_newest_tip_with_one_receipt(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    commit = _task_commit(repo)
    checked, check = _checks_passing_while_a_person_pushes(repo, pushes=3)
    result = integrate(Git(repo), check, "live", commit, receipt=lambda sha, r: f"receipt {sha}")
    assert result.status is IntegrateStatus.INTEGRATED
    assert len(checked) == 4 and len(set(checked)) == 4  # a new candidate on each new tip
    assert git(repo, "rev-parse", "live") == checked[-1]
    log = git(repo, "log", "--format=%s", "live").splitlines()
    assert log[:4] == ["the task", "a person's push 3", "a person's push 2", "a person's push 1"]
    noted = git(repo, "notes", f"--ref={RECEIPTS}", "list").splitlines()
    assert [line.split()[1] for line in noted] == [checked[-1]]


def test_base_that_never_stops_moving_is_given_up_after_a_bound(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    commit = _task_commit(repo)
    before = git(repo, "rev-parse", "live")
    checked, check = _checks_passing_while_a_person_pushes(repo, pushes=10**6)
    result = integrate(Git(repo), check, "live", commit, receipt=lambda sha, r: f"receipt {sha}")
    assert result.status is IntegrateStatus.REFUSED and "kept moving" in result.detail
    assert len(checked) == MAX_BASE_RACES
    # Only the person's pushes are on base; no candidate kept a receipt.
    assert git(repo, "log", "--format=%s", f"{before}..live").count("the task") == 0
    assert git(repo, "notes", f"--ref={RECEIPTS}", "list") == ""
