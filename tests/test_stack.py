"""End to end: the integration stack. Verified tasks are stacked (base + t-1, + t-2, ...), checked
side by side, and land in order; every commit base gets passed its checks on exactly its tree."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import git
from tests.loop_helpers import Sample, all_done, make_sample, wait_for

# The integrate-only gate: records the tree of every candidate it passes, fails one holding
# GATE_FAIL, and sleeps long enough that the candidates of a stack are checked side by side.
GATE_PY = """\
import os, pathlib, subprocess, sys, time
here = pathlib.Path.cwd()
tree = subprocess.run(["git", "rev-parse", "HEAD^{tree}"], capture_output=True, text=True, check=True).stdout.strip()
with open(os.environ["GATE_LOG"], "a") as log:
    log.write(f"start {tree} {time.time()}\\n")
time.sleep(float(os.environ.get("GATE_SLEEP", "0.5")))
failed = (here / "GATE_FAIL").exists()
with open(os.environ["GATE_LOG"], "a") as log:
    log.write(f"{'fail' if failed else 'pass'} {tree} {time.time()}\\n")
sys.exit(1 if failed else 0)
"""


def three_verified(s: Sample) -> None:
    """Tasks t-1, t-2 and t-3 added, developed and verified: a stack of three waits to land."""
    for title in ("one", "two", "three"):
        s.add(title)
    s.run_once_until_verified(3)


def stacked(tmp_path: Path, window: int = 3, gate: str = GATE_PY, **config: object) -> Sample:
    """A sample whose verify phase is the usual check and whose integrate phase is ``gate``."""
    s = make_sample(
        tmp_path, concurrency=3, integrate={"window": window},
        phases={
            "verify": {"run": [["python3", "check.py"]], "on": ["verify"]},
            "gate": {"run": [["python3", "gate.py"]], "on": ["integrate"],
                     "env": {"GATE_LOG": str(tmp_path / "gate.log")}},
        },
        **config,
    )  # fmt: skip
    (s.repo / "gate.py").write_text(gate)
    git(s.repo, "add", "gate.py")
    git(s.repo, "commit", "-q", "-m", "gate")
    return s


def gate_log(tmp_path: Path) -> list[tuple[str, str, float]]:
    lines = (tmp_path / "gate.log").read_text().split("\n")
    return [(w[0], w[1], float(w[2])) for w in (line.split() for line in lines if line)]


def side_by_side(log: list[tuple[str, str, float]]) -> int:
    """The most gate runs that were running at one moment."""
    running = most = 0
    for kind, _, _ in sorted(log, key=lambda entry: entry[2]):
        running += 1 if kind == "start" else -1
        most = max(most, running)
    return most


def base_trees(s: Sample, count: int) -> list[str]:
    """The trees of base's newest ``count`` commits."""
    return git(s.repo, "log", f"-{count}", "--format=%T", "live").split()


def candidate_checkouts(s: Sample) -> list[str]:
    """The candidates' checkouts left in the root."""
    where = s.root / "integration"
    return sorted(p.name for p in where.iterdir()) if where.exists() else []


def integrate_rows(s: Sample, task_id: str) -> list[tuple[str, str]]:
    return [
        (status, error or "")
        for status, error in s.rows(
            "SELECT status, error_summary FROM pipeline_runs WHERE task_id=? AND phase='integrate' "
            "AND parent_id IS NULL ORDER BY id",
            (task_id,),
        )
    ]


def test_a_failing_candidate_in_the_middle_is_rejected_and_the_ones_after_land_rebuilt(tmp_path: Path) -> None:
    s = stacked(tmp_path)
    s.plan({
        "t-1": [{"files": {"t1.txt": "one\n"}}],
        "t-2": [{"files": {"t2.txt": "two\n", "GATE_FAIL": "x"}}, {"files": {"t2.txt": "two, again\n"}}],
        "t-3": [{"files": {"t3.txt": "three\n"}}],
    })  # fmt: skip
    three_verified(s)
    assert s.cli("run", "--once").returncode == 0  # one invocation: the whole stack is settled
    # t-1 landed; t-2 was rejected at the bottom of the stack; t-3 landed, rebuilt without t-2.
    assert s.trailers()[:2] == ["t-3", "t-1"]
    assert s.task("t-1")["status"] == "done" and s.task("t-3")["status"] == "done"
    rejected = s.task("t-2")
    assert rejected["status"] == "open" and rejected["patchset"] == 1
    assert any("post-integration checks failed" in c["body"] for c in rejected["comments"])
    assert integrate_rows(s, "t-2") == [("failure", integrate_rows(s, "t-2")[0][1])]
    rows = integrate_rows(s, "t-3")
    assert [r[0] for r in rows] == ["cancelled", "success"]
    assert rows[0][1].startswith("rebuilt: t-2, below it, did not land")
    # The three candidates were checked side by side.
    log = gate_log(tmp_path)
    assert side_by_side(log) == 3
    # Every commit base got passed the gate on exactly its own tree.
    passed = {tree for kind, tree, _ in log if kind == "pass"}
    assert set(base_trees(s, 2)) <= passed
    # t-2, developed again on the new base, lands on top.
    s.run_once_until(all_done(3))
    assert s.trailers() == ["t-2", "t-3", "t-1"]
    assert set(base_trees(s, 3)) <= {tree for kind, tree, _ in gate_log(tmp_path) if kind == "pass"}
    assert candidate_checkouts(s) == []


