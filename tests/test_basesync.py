"""Integrating through a git remote (`remote:`): base mirrors the remote's and lands there first.

Real git throughout: a bare remote in a temp dir, the runner's clone of it, and a person's clone
that pushes to it. The decision of what a look at the remote does is a pure table, tested first.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from phases.integrate import RECEIPTS, Candidate, build, land_chain
from phases.outcomes import IntegrateStatus
from runner import procs, receipts
from runner.basesync import AREA, Mirror, mirror
from runner.scheduler import Pipeline
from runner.state import Phase, RunStatus
from tests.conftest import git
from tests.loop_helpers import Sample, all_done, in_process, make_sample, stop, wait_for

# -- the decision, pure ------------------------------------------------------------------------

A, B = "a" * 40, "b" * 40


@pytest.mark.parametrize(
    ("local", "remote", "local_in_remote", "remote_in_local", "expected"),
    [
        (A, A, False, False, Mirror.SAME),
        (A, B, True, False, Mirror.FAST_FORWARD),  # another host or a person pushed: follow
        (None, B, False, False, Mirror.FAST_FORWARD),  # no local base (deleted): take the remote's
        (A, B, False, True, Mirror.AHEAD),  # commits here the remote lacks: never pushed for a person
        (A, B, False, False, Mirror.REWRITTEN),  # force-pushed: never followed, never overwritten
        (A, None, False, False, Mirror.MISSING),
    ],
)
def test_what_a_look_at_the_remote_does(
    local: str | None, remote: str | None, local_in_remote: bool, remote_in_local: bool, expected: Mirror
) -> None:
    assert mirror(local, remote, local_in_remote=local_in_remote, remote_in_local=remote_in_local) is expected


# -- end to end: runner processes, a bare remote, a person ----------------------------------------


def remote_sample(tmp_path: Path, **config: object) -> tuple[Sample, Path]:
    """The sample repository with base on a bare remote `origin` it was cloned to."""
    s = make_sample(tmp_path, remote="origin", **config)
    remote = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(s.repo), str(remote))
    git(s.repo, "remote", "add", "origin", str(remote))
    return s, remote


def trailers(repo: Path) -> list[str]:
    out = git(repo, "log", "--format=%(trailers:key=Task-Id,valueonly)", "live")
    return [line.strip() for line in out.splitlines() if line.strip()]


def noted(repo: Path) -> set[str]:
    """The commits that carry a receipt in ``repo``."""
    listed = git(repo, "for-each-ref", RECEIPTS)
    if not listed:
        return set()
    return {line.split()[1] for line in git(repo, "notes", f"--ref={RECEIPTS}", "list").splitlines()}


def charged(s: Sample, task_id: str) -> int:
    """Failures counted against the task."""
    return int(s.rows("SELECT COUNT(*) FROM pipeline_runs WHERE task_id=? AND status='failure'", (task_id,))[0][0])


def fault(s: Sample, area: str) -> str | None:
    for f in s.status()["faults"]:
        if f["area"] == area:
            return str(f["message"])
    return None


def test_tasks_land_on_the_remotes_base_with_their_receipts(tmp_path: Path) -> None:
    s, remote = remote_sample(tmp_path)
    s.plan({"t-1": [{"files": {"a.txt": "one\n"}}], "t-2": [{"files": {"b.txt": "two\n"}}]})
    s.add("first")
    s.add("second")
    s.run_once_until(all_done(2))

    assert sorted(trailers(remote)) == ["t-1", "t-2"]
    assert git(s.repo, "rev-parse", "live") == git(remote, "rev-parse", "live")  # the local base mirrors it
    landed = git(remote, "rev-list", "live", "--not", "live~2").split()
    assert noted(remote) == set(landed), "each landed commit carries its receipt on the remote"
    for sha in landed:
        data = receipts.parse(git(remote, "notes", f"--ref={RECEIPTS}", "show", sha))
        assert data is not None and data["task"] in ("t-1", "t-2")
    # The tasks' published commits are gone from the remote once they landed; no branch was made.
    assert git(remote, "for-each-ref", "--format=%(refname)").splitlines() == ["refs/heads/live", RECEIPTS]
    assert git(s.repo, "status", "--porcelain", "--untracked-files=no") == ""  # the checkout followed


def test_a_persons_push_to_the_remote_during_integration_is_kept_and_the_task_lands_on_it(tmp_path: Path) -> None:
    # Not cached: the check must run at integration, where the person pushes meanwhile.
    s, remote = remote_sample(tmp_path, phases={"check": {"run": [["python3", "check.py"]], "cache": False}})
    person = tmp_path / "person"
    git(tmp_path, "clone", "-q", str(remote), str(person))
    hook = person / ".git" / "hooks" / "post-commit"
    hook.write_text("#!/bin/sh\nexec git push -q origin HEAD:refs/heads/live\n")
    hook.chmod(0o755)
    s.env["PUSH_FROM"] = str(person)  # check.py commits there once, during the integrate check
    s.plan({"t-1": [{"files": {"t1.txt": "mine\n", "PUSH_DURING_integrate": "x"}}]})
    s.add("task")
    s.run_once_until(all_done(1))

    log = git(remote, "log", "--format=%s", "live").splitlines()
    assert log == ["t-1: attempt 0", "A person's commit", "initial"]
    runs = s.rows("SELECT status, error_summary FROM pipeline_runs WHERE task_id='t-1' AND phase='integrate' "
                  "AND parent_id IS NULL")  # fmt: skip
    # The candidate on the old tip was refused by the remote and built again on the person's commit.
    assert [r[0] for r in runs] == ["cancelled", "success"] and runs[0][1].startswith("rebuilt: live moved")
    assert charged(s, "t-1") == 0
    assert git(s.repo, "rev-parse", "live") == git(remote, "rev-parse", "live")
    assert (s.repo / "person.md").exists() and (s.repo / "t1.txt").exists()  # the local checkout followed


def test_killed_between_the_push_and_the_bookkeeping_the_task_is_done_once(tmp_path: Path) -> None:
    s, remote = remote_sample(tmp_path)
    s.plan({"t-1": [{"files": {"a.txt": "one\n"}}]})
    s.add("task")
    s.run_once_until_killed("pushed")
    assert trailers(remote) == ["t-1"]  # on the remote's base...
    assert trailers(s.repo) == []  # ...and not yet here, nor recorded
    pushed = git(remote, "rev-parse", "live")

    # Restarted while the remote cannot be read: nothing is decided, nothing charged, no receipt lost.
    remote.rename(remote.with_name("away.git"))
    done = s.cli("run", "--once")
    assert done.returncode in (0, 3), done.stdout + done.stderr
    assert s.task("t-1")["status"] == "verified"
    assert fault(s, AREA) is not None
    remote.with_name("away.git").rename(remote)

    s.run_once_until(all_done(1))
    assert trailers(remote) == ["t-1"] and git(remote, "rev-parse", "live") == pushed  # landed once
    assert git(s.repo, "rev-parse", "live") == pushed
    assert noted(remote) == {pushed} and noted(s.repo) == {pushed}
    assert charged(s, "t-1") == 0
    assert s.rows("SELECT COUNT(*) FROM pipeline_runs WHERE status='running'") == [(0,)]


@pytest.mark.parametrize("point", ["before-swap", "receipt-attached", "swapped", "integrated"])
def test_killed_around_the_landing_each_task_lands_once_with_exactly_its_receipt(tmp_path: Path, point: str) -> None:
    s, remote = remote_sample(tmp_path)
    s.plan({"t-1": [{"files": {"a.txt": "one\n"}}], "t-2": [{"files": {"b.txt": "two\n"}}]})
    s.add("first")
    s.add("second")
    s.run_once_until_killed(point)
    s.run_once_until(all_done(2))
    assert sorted(trailers(remote)) == ["t-1", "t-2"]
    landed = set(git(remote, "rev-list", "live", "--not", "live~2").split())
    # No receipt for a candidate that never landed reaches the remote; none is lost.
    assert noted(remote) == landed and noted(s.repo) == landed
    assert git(s.repo, "rev-parse", "live") == git(remote, "rev-parse", "live")
    assert s.rows("SELECT COUNT(*) FROM pipeline_runs WHERE status='running'") == [(0,)]


def test_a_receipt_kept_while_the_remote_was_away_never_reaches_it_for_a_candidate_that_did_not_land(
    tmp_path: Path,
) -> None:
    s, remote = remote_sample(tmp_path)
    s.plan({"t-1": [{"files": {"a.txt": "one\n"}}]})
    s.add("task")
    s.run_once_until_killed("receipt-attached")  # a receipt on a candidate not yet pushed
    orphan = noted(s.repo)
    assert len(orphan) == 1
    # Restarted while the remote cannot be read: whether that candidate landed cannot be told.
    away = remote.with_name("away.git")
    remote.rename(away)
    s.cli("run", "--once")
    away.rename(remote)
    # A person's push meanwhile: the candidate is built again on it, and lands.
    person = tmp_path / "person"
    git(tmp_path, "clone", "-q", str(remote), str(person))
    (person / "p.md").write_text("p\n")
    git(person, "add", "p.md")
    git(person, "-c", "user.name=p", "-c", "user.email=p@x", "commit", "-q", "-m", "person")
    git(person, "push", "-q", "origin", "HEAD:refs/heads/live")
    s.run_once_until(all_done(1))
    landed = set(git(remote, "rev-list", "live", "--not", "live~1").split())
    assert noted(remote) == landed and noted(s.repo) == landed and not orphan & landed


def test_a_remote_that_refuses_the_push_pauses_integration_uncharged(tmp_path: Path) -> None:
    s, remote = remote_sample(tmp_path)
    hook = remote / "hooks" / "pre-receive"
    hook.write_text(
        "#!/bin/sh\nwhile read old new ref; do\n"
        '  [ "$ref" = refs/heads/live ] && { echo "live is protected" >&2; exit 1; }\ndone\nexit 0\n'
    )
    hook.chmod(0o755)
    before = git(remote, "rev-parse", "live")
    s.plan({"t-1": [{"files": {"a.txt": "one\n"}}]})
    s.add("task")
    s.run_once_until(lambda d: any(f["area"] == "integrate" for f in d["faults"]))

    assert "rejected" in (fault(s, "integrate") or "") and "live is protected" in (fault(s, "integrate") or "")
    assert s.task("t-1")["status"] == "verified" and charged(s, "t-1") == 0
    assert git(remote, "rev-parse", "live") == before and git(s.repo, "rev-parse", "live") == before
    assert noted(remote) == set() and noted(s.repo) == set()  # no receipt for what did not land

    hook.unlink()
    s.run_once_until(all_done(1))
    assert trailers(remote) == ["t-1"] and fault(s, "integrate") is None


def test_a_daemon_asks_an_unreachable_remote_again_only_as_its_faults_delay_allows(tmp_path: Path) -> None:
    # With a lease of 1 s the runner looks at the integration lease three times a second; a look
    # that takes the lease must not ask the remote each time, past the fault's growing delay.
    s, remote = remote_sample(tmp_path, interval=1, lease=1)
    remote.rename(remote.with_name("away.git"))
    s.plan({"t-1": [{"files": {"a.txt": "one\n"}}]})
    s.add("task")
    proc = s.start()
    try:
        wait_for(lambda: s.status()["verified"] == 1, 60, proc)
        time.sleep(6)
        faults = {f["area"]: f for f in s.status()["faults"]}
    finally:
        stop(proc)
    # Asked at 0, ~1, ~3 (and ~7) s: the delays 1, 2, 4 s; not some eighteen times.
    assert AREA in faults and faults[AREA]["count"] <= 5, faults
    assert s.task("t-1")["status"] == "verified" and charged(s, "t-1") == 0


def test_an_unreachable_remote_pauses_integration_uncharged_until_it_answers(tmp_path: Path) -> None:
    s, remote = remote_sample(tmp_path)
    away = remote.with_name("away.git")
    remote.rename(away)
    s.plan({"t-1": [{"files": {"a.txt": "one\n"}}]})
    s.add("task")
    s.run_once_until(lambda d: d["verified"] == 1)
    for _ in range(2):  # more runs change nothing: the fault holds, it does not loop or charge
        done = s.cli("run", "--once")
        assert done.returncode in (0, 3), done.stdout + done.stderr
    message = fault(s, AREA)
    assert message is not None and "cannot be read" in message
    assert s.task("t-1")["status"] == "verified" and charged(s, "t-1") == 0
    (queued,) = s.status()["queue"]
    assert (queued["id"], queued["why"], queued["fault"]) == ("t-1", "fault", AREA)  # status says why it waits
    assert s.rows("SELECT COUNT(*) FROM pipeline_runs WHERE phase='integrate'") == [(0,)]

    away.rename(remote)
    s.run_once_until(all_done(1))
    assert trailers(remote) == ["t-1"] and fault(s, AREA) is None


def test_a_force_pushed_remote_base_is_a_fault_and_is_never_overwritten(tmp_path: Path) -> None:
    s, remote = remote_sample(tmp_path)
    s.plan({"t-1": [{"files": {"a.txt": "one\n"}}], "t-2": [{"files": {"b.txt": "two\n"}}]})
    s.add("first")
    s.run_once_until(all_done(1))
    # A person rewrites the remote's base: it no longer holds what the runner has here.
    person = tmp_path / "person"
    git(tmp_path, "clone", "-q", str(remote), str(person))
    git(person, "reset", "-q", "--hard", "HEAD~1")
    (person / "other.md").write_text("rewritten\n")
    git(person, "add", "other.md")
    git(person, "commit", "-q", "-m", "rewritten history")
    git(person, "push", "-q", "--force", "origin", "live")
    forced, here = git(remote, "rev-parse", "live"), git(s.repo, "rev-parse", "live")
    s.add("second")
    s.run_once_until(lambda d: d["verified"] == 1)

    message = fault(s, AREA)
    assert message is not None and "force-pushed" in message
    assert git(remote, "rev-parse", "live") == forced and git(s.repo, "rev-parse", "live") == here
    assert charged(s, "t-2") == 0
    # Its commit was published as soon as it was brought in, where another host finds it.
    ((dev,),) = s.rows("SELECT after_sha FROM pipeline_runs WHERE task_id='t-2' AND phase='dev'")
    assert git(remote, "rev-parse", "refs/pipeline/tasks/t-2") == dev

    # The person brings base here to the remote's: the fault clears, the task lands on it.
    git(s.repo, "reset", "-q", "--hard", forced)
    s.run_once_until(lambda d: d["done"] == 2)
    assert git(remote, "log", "--format=%s", "live").splitlines()[1] == "rewritten history"
    assert fault(s, AREA) is None


def test_a_remote_the_repository_lacks_is_a_config_error_naming_the_key_and_file(tmp_path: Path) -> None:
    s = make_sample(tmp_path, remote="upstream")
    done = s.cli("run", "--once")
    assert done.returncode != 0
    assert "key 'remote'" in done.stderr and str(s.repo / "pipeline.yaml") in done.stderr
    assert "upstream" in done.stderr
    assert not (s.root / "state.db").exists() or s.rows("SELECT COUNT(*) FROM pipeline_runs") == [(0,)]


# -- in-process: another host's landing, as base's watch sees it ---------------------------------


def two_hosts(tmp_path: Path) -> tuple[Pipeline, Path, Path, Path]:
    """A pipeline on a repository with remote `origin` (a bare repository), and another host's clone."""
    config, _store, db = in_process(
        tmp_path, "remote: origin\nagent: {preset: command, command: ['true']}\nphases: {test: {run: [['true']]}}\n"
    )
    repo = config.repo_path
    remote = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(remote))
    git(repo, "remote", "add", "origin", str(remote))
    other = tmp_path / "other-host"
    git(tmp_path, "clone", "-q", str(remote), str(other))
    return Pipeline(config, db, once=True), repo, remote, other


