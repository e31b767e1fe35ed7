"""Landing several passed candidates at once: base moves over all of them in one compare-and-swap
(one push when base lives on a remote), each with its own receipt; a candidate that may not land
stops the chain below it, and nothing above it moves. Real git repositories and a real bare
remote, in-process."""

from __future__ import annotations

from pathlib import Path

from phases.integrate import RECEIPTS, Candidate, build, land_chain
from phases.outcomes import IntegrateStatus
from runner.git import Git
from runner.remote import PushResult, Remote
from tests.conftest import git, make_repo


def _tasks(repo: Path, count: int) -> list[str]:
    """``count`` task commits, each on its own branch off base, each adding its own file."""
    shas = []
    for n in range(1, count + 1):
        git(repo, "checkout", "-q", "-b", f"task-{n}", "live")
        (repo / f"t{n}.txt").write_text(f"task {n}\n")
        git(repo, "add", f"t{n}.txt")
        git(repo, "commit", "-q", "-m", f"task {n}")
        shas.append(git(repo, "rev-parse", "HEAD"))
    git(repo, "checkout", "-q", "live")
    return shas


def _stack(g: Git, tip: str, commits: list[str]) -> list[Candidate]:
    """Candidates stacked in order on ``tip``, as the integrator builds them."""
    chain: list[Candidate] = []
    for n, commit in enumerate(commits, start=1):
        built = build(g, "live", chain[-1].sha if chain else tip, commit, task_id=f"t-{n}", secrets={})
        assert isinstance(built, Candidate)
        chain.append(built)
    return chain


def _chained(tmp_path: Path, count: int) -> tuple[Path, Git, str, list[Candidate]]:
    """A repository on base `live`, its tip, and ``count`` candidates stacked on it."""
    repo = make_repo(tmp_path / "repo")
    g = Git(repo)
    tip = git(repo, "rev-parse", "live")
    return repo, g, tip, _stack(g, tip, _tasks(repo, count))


def _noted(repo: Path) -> set[str]:
    if not git(repo, "for-each-ref", RECEIPTS):
        return set()
    return {line.split()[1] for line in git(repo, "notes", f"--ref={RECEIPTS}", "list").splitlines()}


def _with_remote(tmp_path: Path) -> tuple[Path, Path]:
    repo = make_repo(tmp_path / "repo")
    remote = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(remote))
    git(repo, "remote", "add", "origin", str(remote))
    return repo, remote


def test_three_passed_candidates_land_in_one_push_each_with_its_receipt(tmp_path: Path) -> None:
    repo, remote = _with_remote(tmp_path)
    g = Git(repo)
    tip = git(repo, "rev-parse", "live")
    chain = _stack(g, tip, _tasks(repo, 3))
    pushes: list[tuple[str, str]] = []
    origin = Remote(g, "origin")

    def push(old: str, new: str) -> PushResult:
        pushes.append((old, new))
        return origin.move_base("live", old, new, notes_ref=RECEIPTS, notes_old=None)

    recorded: list[str] = []

    def record(sha: str) -> None:
        recorded.append(sha)

    landed = land_chain(
        g, "live", chain, repo, before_swap=record, receipt=lambda sha: f"receipt of {sha}", push=push
    )
    assert landed is not None
    assert [r.status for r in landed] == [IntegrateStatus.INTEGRATED] * 3
    assert [r.detail for r in landed] == [c.sha for c in chain]
    assert recorded == [c.sha for c in chain]  # each recorded before base moved
    assert pushes == [(tip, chain[-1].sha)]  # one push over the three
    # Base, here and on the remote, holds every candidate in order, each with its own receipt.
    for where in (repo, remote):
        assert git(where, "rev-parse", "live") == chain[-1].sha
        assert git(where, "log", "--format=%H", f"{tip}..live").split() == [c.sha for c in reversed(chain)]
        assert _noted(where) == {c.sha for c in chain}
    assert git(repo, "notes", f"--ref={RECEIPTS}", "show", chain[1].sha) == f"receipt of {chain[1].sha}"
    # Base's checkout followed over all three.
    assert sorted(p.name for p in repo.glob("t*.txt")) == ["t1.txt", "t2.txt", "t3.txt"]
    assert git(repo, "status", "--porcelain") == ""