def test_a_push_to_base_during_a_stack_rebuilds_it_on_the_new_tip(tmp_path: Path) -> None:
    s = stacked(tmp_path)
    s.write_config(phases={
        "verify": {"run": [["python3", "check.py"]], "on": ["verify", "integrate"], "cache": False},
        "gate": {"run": [["python3", "gate.py"]], "on": ["integrate"], "env": {"GATE_LOG": str(tmp_path / "gate.log")}},
    })  # fmt: skip
    s.env["PUSH_FROM"] = str(s.repo)
    s.plan({
        "t-1": [{"files": {"t1.txt": "one\n", "PUSH_DURING_integrate": "x"}}],
        "t-2": [{"files": {"t2.txt": "two\n"}}],
        "t-3": [{"files": {"t3.txt": "three\n"}}],
    })  # fmt: skip
    three_verified(s)
    assert s.cli("run", "--once").returncode == 0
    # The person's commit is kept, under the three tasks, each landed once, in queue order.
    assert s.base_log()[:5] == ["t-3: attempt 0", "t-2: attempt 0", "t-1: attempt 0", "A person's commit", "gate"]
    for task_id in ("t-1", "t-2", "t-3"):
        assert s.task(task_id)["status"] == "done" and s.task(task_id)["patchset"] == 0  # nothing charged
        rows = integrate_rows(s, task_id)
        assert [r[0] for r in rows] == ["cancelled", "success"]
        assert rows[0][1].startswith("rebuilt: live moved")
    passed = {tree for kind, tree, _ in gate_log(tmp_path) if kind == "pass"}
    assert set(base_trees(s, 3)) <= passed
    assert git(s.repo, "status", "--porcelain", "--untracked-files=no") == ""


def test_a_kill_in_the_middle_of_a_stack_lands_each_task_once(tmp_path: Path) -> None:
    s = stacked(tmp_path)
    s.env["GATE_SLEEP"] = "0.2"
    three_verified(s)
    # Killed right after base first moved (to the first candidate, or over several at once when
    # their checks had passed together): nothing recorded for what that move landed yet.
    s.run_once_until_killed("swapped@1", limit=1)
    assert len(s.trailers()) >= 1 and s.status()["done"] == 0
    s.run_once_until(all_done(3))
    assert sorted(s.trailers()) == ["t-1", "t-2", "t-3"] and len(s.trailers()) == 3
    assert s.trailers() == ["t-3", "t-2", "t-1"]
    assert any("recovered after a restart" in c["body"] for c in s.task("t-1")["comments"])
    # A candidate killed mid-check was checked again; no checkout of the stack is left.
    passed = {tree for kind, tree, _ in gate_log(tmp_path) if kind == "pass"}
    assert set(base_trees(s, 3)) <= passed
    assert candidate_checkouts(s) == []
    assert git(s.repo, "status", "--porcelain", "--untracked-files=no") == ""


def test_a_task_a_person_cancels_mid_stack_never_lands_and_the_rest_do(tmp_path: Path) -> None:
    s = stacked(tmp_path)
    s.env["GATE_SLEEP"] = "3"
    three_verified(s)
    proc = s.start("--once")
    # Cancel t-2 while the three candidates are being checked.
    wait_for(lambda: (tmp_path / "gate.log").exists() and len(gate_log(tmp_path)) >= 3, 30, proc)
    assert s.cli("task", "cancel", "t-2").returncode == 0
    assert proc.wait(timeout=60) == 0, proc.stdout.read() if proc.stdout else ""
    assert s.trailers() == ["t-3", "t-1"]
    assert s.task("t-2")["status"] == "cancelled"
    assert [r[0] for r in integrate_rows(s, "t-3")] == ["cancelled", "success"]