def test_receipts_here_and_on_the_remote_are_merged_and_pushed_together(tmp_path: Path) -> None:
    pipeline, repo, remote, other = two_hosts(tmp_path)
    try:
        sync = pipeline.basesync
        assert sync is not None
        initial = git(repo, "rev-parse", "live")
        git(repo, "notes", f"--ref={RECEIPTS}", "add", "-m", "landed here before the remote", initial)
        (other / "o.txt").write_text("o\n")
        git(other, "add", "-A")
        git(other, "commit", "-q", "-m", "landed elsewhere")
        theirs = git(other, "rev-parse", "HEAD")
        git(other, "notes", f"--ref={RECEIPTS}", "add", "-m", "landed elsewhere", theirs)
        git(other, "push", "-q", "origin", "live", f"{RECEIPTS}:{RECEIPTS}")
        assert sync.sync() and git(repo, "rev-parse", "live") == theirs
        assert noted(repo) == {initial, theirs}
        # The next landing takes both to the remote, in the one push that moves base.
        new = git(repo, "commit-tree", "-p", theirs, "-m", "a task", f"{theirs}^{{tree}}")
        git(repo, "notes", f"--ref={RECEIPTS}", "add", "-m", "this landing", new)
        assert sync.push(theirs, new).ok
        assert git(remote, "rev-parse", "live") == new and noted(remote) == {initial, theirs, new}
        # Another candidate on the tip that was replaced: base moved meanwhile, nothing changes.
        late = git(repo, "commit-tree", "-p", theirs, "-m", "a late task", f"{theirs}^{{tree}}")
        assert sync.push(theirs, late).status.value == "moved"
        assert git(remote, "rev-parse", "live") == new
        # The same push again (an answer lost on the way): what it asked for is already there.
        assert sync.push(theirs, new).ok
    finally:
        pipeline.close()


