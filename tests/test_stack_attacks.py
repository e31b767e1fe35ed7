"""End to end: attacks on the integration stack. Kills at each point of a landing, conflicts and
empty changes that only exist against the candidate below, people and checks moving base, the
notes, tasks changed from another process, odd windows and configs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import git
from tests.loop_helpers import Sample, all_done, make_sample, wait_for
from tests.test_stack import gate_log, integrate_rows, side_by_side, stacked, three_verified

# The integrate-only gate of tests/test_stack.py, plus one hostile act, done once (HOSTILE):
# reset:<sha> moves base back there, amend rewrites base's tip (a force-push), delete deletes
# base, dirty leaves an uncommitted edit in base's checkout, land-self moves base to the bottom
# candidate being checked, notes deletes the receipts' notes ref.
HOSTILE_GATE_PY = """\
import os, pathlib, subprocess, sys, time
here = pathlib.Path.cwd()
def git(*args, cwd=here):
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
tree = git("rev-parse", "HEAD^{tree}")
with open(os.environ["GATE_LOG"], "a") as log:
    log.write(f"start {tree} {time.time()}\\n")
hostile = os.environ.get("HOSTILE", "")
marker = pathlib.Path(os.environ["FAKE_STATE"]) / "hostile-done"
repo = os.environ.get("REPO", "")
# land-self acts in the bottom candidate only (base + t-1), whichever check starts first.
bottom = (here / "t-1.txt").exists() and not (here / "t-2.txt").exists()
if hostile and not marker.exists() and (hostile != "land-self" or bottom):
    marker.write_text("yes")
    if hostile.startswith("reset:"):
        git("reset", "-q", "--hard", hostile.split(":", 1)[1], cwd=repo)
    elif hostile == "delete":
        git("update-ref", "-d", "refs/heads/live", cwd=repo)
    elif hostile == "land-self":
        git("update-ref", "refs/heads/live", git("rev-parse", "HEAD"), cwd=repo)
    elif hostile == "dirty":
        with open(os.path.join(repo, "README.md"), "a") as readme:
            readme.write("a person's edit, not committed\\n")
    elif hostile == "amend":
        git("-c", "user.name=x", "-c", "user.email=x@x", "commit", "-q", "--amend", "-m", "gate, amended", cwd=repo)
    elif hostile == "notes":
        git("update-ref", "-d", "refs/notes/pipeline", cwd=repo)
time.sleep(float(os.environ.get("GATE_SLEEP", "0.5")))
failed = (here / "GATE_FAIL").exists()
with open(os.environ["GATE_LOG"], "a") as log:
    log.write(f"{'fail' if failed else 'pass'} {tree} {time.time()}\\n")
sys.exit(1 if failed else 0)
"""


def hostile(tmp_path: Path, window: int = 3, **config: object) -> Sample:
    """A sample whose integrate phase is the hostile gate."""
    s = stacked(tmp_path, window, HOSTILE_GATE_PY, **config)
    s.env["REPO"] = str(s.repo)
    return s


def passed_trees(tmp_path: Path) -> set[str]:
    return {tree for kind, tree, _ in gate_log(tmp_path) if kind == "pass"}


def runner_commits(s: Sample) -> list[tuple[str, str]]:
    """(tree, trailer) of every commit on base that carries a Task-Id trailer."""
    out = git(s.repo, "log", "--format=%T %(trailers:key=Task-Id,valueonly,separator=)", "live")
    return [(w[0], w[1]) for w in (line.split() for line in out.splitlines()) if len(w) == 2]


def assert_each_landed_once_on_checked_trees(s: Sample, tmp_path: Path, tasks: list[str]) -> None:
    """Each task is on base exactly once, and every task commit's tree passed the gate."""
    commits = runner_commits(s)
    assert sorted(t for _, t in commits) == sorted(tasks), commits
    assert {tree for tree, _ in commits} <= passed_trees(tmp_path)


