"""Base moving under an integration: a lost race changes nothing (the stack builds its candidates
again on the new tip), and every candidate that did not land loses its receipt. Real git, in-process."""

from __future__ import annotations

from pathlib import Path

from phases.integrate import RECEIPTS, Candidate, build, land_chain
from phases.outcomes import IntegrateStatus
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


def test_a_lost_race_changes_nothing_and_the_candidate_built_again_lands_with_one_receipt(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    commit = _task_commit(repo)
    g = Git(repo)
    tip = git(repo, "rev-parse", "live")
    built = build(g, "live", tip, commit, task_id="t-1", secrets={})
    assert isinstance(built, Candidate) and built.parent == tip
    _person_pushes(repo, 1)  # base moves while the candidate is checked
    pushed = git(repo, "rev-parse", "live")
    assert land_chain(g, "live", [built], None, receipt=lambda sha: f"receipt {sha}") is None
    assert git(repo, "rev-parse", "live") == pushed  # the person's push stands
    assert git(repo, "notes", f"--ref={RECEIPTS}", "list") == ""  # the lost candidate has no receipt
    again = build(g, "live", pushed, commit, task_id="t-1", secrets={})
    assert isinstance(again, Candidate)
    landed = land_chain(g, "live", [again], None, receipt=lambda sha: f"receipt {sha}")
    assert landed is not None and [r.status for r in landed] == [IntegrateStatus.INTEGRATED]
    assert git(repo, "log", "--format=%s", "-2", "live").splitlines() == ["the task", "a person's push 1"]
    noted = git(repo, "notes", f"--ref={RECEIPTS}", "list").splitlines()
    assert [line.split()[1] for line in noted] == [again.sha]


def test_a_stop_before_the_swap_leaves_base_and_receipts_alone(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    commit = _task_commit(repo)
    g = Git(repo)
    tip = git(repo, "rev-parse", "live")
    built = build(g, "live", tip, commit, task_id="t-1", secrets={})
    assert isinstance(built, Candidate)
    stopped = land_chain(g, "live", [built], None, before_swap=lambda sha: "a person cancelled it",
                         receipt=lambda sha: f"receipt {sha}")  # fmt: skip
    assert stopped is not None and [r.status for r in stopped] == [IntegrateStatus.STOPPED]
    assert git(repo, "rev-parse", "live") == tip
    assert git(repo, "notes", f"--ref={RECEIPTS}", "list") == ""