def test_a_look_where_nothing_moved_asks_the_remote_once_and_git_little_and_one_that_did_fetches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline, repo, _remote, other = two_hosts(tmp_path)
    try:
        sync = pipeline.basesync
        assert sync is not None and sync.sync()
        asked: list[str] = []
        real = procs.run

        def counting(argv: list[str], **kwargs: Any) -> procs.ProcResult:
            asked.append(next(a for a in argv[1:] if not a.startswith("-") and "=" not in a))
            return real(argv, **kwargs)

        monkeypatch.setattr(procs, "run", counting)
        assert sync.sync() and not sync.moved
        assert asked.count("ls-remote") == 1 and "fetch" not in asked and len(asked) <= 2, asked
        # Another host lands: the next look fetches it and brings base here forward.
        (other / "o.txt").write_text("o\n")
        git(other, "add", "-A")
        git(other, "commit", "-q", "-m", "landed elsewhere")
        git(other, "push", "-q", "origin", "live")
        asked.clear()
        assert sync.sync() and sync.moved and "fetch" in asked
        assert git(repo, "rev-parse", "live") == git(other, "rev-parse", "HEAD")
    finally:
        pipeline.close()


def test_commits_another_host_landed_with_receipts_are_not_taken_for_a_persons(tmp_path: Path) -> None:
    pipeline, repo, _remote, other = two_hosts(tmp_path)
    try:
        assert pipeline.basesync is not None and pipeline.basesync.sync()
        assert not pipeline.base_suspect()

        def land_elsewhere(task_id: str, receipt: bool) -> str:
            (other / f"{task_id}.txt").write_text(task_id)
            git(other, "add", "-A")
            git(other, "commit", "-q", "-m", f"{task_id}\n\nTask-Id: {task_id}")
            sha = git(other, "rev-parse", "HEAD")
            if receipt:
                text = receipts.render({"task": task_id, "patchset": 1, "base": "live", "checks": []})
                git(other, "notes", f"--ref={RECEIPTS}", "add", "-m", text, sha)
            git(other, "push", "-q", "origin", "live", *([f"{RECEIPTS}:{RECEIPTS}"] if receipt else []))
            return sha

        landed = land_elsewhere("t-0", receipt=True)
        assert pipeline.integrator.sync_base() is False  # t-0 has no candidate recorded here
        assert git(repo, "rev-parse", "live") == landed
        assert not pipeline.base_suspect(), "a runner's landing elsewhere, proven by its receipt"
        assert pipeline.preflight.green_tip() == landed  # its checks passed there: not run again here
        assert git(repo, "status", "--porcelain", "--untracked-files=no") == ""  # the checkout followed
        # One naming a task of this queue without a receipt: something else moved base.
        unproven = land_elsewhere("t-1", receipt=False)
        assert pipeline.integrator.sync_base() is False
        assert pipeline.base_suspect()
        assert pipeline.preflight.green_tip() != unproven
    finally:
        pipeline.close()