def notes_on_unlanded(s: Sample) -> list[str]:
    """Receipts attached to commits that are not on base."""
    done = subprocess.run(
        ["git", "notes", "--ref=refs/notes/pipeline", "list"], cwd=s.repo, capture_output=True, text=True
    )
    annotated = [line.split()[1] for line in done.stdout.splitlines() if line.strip()]
    return [
        sha for sha in annotated
        if subprocess.run(["git", "merge-base", "--is-ancestor", sha, "live"], cwd=s.repo).returncode != 0
    ]  # fmt: skip


# -- kills at every point of a stack of three ---------------------------------------------------


@pytest.mark.parametrize(
    # Candidates whose checks have passed land together (one move of base), so a landing is
    # reached once per move and before-swap once per candidate of it.
    "point", ["integrate-started@2", "integrate-started@3", "before-swap@2", "receipt-attached@1",
              "swapped@1", "integrated@2"],
)  # fmt: skip
def test_a_kill_at_each_point_of_a_stack_lands_each_task_once_on_a_checked_tree(tmp_path: Path, point: str) -> None:
    s = hostile(tmp_path)
    s.env["GATE_SLEEP"] = "0.2"
    three_verified(s)
    s.run_once_until_killed(point, limit=3)
    s.run_once_until(all_done(3))
    assert_each_landed_once_on_checked_trees(s, tmp_path, ["t-1", "t-2", "t-3"])
    assert s.trailers() == ["t-3", "t-2", "t-1"]
    assert notes_on_unlanded(s) == []
    for task_id in ("t-1", "t-2", "t-3"):
        assert s.task(task_id)["patchset"] == 0  # a kill is never charged to a task
    assert not (s.root / "integration").exists() or list((s.root / "integration").iterdir()) == []
    assert git(s.repo, "status", "--porcelain", "--untracked-files=no") == ""


# -- conflicts and empty changes that exist only against the candidate below -------------------


def test_a_change_conflicting_only_with_a_failing_task_below_lands(tmp_path: Path) -> None:
    s = hostile(tmp_path)
    s.plan({
        "t-1": [{"files": {"shared.txt": "one\n", "GATE_FAIL": "x"}}],
        "t-2": [{"files": {"shared.txt": "two\n"}}],
        "t-3": [{"files": {"t3.txt": "three\n"}}],
    })  # fmt: skip
    three_verified(s)
    assert s.cli("run", "--once").returncode == 0
    # t-2 conflicts with t-1 only; t-1 failed its gate, so t-2 was never rejected.
    assert s.task("t-2")["status"] == "done" and s.task("t-2")["patchset"] == 0
    assert s.task("t-1")["status"] == "open"
    assert "failure" not in [r[0] for r in integrate_rows(s, "t-2")]
    assert git(s.repo, "show", "live:shared.txt") == "two"
    assert_each_landed_once_on_checked_trees(s, tmp_path, ["t-2", "t-3"])


def test_a_change_conflicting_with_a_landed_task_below_is_rejected_as_a_conflict(tmp_path: Path) -> None:
    s = hostile(tmp_path)
    s.plan({
        "t-1": [{"files": {"shared.txt": "one\n"}}],
        "t-2": [{"files": {"shared.txt": "two\n"}}],
        "t-3": [{"files": {"t3.txt": "three\n"}}],
    })  # fmt: skip
    three_verified(s)
    assert s.cli("run", "--once").returncode == 0
    assert s.task("t-1")["status"] == "done" and s.task("t-3")["status"] == "done"
    rejected = s.task("t-2")
    assert rejected["status"] == "open" and rejected["patchset"] == 1
    assert any("integration conflict" in c["body"] for c in rejected["comments"])
    rows = integrate_rows(s, "t-2")
    assert [r[0] for r in rows] == ["failure"] and "conflicts" in rows[0][1]
    assert_each_landed_once_on_checked_trees(s, tmp_path, ["t-1", "t-3"])