def test_a_candidate_stopped_in_the_middle_keeps_itself_and_what_is_above_it_off_base(tmp_path: Path) -> None:
    repo, g, _tip, chain = _chained(tmp_path, 3)
    landed = land_chain(
        g, "live", chain, repo, before_swap=lambda sha: "a person cancelled it" if sha == chain[1].sha else None,
        receipt=lambda sha: "receipt",
    )  # fmt: skip
    # Only the one below lands; the stopped one and the one built on it are left to the integrator.
    assert landed is not None and [r.status for r in landed] == [IntegrateStatus.INTEGRATED]
    assert git(repo, "rev-parse", "live") == chain[0].sha
    assert _noted(repo) == {chain[0].sha}
    assert sorted(p.name for p in repo.glob("t*.txt")) == ["t1.txt"]


def test_a_stop_at_the_bottom_moves_nothing(tmp_path: Path) -> None:
    repo, g, tip, chain = _chained(tmp_path, 2)
    landed = land_chain(g, "live", chain, repo, before_swap=lambda sha: "a person cancelled it",
                        receipt=lambda sha: "receipt")  # fmt: skip
    assert landed is not None and [r.status for r in landed] == [IntegrateStatus.STOPPED]
    assert git(repo, "rev-parse", "live") == tip and _noted(repo) == set()


def test_an_untracked_file_in_the_way_of_a_higher_candidate_lands_the_bottom_alone(tmp_path: Path) -> None:
    repo, g, _tip, chain = _chained(tmp_path, 3)
    (repo / "t3.txt").write_text("a person's own file, not committed\n")
    landed = land_chain(g, "live", chain, repo, receipt=lambda sha: "receipt")
    assert landed is not None and [r.status for r in landed] == [IntegrateStatus.INTEGRATED]
    assert git(repo, "rev-parse", "live") == chain[0].sha
    assert (repo / "t3.txt").read_text() == "a person's own file, not committed\n"  # untouched


def test_a_person_pushing_to_the_remote_meanwhile_keeps_every_candidate_and_receipt_off_it(tmp_path: Path) -> None:
    repo, remote = _with_remote(tmp_path)
    g = Git(repo)
    tip = git(repo, "rev-parse", "live")
    chain = _stack(g, tip, _tasks(repo, 3))
    person = tmp_path / "person"
    git(tmp_path, "clone", "-q", str(remote), str(person))
    (person / "p.txt").write_text("the person's change\n")
    git(person, "add", "p.txt")
    git(person, "commit", "-q", "-m", "a person's push")
    git(person, "push", "-q", "origin", "live")
    theirs = git(person, "rev-parse", "HEAD")
    origin = Remote(g, "origin")
    landed = land_chain(
        g, "live", chain, repo, receipt=lambda sha: "receipt",
        push=lambda old, new: origin.move_base("live", old, new, notes_ref=RECEIPTS, notes_old=None),
    )  # fmt: skip
    assert landed is None  # a lost race: built again on the person's tip
    assert git(remote, "rev-parse", "live") == theirs and _noted(remote) == set()
    assert git(repo, "rev-parse", "live") == tip and _noted(repo) == set()


def test_a_local_race_lost_over_a_chain_removes_every_receipt(tmp_path: Path) -> None:
    repo, g, _tip, chain = _chained(tmp_path, 2)

    def person_commits(sha: str) -> None:
        if sha == chain[-1].sha:  # right before the swap, a person commits on base
            (repo / "p.txt").write_text("p\n")
            git(repo, "add", "p.txt")
            git(repo, "commit", "-q", "-m", "a person's commit")

    assert land_chain(g, "live", chain, None, before_swap=lambda sha: person_commits(sha),
                      receipt=lambda sha: "receipt") is None  # fmt: skip
    assert git(repo, "log", "-1", "--format=%s", "live") == "a person's commit"
    assert _noted(repo) == set()