def published_elsewhere(other: Path, task_id: str, message: str) -> str:
    """A commit made on the other host's clone and published there for ``task_id``; its sha."""
    (other / f"{task_id}.txt").write_text(f"{message}\n")
    git(other, "add", "-A")
    git(other, "commit", "-q", "-m", message)
    sha = git(other, "rev-parse", "HEAD")
    git(other, "push", "-q", "origin", f"+{sha}:refs/pipeline/tasks/{task_id}")
    return sha


def test_a_task_commit_verified_elsewhere_is_fetched_exactly(tmp_path: Path) -> None:
    pipeline, repo, remote, other = two_hosts(tmp_path)
    first = published_elsewhere(other, "t-0", "patchset 1")
    try:
        sync = pipeline.basesync
        assert sync is not None
        assert sync.fetch_commit("t-0", first) == first
        assert git(repo, "cat-file", "-t", first) == "commit"
        # A later patchset published since: the one that was verified is not that tip.
        published_elsewhere(other, "t-0", "patchset 2")
        assert sync.fetch_commit("t-1", first) is None
        assert sync.fetch_commit("t-0", "c" * 40) is None
        # Landed: what this host read of it goes, with the published commit on the remote.
        tracking = "refs/pipeline/remote/pipeline/tasks/t-0"
        assert git(repo, "for-each-ref", "--format=%(refname)", tracking) == tracking
        sync.retire("t-0")
        sync.publish_pending()
        assert git(repo, "for-each-ref", tracking) == ""
        assert git(remote, "for-each-ref", "refs/pipeline/tasks/t-0") == ""
        shutil.rmtree(remote)
        assert sync.fetch_commit("t-0", first) is None and not sync.reachable
        assert pipeline.faults.get(AREA) is not None
    finally:
        pipeline.close()



