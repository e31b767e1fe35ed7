"""The remote where hosts meet: task commits published, base moved by an atomic compare-and-swap push."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runner.errors import GitError, TaskError
from runner.git import Git
from runner.remote import PushStatus, Remote
from tests.conftest import git, make_repo

NOTES = "refs/notes/pipeline"


@pytest.fixture
def hosts(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A bare remote holding base `live`, a runner's clone of it and a person's clone."""
    seed = make_repo(tmp_path / "seed")
    remote = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(remote))
    host = tmp_path / "host"
    person = tmp_path / "person"
    for clone in (host, person):
        git(tmp_path, "clone", "-q", str(remote), str(clone))
    return remote, host, person


def commit(repo: Path, name: str, parent: str = "HEAD") -> str:
    """A commit adding file ``name`` on ``parent``, made without moving any branch."""
    git(repo, "checkout", "-q", "--detach", parent)
    (repo / name).write_text(name + "\n")
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", f"add {name}")
    return git(repo, "rev-parse", "HEAD")


def candidate(host: Path, receipt: str | None = "receipt") -> tuple[Remote, str, str]:
    """The runner's remote, the base it read there, and a commit on it carrying ``receipt``."""
    g = Git(host)
    r = Remote(g, "origin")
    old = r.fetch("refs/heads/live")
    assert old is not None
    new = commit(host, "a.txt", old)
    if receipt is not None:
        g.add_note(NOTES, new, receipt)
    return r, old, new


def remote_ref(remote: Path, ref: str) -> str | None:
    out = git(remote, "for-each-ref", "--format=%(objectname)", ref)
    return out or None


def test_a_published_task_commit_is_found_by_another_host(hosts: tuple[Path, Path, Path]) -> None:
    remote, host, person = hosts
    sha = commit(host, "a.txt")
    assert Remote(Git(host), "origin").publish("t-1", sha).ok
    assert remote_ref(remote, "refs/pipeline/tasks/t-1") == sha
    assert remote_ref(remote, "refs/heads/t-1") is None  # no branch a person sees
    other = Remote(Git(person), "origin")
    assert other.fetch_task("t-1") == sha
    assert other.fetch_task("t-2") is None


def test_base_moves_with_its_receipt_in_one_push(hosts: tuple[Path, Path, Path]) -> None:
    remote, host, _ = hosts
    r, old, new = candidate(host, "checked: test passed on this tree")
    assert r.move_base("live", old, new, notes_ref=NOTES, notes_old=None).ok
    assert remote_ref(remote, "refs/heads/live") == new
    assert git(remote, "notes", f"--ref={NOTES}", "show", new) == "checked: test passed on this tree"


def test_a_persons_push_to_base_is_never_overwritten(hosts: tuple[Path, Path, Path]) -> None:
    remote, host, person = hosts
    r, old, new = candidate(host)
    theirs = commit(person, "person.txt", old)
    git(person, "push", "-q", "origin", f"{theirs}:refs/heads/live")
    result = r.move_base("live", old, new, notes_ref=NOTES, notes_old=None)
    assert result.status is PushStatus.MOVED, result.detail
    assert remote_ref(remote, "refs/heads/live") == theirs
    assert remote_ref(remote, NOTES) is None  # atomic: the receipt did not go either
    assert r.fetch("refs/heads/live") == theirs  # the next attempt builds on what the person pushed


def test_receipts_moved_by_another_host_stop_the_base_too(hosts: tuple[Path, Path, Path]) -> None:
    remote, host, person = hosts
    r, old, new = candidate(host)
    # Another host landed a receipt (for a commit of its own) since this one read the notes.
    git(person, "notes", f"--ref={NOTES}", "add", "-m", "someone else's", old)
    git(person, "push", "-q", "origin", f"{NOTES}:{NOTES}")
    result = r.move_base("live", old, new, notes_ref=NOTES, notes_old=None)
    assert result.status is PushStatus.MOVED, result.detail
    assert remote_ref(remote, "refs/heads/live") == old


