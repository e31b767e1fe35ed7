"""Workspaces made ahead (runner.ahead): while every slot is taken, the next tasks' workspaces are
made off the loop's thread, so a freed slot starts its agent at once; never more agents than slots,
never a workspace kept for a task a person took back, and a kill meanwhile loses nothing."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

from runner import killpoints
from runner.ahead import MAX_AGE_SECONDS, Ahead
from runner.config import PipelineConfig
from runner.scheduler import Pipeline
from runner.state import Database, Phase, RunStatus
from runner.tasks import BuiltinTaskStore, TaskStatus
from tests.conftest import git
from tests.loop_helpers import all_done, in_process, make_sample, stop, wait_for

# -- the table of workspaces being made (in-process, milliseconds) ---------------------------------


class Maker:
    """Makes a "workspace" (a string) per task and records what was made and given back."""

    def __init__(self) -> None:
        self.made: list[str] = []
        self.given_back: list[tuple[str, str]] = []
        self.release = threading.Event()
        self.release.set()

    def make(self, task_id: str) -> str:
        self.release.wait(5)
        self.made.append(task_id)
        return f"ws-{task_id}-{self.made.count(task_id)}"

    def give_back(self, task_id: str, made: str) -> None:
        self.given_back.append((task_id, made))


def test_a_workspace_made_ahead_is_the_one_its_task_starts_in() -> None:
    maker = Maker()
    ahead: Ahead[str] = Ahead(maker.make, maker.give_back, threads=2)
    assert ahead.prepare(["t-1", "t-2"], now=100.0) == 2
    assert ahead.prepare(["t-1", "t-2"], now=101.0) == 0  # already being made
    assert ahead.take("t-1", now=102.0).result() == "ws-t-1-1"  # the one made ahead, not a new one
    ahead.close()
    assert sorted(maker.made) == ["t-1", "t-2"]
    assert maker.given_back == [("t-2", "ws-t-2-1")]  # the unused one goes back


def test_a_stale_workspace_is_given_back_and_made_again() -> None:
    maker = Maker()
    ahead: Ahead[str] = Ahead(maker.make, maker.give_back, threads=1)
    ahead.prepare(["t-1"], now=100.0)
    fresh = ahead.take("t-1", now=100.0 + MAX_AGE_SECONDS + 1).result()
    assert maker.made == ["t-1", "t-1"]
    assert maker.given_back == [("t-1", "ws-t-1-1")] and fresh == "ws-t-1-2"
    ahead.close()


def test_a_task_no_longer_next_gets_its_workspace_given_back_once_made() -> None:
    maker = Maker()
    ahead: Ahead[str] = Ahead(maker.make, maker.give_back, threads=1)
    maker.release.clear()
    ahead.prepare(["t-1"], now=0.0)
    ahead.prepare(["t-2"], now=0.0)  # t-1 is still being made: kept until it is
    assert "t-1" in ahead and maker.given_back == []
    maker.release.set()
    wait_for(lambda: len(maker.made) == 2 or None, 5)
    ahead.prepare(["t-2"], now=0.0)
    assert "t-1" not in ahead and [t for t, _ in maker.given_back] == ["t-1"]
    ahead.close()
    assert sorted(t for t, _ in maker.given_back) == ["t-1", "t-2"]


def test_a_workspace_that_could_not_be_made_has_nothing_to_give_back() -> None:
    given_back: list[str] = []

    def make(task_id: str) -> str:
        raise RuntimeError(f"no workspace for {task_id}")

    ahead: Ahead[str] = Ahead(make, lambda t, _made: given_back.append(t), threads=1)
    ahead.prepare(["t-1", "t-2"], now=0.0)
    assert isinstance(ahead.take("t-1", now=0.0).exception(timeout=5), RuntimeError)  # seen where it starts
    ahead.close()  # t-2's failure is not raised here, and nothing is given back
    assert given_back == []


# -- the loop, in-process, on a real repository --------------------------------------------------


def cycled(pipeline: Pipeline, done: bool) -> bool | None:
    """One more cycle unless ``done`` (for wait_for)."""
    if done:
        return True
    pipeline.cycle()
    return None


def three_tasks(tmp_path: Path, agent: str, concurrency: int) -> tuple[PipelineConfig, BuiltinTaskStore, Database]:
    """A repository whose agent runs the Python code ``agent``, and a store holding t-0, t-1, t-2."""
    return in_process(
        tmp_path,
        f"concurrency: {concurrency}\ninterval: 0.05\n"
        f"agent: {{preset: command, command: {json.dumps([sys.executable, '-c', agent])}}}\n"
        "phases: {test: {run: [['true']]}}\ncheck_base: false\n",
    )


def test_the_next_tasks_workspace_is_made_while_the_slot_is_taken_and_given_back_on_cancel(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    agent = f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.02)\n"
    config, store, db = three_tasks(tmp_path, agent, concurrency=1)
    pipeline = Pipeline(config, db)
    ready = config.root / "worktrees" / "t-1" / ".git" / "pipeline-ready"
    try:
        pipeline.reconcile()
        pipeline.cycle()
        assert [r.task_id for r in pipeline.runs.running(Phase.DEV)] == ["t-0"]
        # The slot is taken: the next task's workspace is made meanwhile, and nothing else happens to it.
        wait_for(lambda: ready.is_file() or None, 10)
        assert store.get("t-1").status is TaskStatus.OPEN and pipeline.runs.for_task("t-1") == []
        # A person takes it back before it starts: its workspace is given back, the next one made.
        store.set_status("t-1", TaskStatus.CANCELLED)
        wait_for(lambda: cycled(pipeline, not (config.root / "worktrees" / "t-1").exists()), 10)
        wait_for(lambda: (config.root / "worktrees" / "t-2" / ".git" / "pipeline-ready").is_file() or None, 10)
        gate.write_text("go")
        wait_for(lambda: cycled(pipeline, "t-2" in {r.task_id for r in pipeline.runs.running(Phase.DEV)}), 20)
        assert pipeline.runs.for_task("t-1") == []  # never started
    finally:
        gate.write_text("go")
        pipeline.close()
    # Closing gives back what was made ahead and not used: only started tasks keep a workspace.
    left = sorted(p.name for p in (config.root / "worktrees").iterdir())
    assert "t-1" not in left


def test_slots_are_refilled_before_the_harvest_but_never_past_concurrency(tmp_path: Path) -> None:
    s = make_sample(tmp_path, concurrency=2, interval=0.05)
    s.plan({f"t-{i}": [{"sleep": 0.3}] for i in range(1, 7)})
    for i in range(1, 7):
        s.add(f"task {i}")
    done = s.cli("run", "--until-idle", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(s.trailers()) == sorted(f"t-{i}" for i in range(1, 7))
    spans = [json.loads(p.read_text()) for p in (s.root / "runs").glob("*.json")]
    assert len(spans) == 6
    events = sorted([(sp["started_at"], 1) for sp in spans] + [(sp["finished_at"], -1) for sp in spans])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    assert peak <= 2, "more agents ran at once than concurrency allows"
    assert s.leftover_worktrees() == []


def test_killed_while_a_workspace_is_made_ahead_the_next_start_finishes_everything(tmp_path: Path) -> None:
    s = make_sample(tmp_path, concurrency=1, interval=0.05)
    s.plan({f"t-{i}": [{"sleep": 0.5}] for i in range(1, 4)})
    for i in range(1, 4):
        s.add(f"task {i}")
    # The second workspace made is the one made ahead, while t-1's agent works.
    s.env[killpoints.ENV] = "workspace-made@2"
    proc = s.start()
    try:
        assert proc.wait(timeout=60) == -9
    finally:
        stop(proc)
    del s.env[killpoints.ENV]
    s.run_until(all_done(3), timeout=90)
    assert sorted(s.trailers()) == ["t-1", "t-2", "t-3"]  # each once
    assert s.rows("SELECT COUNT(*) FROM pipeline_runs WHERE status='running'") == [(0,)]
    assert git(s.repo, "for-each-ref", "refs/pipeline/") == ""
    time.sleep(0.2)
    assert s.leftover_worktrees() == []


def test_agents_that_cannot_start_are_a_fault_and_cost_their_tasks_nothing(tmp_path: Path) -> None:
    # An agent whose process cannot start (here: the root's runs folder is a file) is the machine's
    # fault: each attempt is cancelled, its task left open and uncharged, and starting agents paused.
    config, store, db = three_tasks(tmp_path, "pass", concurrency=3)
    runs_dir = config.root / "runs"
    if runs_dir.exists():
        runs_dir.rmdir()
    runs_dir.write_text("not a folder\n")
    pipeline = Pipeline(config, db)
    try:
        pipeline.reconcile()
        pipeline.cycle()
        assert pipeline.runs.running(Phase.DEV) == []
        for index in range(3):
            assert store.get(f"t-{index}").status is TaskStatus.OPEN
            [attempt] = pipeline.runs.for_task(f"t-{index}")
            assert attempt.status is RunStatus.CANCELLED and "could not start" in (attempt.error_summary or "")
            assert pipeline.runs.failures_since(f"t-{index}", None)[0] == 0  # not charged
        fault = pipeline.faults.get("dev")
        assert fault is not None and "could not start the agent" in fault.message
    finally:
        pipeline.close()