# The integrate phase: the bottom candidate (base plus a.txt alone) is checked slowest, so that the
# two above it have passed by the time it has.
SLOW_BOTTOM_GATE = """\
import pathlib, time
time.sleep(0.1 if pathlib.Path("b.txt").exists() else 1.5)
"""


def slow_bottom_sample(tmp_path: Path) -> tuple[Sample, Path]:
    """A sample on a remote whose tasks t-1, t-2, t-3 add a.txt, b.txt, c.txt, stacked three deep,
    the bottom candidate checked slowest (SLOW_BOTTOM_GATE): the three land in one move."""
    s = make_sample(
        tmp_path, remote="origin", concurrency=3, integrate={"window": 3},
        phases={"verify": {"run": [["python3", "check.py"]], "on": ["verify"]},
                "gate": {"run": [["python3", "gate.py"]], "on": ["integrate"]}},
    )  # fmt: skip
    (s.repo / "gate.py").write_text(SLOW_BOTTOM_GATE)
    git(s.repo, "add", "gate.py")
    git(s.repo, "commit", "-q", "-m", "gate")
    remote = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(s.repo), str(remote))
    git(s.repo, "remote", "add", "origin", str(remote))
    s.plan({f"t-{n}": [{"files": {f"{name}.txt": f"{n}\n"}}] for n, name in ((1, "a"), (2, "b"), (3, "c"))})
    return s, remote