def test_a_change_empty_only_on_a_failing_task_below_lands(tmp_path: Path) -> None:
    s = hostile(tmp_path)
    s.plan({
        "t-1": [{"files": {"shared.txt": "same\n", "GATE_FAIL": "x"}}],
        "t-2": [{"files": {"shared.txt": "same\n"}}],
        "t-3": [{"files": {"t3.txt": "three\n"}}],
    })  # fmt: skip
    three_verified(s)
    assert s.cli("run", "--once").returncode == 0
    assert s.task("t-2")["status"] == "done" and s.task("t-2")["patchset"] == 0
    assert s.task("t-1")["status"] == "open"
    assert_each_landed_once_on_checked_trees(s, tmp_path, ["t-2", "t-3"])


# -- people and checks moving base --------------------------------------------------------------


@pytest.mark.parametrize("act", ["reset", "amend"])
def test_a_person_moving_base_backwards_or_force_pushing_during_a_stack_charges_no_task(
    tmp_path: Path, act: str
) -> None:
    s = hostile(tmp_path)
    gate_commit = git(s.repo, "rev-parse", "live")
    (s.repo / "extra.md").write_text("to be dropped\n")
    git(s.repo, "add", "extra.md")
    git(s.repo, "commit", "-q", "-m", "extra")
    three_verified(s)
    s.env["HOSTILE"] = f"reset:{gate_commit}" if act == "reset" else "amend"
    s.run_once_until(all_done(3), limit=10)
    # Merging a commit made on the dropped history would bring it back: each task whose commit was
    # made there is developed again on the rewritten base, uncharged, and lands once.
    person = "gate" if act == "reset" else "gate, amended"
    assert s.base_log()[3] == person and "extra" not in s.base_log()
    assert_each_landed_once_on_checked_trees(s, tmp_path, ["t-1", "t-2", "t-3"])
    for task_id in ("t-1", "t-2", "t-3"):
        rows = integrate_rows(s, task_id)
        assert "failure" not in [status for status, _ in rows]  # nothing charged
        assert s.rows("SELECT COUNT(*) FROM pipeline_runs WHERE task_id = ? AND status = 'failure' AND parent_id IS NULL", (task_id,)) == [(0,)]
    rewritten = [e for t in ("t-1", "t-2", "t-3") for _, e in integrate_rows(s, t) if "was rewritten" in e]
    assert rewritten, "no task was told base was rewritten"


def test_a_dirty_base_checkout_appearing_during_a_stack_holds_it_uncharged_until_cleaned(tmp_path: Path) -> None:
    s = hostile(tmp_path)
    three_verified(s)
    s.env["HOSTILE"] = "dirty"
    done = s.cli("run", "--once", timeout=60)
    # Documented: `run --once` exits 3 only for needs help or a fault; a held integration is listed.
    assert done.returncode == 0, done.stdout + done.stderr
    assert "uncommitted changes (README.md)" in done.stdout + done.stderr
    doc = s.status()
    assert doc["verified"] == 3 and [h["id"] for h in doc["held_integrations"]] == ["t-1"]
    assert "a person's edit" in (s.repo / "README.md").read_text()  # the person's edit is kept
    for task_id in ("t-1", "t-2", "t-3"):
        assert s.task(task_id)["patchset"] == 0
        assert "failure" not in [r[0] for r in integrate_rows(s, task_id)]
    git(s.repo, "checkout", "--", "README.md")
    s.run_once_until(all_done(3), limit=5)
    assert_each_landed_once_on_checked_trees(s, tmp_path, ["t-1", "t-2", "t-3"])
    assert git(s.repo, "status", "--porcelain", "--untracked-files=no") == ""


def test_a_check_deleting_the_receipts_ref_mid_stack_does_not_stop_landing(tmp_path: Path) -> None:
    s = hostile(tmp_path, window=1)
    s.env["GATE_SLEEP"] = "0.2"
    three_verified(s)
    s.env["HOSTILE"] = "notes"
    assert s.cli("run", "--once").returncode == 0
    assert s.trailers() == ["t-3", "t-2", "t-1"]
    assert notes_on_unlanded(s) == []
    assert '"task": "t-3"' in git(s.repo, "notes", "--ref=refs/notes/pipeline", "show", "live")


