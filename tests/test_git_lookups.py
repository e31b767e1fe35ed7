"""Answers runner.git gives without a git process of its own (a worktree listing kept while the
files it comes from read the same, ancestry along the candidates it made, a commit's parent read
with its message) agree with git's, whatever a person does meanwhile. Real repositories."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from runner import procs
from runner.git import Git, PickStatus
from runner.workspace import task_ref
from tests.conftest import git, make_repo, make_workspaces


def branches(g: Git) -> dict[Path, str | None]:
    return {t.path.resolve(): t.branch for t in g.worktrees()}


def git_runs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every process runner.procs starts from here on."""
    seen: list[list[str]] = []
    real = procs.run

    def counting(argv: list[str], **kwargs: object) -> procs.ProcResult:
        seen.append(argv)
        return real(argv, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(procs, "run", counting)
    return seen


def test_worktree_listing_follows_a_persons_checkouts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo(tmp_path / "repo")
    g = Git(repo)
    assert branches(g) == {repo.resolve(): "live"}
    runs = git_runs(monkeypatch)
    assert branches(g) == {repo.resolve(): "live"}
    assert runs == []  # nothing changed: no process

    # A person checks out another branch, detaches, adds a worktree holding base, removes it.
    git(repo, "checkout", "-q", "-b", "other")
    assert branches(g) == {repo.resolve(): "other"}
    git(repo, "checkout", "-q", "--detach")
    assert branches(g) == {repo.resolve(): None}
    linked = tmp_path / "linked"
    git(repo, "worktree", "add", "-q", str(linked), "live")
    assert branches(g) == {repo.resolve(): None, linked.resolve(): "live"}
    git(linked, "checkout", "-q", "-b", "elsewhere")
    assert branches(g) == {repo.resolve(): None, linked.resolve(): "elsewhere"}
    git(repo, "worktree", "remove", "--force", str(linked))
    assert branches(g) == {repo.resolve(): None}
    git(repo, "checkout", "-q", "live")
    assert branches(g) == {repo.resolve(): "live"}


def test_a_repository_keeping_its_refs_in_reftables_is_asked_each_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # There HEAD is a stub that a checkout leaves as it is: the files say nothing of a switch.
    repo = make_repo(tmp_path / "repo")
    (repo / ".git" / "reftable").mkdir()
    g = Git(repo)
    assert branches(g) == {repo.resolve(): "live"}
    runs = git_runs(monkeypatch)
    assert branches(g) == {repo.resolve(): "live"}
    assert len(runs) == 1


def test_a_worktree_moved_elsewhere_is_listed_where_it_is(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    g = Git(repo)
    first, second = tmp_path / "first", tmp_path / "second"
    git(repo, "worktree", "add", "-q", "-b", "side", str(first))
    assert first.resolve() in branches(g)
    git(repo, "worktree", "move", str(first), str(second))
    listed = branches(g)
    assert second.resolve() in listed and first.resolve() not in listed


def test_ancestry_along_made_candidates_agrees_with_git(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    g = Git(repo)
    tip = g.out("rev-parse", "live")
    tree = g.out("rev-parse", "live^{tree}")
    author = {"GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@x", "GIT_AUTHOR_DATE": "1700000000 +0000"}
    one = g.commit_tree(tree, tip, "one\n", author)
    two = g.commit_tree(tree, one, "two\n", author)
    unrelated = g.commit_tree(tree, tip, "side\n", author)
    fresh = Git(repo)  # knows nothing it made: asks git each time
    for ancestor, descendant in [(tip, two), (one, two), (two, two), (unrelated, two), (two, one), (two, tip)]:
        assert g.is_ancestor(ancestor, descendant) == fresh.is_ancestor(ancestor, descendant), (ancestor, descendant)
    # A commit below base's tip, not made here, is found by git itself.
    git(repo, "commit", "-q", "--allow-empty", "-m", "later")
    later = g.out("rev-parse", "live")
    assert g.is_ancestor(tip, later) and not g.is_ancestor(later, two)


def test_a_commit_whose_parent_left_base_is_stale_with_its_parent_read_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(tmp_path / "repo")
    g = Git(repo)
    old_tip = g.out("rev-parse", "live")
    git(repo, "checkout", "-q", "-b", "t-1")
    (repo / "a.txt").write_text("a\n")
    git(repo, "add", "a.txt")
    git(repo, "commit", "-q", "-m", "task\n\nTask-Id: t-1")
    commit = g.out("rev-parse", "t-1")
    git(repo, "checkout", "-q", "live")
    info = g.commit_info(commit, "Task-Id")
    assert info.trailer_values == ["t-1"]
    runs = git_runs(monkeypatch)
    assert g.rev(f"{commit}^") == old_tip and runs == []  # read with the message
    assert g.merge_onto(old_tip, commit).status is PickStatus.PICKED
    # A person rewrites base: the task's parent is no longer in its history.
    git(repo, "commit", "-q", "--amend", "-m", "rewritten")
    rewritten = g.out("rev-parse", "live")
    assert g.merge_onto(rewritten, commit).status is PickStatus.STALE
    assert Git(repo).merge_onto(rewritten, commit).status is PickStatus.STALE  # asked of git afresh


def test_a_prepared_workspace_names_the_commit_its_task_branch_holds(tmp_path: Path) -> None:
    repo, ws = make_workspaces(tmp_path)
    path, before = ws.prepare("t-1", "live")
    assert before == git(path, "rev-parse", "refs/heads/t-1") == git(repo, "rev-parse", "live")
    # An agent commits; the runner brings it in; a retry reuses the workspace as it is.
    (path / "b.txt").write_text("b\n")
    git(path, "add", "b.txt")
    git(path, "-c", "user.name=a", "-c", "user.email=a@x", "commit", "-q", "-m", "b")
    brought = ws.bring_in("t-1")
    assert brought == git(path, "rev-parse", "refs/heads/t-1") == git(repo, "rev-parse", task_ref("t-1"))
    again, before_again = ws.prepare("t-1", "live")
    assert again == path and before_again == brought
    # Made afresh (the workspace is gone): from the task's last commit.
    shutil.rmtree(path)
    remade, from_ref = ws.prepare("t-1", "live")
    assert from_ref == brought == git(remade, "rev-parse", "refs/heads/t-1")