def test_candidates_that_passed_together_land_in_one_push_each_with_its_receipt(tmp_path: Path) -> None:
    s, remote = slow_bottom_sample(tmp_path)
    pushes = tmp_path / "pushes.log"
    hook = remote / "hooks" / "post-receive"
    hook.write_text(f"#!/bin/sh\ncat >> {pushes}\n")
    hook.chmod(0o755)
    for title in ("one", "two", "three"):
        s.add(title)
    s.run_once_until_verified(3)
    before = git(remote, "rev-parse", "live")
    s.run_once_until(all_done(3))

    assert trailers(remote)[:3] == ["t-3", "t-2", "t-1"]
    moves = [line.split() for line in pushes.read_text().splitlines() if line.endswith(" refs/heads/live")]
    assert moves == [[before, git(remote, "rev-parse", "live"), "refs/heads/live"]]  # one push for the three
    landed = git(remote, "rev-list", "live", "--not", before).split()
    assert len(landed) == 3 and noted(remote) == set(landed)
    assert {receipts.parse(git(remote, "notes", f"--ref={RECEIPTS}", "show", sha))["task"]  # type: ignore[index]
            for sha in landed} == {"t-1", "t-2", "t-3"}  # fmt: skip


def test_the_commits_verified_elsewhere_come_in_one_exchange_and_those_landed_are_pruned(tmp_path: Path) -> None:
    pipeline, repo, remote, other = two_hosts(tmp_path)
    published = {task_id: published_elsewhere(other, task_id, task_id) for task_id in ("t-0", "t-1", "t-2")}
    try:
        sync = pipeline.basesync
        assert sync is not None
        for task_id, sha in published.items():  # verified on the other host
            row = pipeline.runs.start(task_id, Phase.VERIFY, 0)
            pipeline.runs.finish(row, RunStatus.SUCCESS, after_sha=sha)
        assert pipeline.integrator.verified_sha("t-0") == published["t-0"]
        # The others came with it: read with the remote gone, they need no exchange of their own.
        moved = tmp_path / "remote-away.git"
        remote.rename(moved)
        assert pipeline.integrator.verified_sha("t-1") == published["t-1"]
        assert pipeline.integrator.verified_sha("t-2") == published["t-2"] and sync.reachable
        moved.rename(remote)
        # Published by a host that landed it, then removed there: the next fetch drops what was read of it.
        git(remote, "update-ref", "-d", "refs/pipeline/tasks/t-2")
        assert sync.fetch_commit("t-3", "d" * 40) is None and sync.reachable
        tracked = git(repo, "for-each-ref", "--format=%(refname:lstrip=-1)", "refs/pipeline/remote/pipeline/tasks/")
        assert tracked.split() == ["t-0", "t-1"]
    finally:
        pipeline.close()