def test_a_person_deleting_base_during_a_stack_charges_no_task_and_the_run_ends(tmp_path: Path) -> None:
    s = hostile(tmp_path)
    gate_commit = git(s.repo, "rev-parse", "live")
    three_verified(s)
    s.env["HOSTILE"] = "delete"
    done = s.cli("run", "--once", timeout=60)
    # The run ends, asking for attention, and says why: before, it exited 0 as if nothing were wrong.
    assert done.returncode == 3, done.stdout + done.stderr
    assert "live was deleted outside the runner" in done.stdout + done.stderr
    assert s.status()["verified"] == 3
    for task_id in ("t-1", "t-2", "t-3"):
        assert "failure" not in [r[0] for r in integrate_rows(s, task_id)]
    # Base back: all three land on it.
    git(s.repo, "update-ref", "refs/heads/live", gate_commit)
    s.run_once_until(all_done(3), limit=5)
    assert_each_landed_once_on_checked_trees(s, tmp_path, ["t-1", "t-2", "t-3"])


def test_a_check_that_lands_its_own_candidate_holds_work_and_charges_no_task(tmp_path: Path) -> None:
    s = hostile(tmp_path)
    three_verified(s)
    s.env["HOSTILE"] = "land-self"
    done = s.cli("run", "--once", timeout=60)
    assert done.returncode == 3, done.stdout + done.stderr
    # Base holds a commit the runner did not land: work is held for a person, no task is blamed,
    # and no candidate lands on top of what the check put there.
    doc = s.status()
    assert [f["area"] for f in doc["faults"]] == ["base"]
    assert doc["verified"] == 3 and doc["done"] == 0
    for task_id in ("t-1", "t-2", "t-3"):
        assert s.task(task_id)["patchset"] == 0
        assert "failure" not in [r[0] for r in integrate_rows(s, task_id)]
    assert len(runner_commits(s)) == 1


# -- tasks changed from another process while stacked ---------------------------------------------


@pytest.mark.parametrize("action", [("task", "set-status", "t-2", "open"), ("task", "cancel", "t-2")])
def test_a_stacked_task_a_person_reopens_or_cancels_never_lands_and_the_rest_do(
    tmp_path: Path, action: tuple[str, ...]
) -> None:
    s = hostile(tmp_path)
    s.env["GATE_SLEEP"] = "3"
    three_verified(s)
    proc = s.start("--once")
    wait_for(lambda: (tmp_path / "gate.log").exists() and len(gate_log(tmp_path)) >= 3, 30, proc)
    done = s.cli(*action)
    assert done.returncode == 0, done.stdout + done.stderr
    assert proc.wait(timeout=60) == 0, proc.stdout.read() if proc.stdout else ""
    assert s.trailers() == ["t-3", "t-1"]
    assert_each_landed_once_on_checked_trees(s, tmp_path, ["t-1", "t-3"])
    assert [r[0] for r in integrate_rows(s, "t-3")] == ["cancelled", "success"]


def test_delete_retry_or_edit_of_a_stacked_task_does_not_land_it_twice(tmp_path: Path) -> None:
    s = hostile(tmp_path)
    s.env["GATE_SLEEP"] = "3"
    three_verified(s)
    proc = s.start("--once")
    wait_for(lambda: (tmp_path / "gate.log").exists() and len(gate_log(tmp_path)) >= 3, 30, proc)
    deleted = s.cli("task", "delete", "t-2")
    assert deleted.returncode == 1 and "waits to land" in deleted.stderr  # refused, nothing lost
    s.cli("task", "retry", "t-2")
    s.cli("task", "edit", "t-2", "--title", "two, edited")
    assert proc.wait(timeout=60) == 0, proc.stdout.read() if proc.stdout else ""
    s.run_once_until(all_done(3), limit=10)
    assert_each_landed_once_on_checked_trees(s, tmp_path, ["t-1", "t-2", "t-3"])