def test_a_remote_hook_that_refuses_is_told_apart_from_a_race(hosts: tuple[Path, Path, Path]) -> None:
    remote, host, _ = hosts
    hook = remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'protected: pushes to live need review' >&2\nexit 1\n")
    hook.chmod(0o755)
    r, old, new = candidate(host, receipt=None)
    result = r.move_base("live", old, new)
    assert result.status is PushStatus.REJECTED
    assert "pre-receive hook declined" in result.detail
    assert remote_ref(remote, "refs/heads/live") == old


def test_an_unreachable_remote_is_a_fault_not_an_exception(hosts: tuple[Path, Path, Path]) -> None:
    remote, host, _ = hosts
    r = Remote(Git(host), "origin")
    sha = commit(host, "a.txt")
    remote.rename(remote.with_name("gone.git"))
    result = r.publish("t-1", sha)
    assert result.status is PushStatus.UNREACHABLE and result.detail
    with pytest.raises(GitError):
        r.fetch("refs/heads/live")
    assert Remote(Git(host), "nowhere").problem() is not None
    assert Remote(Git(host), "--upload-pack=touch /tmp/x").problem() is not None
    assert Remote(Git(host), "origin").problem() is None


def test_a_bad_task_id_never_reaches_git(hosts: tuple[Path, Path, Path]) -> None:
    remote, host, _ = hosts
    sha = commit(host, "a.txt")
    for bad in ("../heads/live", "a b", "refs/heads/live", "-x"):
        with pytest.raises(TaskError):
            Remote(Git(host), "origin").publish(bad, sha)
    assert remote_ref(remote, "refs/heads/") is not None and remote_ref(remote, "refs/pipeline/") is None


def test_the_persons_pre_push_hook_is_not_run(hosts: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, host, _ = hosts
    planted = tmp_path / "hook-ran"
    hook = host / ".git" / "hooks" / "pre-push"
    hook.write_text(f"#!/bin/sh\ntouch {planted}\nexit 1\n")
    hook.chmod(0o755)
    assert Remote(Git(host), "origin").publish("t-1", commit(host, "a.txt")).ok
    assert not planted.exists()
    assert os.access(hook, os.X_OK)


def test_the_persons_ssh_command_is_used_and_a_remote_that_never_answers_is_unreachable(
    hosts: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, host, _ = hosts
    used = tmp_path / "ssh-used"
    git(host, "remote", "add", "far", "ssh://git.example.invalid/repo.git")
    # The person's own ssh command (their config): the runner's git must use it, not switch it off.
    git(host, "config", "core.sshCommand", f"touch {used}; false")
    result = Remote(Git(host), "far").publish("t-1", commit(host, "a.txt"))
    assert result.status is PushStatus.UNREACHABLE and used.exists()
    # One that hangs is given up on after the timeout, as unreachable, not raised.
    git(host, "config", "core.sshCommand", "sleep 30;")
    monkeypatch.setattr("runner.remote.REMOTE_TIMEOUT_SECONDS", 0.5)
    slow = Remote(Git(host), "far").publish("t-1", commit(host, "b.txt"))
    assert slow.status is PushStatus.UNREACHABLE and "timed out" in slow.detail


def test_reading_where_refs_point_fetches_nothing_and_names_exactly(hosts: tuple[Path, Path, Path]) -> None:
    remote, host, person = hosts
    theirs = commit(person, "p.txt")
    git(person, "push", "-q", "origin", f"{theirs}:refs/heads/x/live")  # the same tail, another ref
    r = Remote(Git(host), "origin")
    found = r.read("refs/heads/live", NOTES)
    assert found == {"refs/heads/live": remote_ref(remote, "refs/heads/live")}
    assert Git(host).rev(theirs) is None  # nothing fetched
    remote.rename(remote.with_name("gone.git"))
    with pytest.raises(GitError):
        r.read("refs/heads/live")