def test_one_ref_the_remote_cannot_serve_under_the_task_namespace_does_not_hide_the_others(tmp_path: Path) -> None:
    pipeline, _repo, remote, other = two_hosts(tmp_path)
    sha = published_elsewhere(other, "t-0", "t-0's work")
    # A ref written by hand, naming an object the remote does not have: the fetch of all fails.
    (remote / "refs" / "pipeline" / "tasks" / "junk").write_text("1234567890" * 4 + "\n")
    try:
        sync = pipeline.basesync
        assert sync is not None
        assert sync.fetch_commit("t-0", sha) == sha and sync.reachable
        assert pipeline.faults.get(AREA) is None
    finally:
        pipeline.close()


def test_a_commit_the_remote_refuses_does_not_hold_back_the_others_of_its_harvest(tmp_path: Path) -> None:
    pipeline, repo, remote, _other = two_hosts(tmp_path)
    hook = remote / "hooks" / "pre-receive"
    hook.write_text(
        "#!/bin/sh\nwhile read old new ref; do\n"
        '  [ "$ref" = refs/pipeline/tasks/t-1 ] && { echo "t-1 holds a secret" >&2; exit 1; }\ndone\nexit 0\n'
    )
    hook.chmod(0o755)
    try:
        sync = pipeline.basesync
        assert sync is not None
        for task_id in ("t-1", "t-2"):
            (repo / f"{task_id}.txt").write_text(f"{task_id}\n")
            git(repo, "add", "-A")
            git(repo, "commit", "-q", "-m", task_id)
            sync.publish(task_id, git(repo, "rev-parse", "HEAD"))
        sync.publish_pending()
        assert git(remote, "for-each-ref", "--format=%(refname)", "refs/pipeline/tasks/") == "refs/pipeline/tasks/t-2"
        assert set(sync.unpublished) == {"t-1"}  # tried again at the next look; t-2 is not
    finally:
        pipeline.close()


def test_a_kill_before_the_harvest_published_its_commits_publishes_them_at_the_next_start(tmp_path: Path) -> None:
    s, remote = remote_sample(tmp_path)
    s.plan({"t-1": [{"files": {"a.txt": "one\n"}}]})
    s.add("task")
    s.run_once_until_killed("dev-recorded")  # recorded, not yet published (the end of the harvest)
    assert git(remote, "for-each-ref", "refs/pipeline/tasks/") == ""
    s.run_once_until_verified(1)
    assert git(remote, "for-each-ref", "--format=%(refname)", "refs/pipeline/tasks/") == "refs/pipeline/tasks/t-1"
    s.run_once_until(all_done(1))
    assert trailers(remote)[:1] == ["t-1"] and charged(s, "t-1") == 0


@pytest.mark.parametrize("point", ["before-swap@2", "receipt-attached@1", "pushed@1", "integrated@2"])
def test_a_kill_in_a_landing_of_three_at_once_lands_each_once_with_its_receipt(tmp_path: Path, point: str) -> None:
    s, remote = slow_bottom_sample(tmp_path)
    for title in ("one", "two", "three"):
        s.add(title)
    s.run_once_until_verified(3)
    before = git(remote, "rev-parse", "live")
    s.run_once_until_killed(point, limit=3)
    s.run_once_until(all_done(3), limit=10)
    assert sorted(trailers(remote)[:3]) == ["t-1", "t-2", "t-3"] and len(trailers(remote)) == 3
    landed = set(git(remote, "rev-list", "live", "--not", before).split())
    assert len(landed) == 3 and noted(remote) == landed and noted(s.repo) == landed
    assert git(s.repo, "rev-parse", "live") == git(remote, "rev-parse", "live")
    assert all(s.task(t)["patchset"] == 0 and charged(s, t) == 0 for t in ("t-1", "t-2", "t-3"))
    assert s.rows("SELECT COUNT(*) FROM pipeline_runs WHERE status='running'") == [(0,)]