# -- windows, configs and modes -------------------------------------------------------------------


@pytest.mark.parametrize(("window", "tasks"), [(1, 3), (5, 2)])
def test_any_window_lands_every_task_once_in_queue_order_in_one_run(tmp_path: Path, window: int, tasks: int) -> None:
    s = hostile(tmp_path, window=window)
    s.env["GATE_SLEEP"] = "0.3"
    titles = ["one", "two", "three"][:tasks]
    for title in titles:
        s.add(title)
    s.run_once_until_verified(tasks)
    assert s.cli("run", "--once").returncode == 0
    expected = [f"t-{n}" for n in range(tasks, 0, -1)]
    assert s.trailers() == expected
    assert_each_landed_once_on_checked_trees(s, tmp_path, expected)
    assert side_by_side(gate_log(tmp_path)) == min(window, tasks)


@pytest.mark.parametrize("value", ["0", "-1", "three", "2.5", "[3]"])
def test_a_bad_window_is_an_error_naming_the_key_and_file(tmp_path: Path, value: str) -> None:
    s = make_sample(tmp_path)
    (s.repo / "pipeline.yaml").write_text(
        (s.repo / "pipeline.yaml").read_text() + f"integrate:\n  window: {value}\n"
    )
    done = s.cli("run", "--once")
    assert done.returncode == 1
    assert "integrate.window" in done.stderr and str(s.repo / "pipeline.yaml") in done.stderr


@pytest.mark.parametrize("key", ["integrate:\n  window: true", "concurrency: false", "interval: true",
                                 "limits:\n  max_retries: true"])
def test_a_boolean_number_is_an_error_naming_the_key_and_file(tmp_path: Path, key: str) -> None:
    # YAML's true would otherwise be read as 1 (a window of one, a retry limit of one).
    s = make_sample(tmp_path)
    text = (s.repo / "pipeline.yaml").read_text()
    (s.repo / "pipeline.yaml").write_text(text + key + "\n")
    done = s.cli("status")
    name = key.replace(":\n  ", ".").split(":")[0]
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"key '{name}'" in done.stderr and "not true or false" in done.stderr
    assert "pipeline.yaml" in done.stderr


def test_until_idle_and_the_daemon_drain_a_stack_and_end(tmp_path: Path) -> None:
    s = hostile(tmp_path)
    s.env["GATE_SLEEP"] = "0.3"
    three_verified(s)
    done = s.cli("run", "--until-idle", timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    assert s.trailers() == ["t-3", "t-2", "t-1"]
    # The daemon: two more land while it runs; SIGTERM ends it cleanly, nothing left running.
    s.add("four")
    s.add("five")
    doc = s.run_until(all_done(5), timeout=90)
    assert doc["done"] == 5
    assert_each_landed_once_on_checked_trees(s, tmp_path, ["t-1", "t-2", "t-3", "t-4", "t-5"])
    assert not (s.root / "integration").exists() or list((s.root / "integration").iterdir()) == []


@pytest.mark.parametrize("point", ["before-swap@2", "receipt-attached@1", "swapped@1"])
def test_a_kill_then_a_persons_push_before_the_restart_lands_each_task_once(tmp_path: Path, point: str) -> None:
    s = hostile(tmp_path)
    s.env["GATE_SLEEP"] = "0.2"
    three_verified(s)
    s.run_once_until_killed(point, limit=3)
    (s.repo / "person.md").write_text("a person's change\n")
    git(s.repo, "add", "person.md")
    git(s.repo, "commit", "-q", "-m", "A person's commit")
    s.run_once_until(all_done(3), limit=10)
    assert_each_landed_once_on_checked_trees(s, tmp_path, ["t-1", "t-2", "t-3"])
    assert "A person's commit" in s.base_log()
    assert notes_on_unlanded(s) == []
    for task_id in ("t-1", "t-2", "t-3"):
        assert s.task(task_id)["patchset"] == 0