def test_the_commits_of_one_harvest_are_published_together(tmp_path: Path) -> None:
    pipeline, repo, remote, _other = two_hosts(tmp_path)
    try:
        sync = pipeline.basesync
        assert sync is not None
        shas = {}
        for task_id in ("t-1", "t-2"):
            (repo / f"{task_id}.txt").write_text(f"{task_id}\n")
            git(repo, "add", "-A")
            git(repo, "commit", "-q", "-m", task_id)
            shas[task_id] = git(repo, "rev-parse", "HEAD")
            sync.publish(task_id, shas[task_id])
        assert git(remote, "for-each-ref", "refs/pipeline/tasks/") == ""  # not before the harvest ends
        sync.publish_pending()
        assert {t: git(remote, "rev-parse", f"refs/pipeline/tasks/{t}") for t in shas} == shas
        assert sync.unpublished == {}
    finally:
        pipeline.close()


def test_a_push_that_went_through_unheard_keeps_its_receipt_and_its_task_lands_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline, repo, remote, _other = two_hosts(tmp_path)
    try:
        sync = pipeline.basesync
        assert sync is not None and sync.sync()
        tip = git(repo, "rev-parse", "live")
        (repo / "t.txt").write_text("t\n")
        git(repo, "checkout", "-q", "-b", "task")
        git(repo, "add", "t.txt")
        git(repo, "commit", "-q", "-m", "the task")
        git(repo, "checkout", "-q", "live")
        built = build(pipeline.git, "live", tip, git(repo, "rev-parse", "task"), task_id="t-0", secrets={})
        assert isinstance(built, Candidate)
        # The remote takes the push, then answers too late: the runner hears nothing.
        hook = remote / "hooks" / "post-receive"
        hook.write_text("#!/bin/sh\nsleep 2\n")
        hook.chmod(0o755)
        monkeypatch.setattr("runner.remote.REMOTE_TIMEOUT_SECONDS", 0.5)
        results = land_chain(pipeline.git, "live", [built], None, receipt=lambda sha: "receipt", push=sync.push)
        assert results is not None and len(results) == 1
        assert results[0].status is IntegrateStatus.FAULT and "unreachable" in results[0].detail
        assert git(repo, "rev-parse", "live") == tip  # nothing moved here
        assert git(remote, "rev-parse", "live") == built.sha and noted(remote) == {built.sha}
        hook.unlink()
        # The next look finds it there, with its receipt, which no removal of ours takes back.
        assert sync.sync() and git(repo, "rev-parse", "live") == built.sha
        assert noted(repo) == {built.sha}
    finally:
        pipeline.close()


def test_commits_made_on_base_here_and_not_pushed_hold_landing_until_pushed(tmp_path: Path) -> None:
    pipeline, repo, remote, _other = two_hosts(tmp_path)
    try:
        sync = pipeline.basesync
        assert sync is not None and sync.sync()
        (repo / "mine.md").write_text("a person's commit, not pushed yet\n")
        git(repo, "add", "mine.md")
        git(repo, "commit", "-q", "-m", "mine")
        mine = git(repo, "rev-parse", "live")
        assert not sync.sync() and not pipeline.integrator.may_move()
        held = pipeline.faults.get(AREA)
        assert held is not None and "lacks" in held.message and "git push origin live" in held.message
        assert git(remote, "rev-parse", "live") != mine  # never pushed for the person
        git(repo, "push", "-q", "origin", "live")
        assert not sync.sync()  # waits out the fault's delay: the remote is not asked every cycle
        assert sync.sync(now=True) and pipeline.faults.get(AREA) is None
        # A remote without base at all is a fault too, not a crash.
        git(remote, "update-ref", "-d", "refs/heads/live")
        assert not sync.sync(now=True)
        missing = pipeline.faults.get(AREA)
        assert missing is not None and "has no branch 'live'" in missing.message
        assert git(repo, "rev-parse", "live") == mine
    finally:
        pipeline.close()
