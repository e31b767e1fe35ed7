"""Benchmark of the real loop in a temporary repository. Prints its figures; asserts nothing.

    .venv/bin/python benchmarks/bench_loop.py [--tasks 100] [--slow-tasks 100] [--concurrency 8]

1. Throughput: N tasks, an instant agent (one commit) and an instant verify, through the real
   scheduler (dev, verify, integrate with compare-and-swap, cleanup): tasks per second.
2. Overhead: the same git operations done by a plain script (worktree add, commit, cherry-pick,
   update-ref, worktree remove, branch delete), and the ratio of the loop's wall time to it.
3. Slot utilisation: agents that each take 1 s, at concurrency 8: ideal makespan over real.
4. History: the cost of one cycle with nothing to do, over a store holding many done tasks with
   their comments (a long-lived root), against an empty store.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import GIT_ENV, git
from runner import registries
from runner.config import load_config
from runner.layout import Layout
from runner.logs import setup_stderr
from runner.scheduler import Pipeline
from runner.state import open_db
from runner.tasks import BuiltinTaskStore, NewTask, TaskStatus

# The agent: writes one file named for the task and commits it, then sleeps out the rest of its
# duration, so that an agent asked to take 1 s lives 1 s from its process start, its interpreter's
# start-up and its own work included. The start is the kernel's (field 22 of /proc/self/stat, in
# clock ticks since boot), rounded up a tick so that the agent never ends early. No shell.
AGENT = """\
import os, subprocess, sys, time
now = time.clock_gettime(time.CLOCK_BOOTTIME)
try:
    with open("/proc/self/stat") as stat:
        ticks = int(stat.read().rpartition(")")[2].split()[19])
    start = (ticks + 1) / os.sysconf("SC_CLK_TCK")
except OSError:
    start = now
task = os.environ["PIPELINE_TASK_ID"]
open(task + ".txt", "w").write(task + "\\n")
subprocess.run(["git", "add", task + ".txt"], check=True)
subprocess.run(["git", "commit", "-q", "-m", task + "\\n\\nTask-Id: " + task], check=True)
time.sleep(max(0.0, float(sys.argv[1]) - (time.clock_gettime(time.CLOCK_BOOTTIME) - start)))
"""


def make_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "live")
    (path / "README.md").write_text("bench\n")
    (path / "agent.py").write_text(AGENT)
    (path / ".git" / "info" / "exclude").write_text("_/\npipeline.yaml\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


@dataclass(frozen=True)
class LoopRun:
    """One run of the real scheduler over a fresh store."""

    elapsed: float  # seconds from the first cycle to the last task done
    ended: float  # the clock (time.time()) when the last task was done
    spans: list[dict[str, Any]]  # each agent's supervisor status: started_at, finished_at, ...

    @property
    def mean_agent_seconds(self) -> float:
        """How long the agent processes themselves ran, on average."""
        return float(sum(s["finished_at"] - s["started_at"] for s in self.spans)) / len(self.spans)


def run_loop(work: Path, tasks: int, concurrency: int, agent_seconds: float) -> LoopRun:
    """The real scheduler taking ``tasks`` tasks from open to done with agents that each live
    ``agent_seconds``, and what their supervisors recorded."""
    repo = make_repo(work / "repo")
    (repo / "pipeline.yaml").write_text(
        "base: live\n"
        f"concurrency: {concurrency}\n"
        "interval: 1\n"
        "limits: {max_retries: 1}\n"
        f"agent: {{preset: command, command: ['{sys.executable}', '-I', '-S', '{repo / 'agent.py'}', '{agent_seconds}']}}\n"
        "phases: {test: {run: [['true']]}}\n"
    )
    config = load_config(repo / "pipeline.yaml", registries=registries.names()).config
    Layout(config.root).ensure()
    db = open_db(config.state_db)
    store = BuiltinTaskStore(db)
    for index in range(tasks):
        store.add(NewTask(title=f"task {index}"))
    pipeline = Pipeline(config, db)
    start = time.perf_counter()
    pipeline.reconcile()
    while store.counts()[TaskStatus.DONE] < tasks:
        if store.counts()[TaskStatus.NEEDS_HELP]:
            raise SystemExit(
                f"a task needs help: {store.list_tasks(status=TaskStatus.NEEDS_HELP)[0].comments}"
            )
        if not pipeline.cycle():
            pipeline.sleep()
    elapsed = time.perf_counter() - start
    ended = time.time()
    pipeline.close()
    landed = len(git(repo, "log", "--format=%H", "live").splitlines()) - 1
    assert landed == tasks, f"{landed} commits landed for {tasks} tasks"
    spans = [json.loads(p.read_text()) for p in (config.root / "runs").glob("*.json")]
    return LoopRun(elapsed, ended, spans)


def idle_cycle_ms(work: Path, done_tasks: int, comments_per_task: int = 6, cycles: int = 200) -> float:
    """Mean milliseconds of one cycle that finds nothing to do, over ``done_tasks`` done tasks."""
    repo = make_repo(work)
    (repo / "pipeline.yaml").write_text(
        "base: live\nagent: {preset: command, command: ['true']}\nphases: {test: {run: [['true']]}}\n"
    )
    config = load_config(repo / "pipeline.yaml", registries=registries.names()).config
    Layout(config.root).ensure()
    db = open_db(config.state_db)
    store = BuiltinTaskStore(db)
    store.import_tasks(
        [NewTask(id=f"h-{i}", title=f"done {i}", status=TaskStatus.DONE) for i in range(done_tasks)]
    )
    with db.write() as conn:  # comments as the loop leaves them: one per transition
        conn.executemany(
            "INSERT INTO task_comments (task_id, author, body, created_at) VALUES (?, 'system', ?, '')",
            [(f"h-{i}", f"Pipeline: step {c}") for i in range(done_tasks) for c in range(comments_per_task)],
        )
    pipeline = Pipeline(config, db)
    pipeline.reconcile()
    start = time.perf_counter()
    for _ in range(cycles):
        pipeline.cycle()
    elapsed = time.perf_counter() - start
    pipeline.close()
    return elapsed / cycles * 1000


def run_plain(work: Path, tasks: int) -> float:
    """Wall time of a plain script doing the same git operations, one task after another."""
    repo = make_repo(work / "plain")
    root = repo / "_"
    integration = root / "integration"
    start = time.perf_counter()
    git(repo, "worktree", "add", "-q", "--detach", str(integration), "live")
    for index in range(tasks):
        task = f"t-{index + 1}"
        tree = root / "worktrees" / task
        git(repo, "worktree", "add", "-q", "-b", task, str(tree), "live")
        (tree / f"{task}.txt").write_text(task + "\n")
        git(tree, "add", f"{task}.txt")
        git(tree, "commit", "-q", "-m", f"{task}\n\nTask-Id: {task}")
        old = git(repo, "rev-parse", "live")
        git(integration, "checkout", "-q", "--detach", old)
        git(integration, "cherry-pick", task)
        new = git(integration, "rev-parse", "HEAD")
        git(repo, "update-ref", "refs/heads/live", new, old)
        git(repo, "worktree", "remove", "--force", str(tree))
        git(repo, "branch", "-D", task)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--slow-tasks", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--history", type=int, default=5000, help="done tasks in the history figure")
    args = parser.parse_args()
    os.environ.update(GIT_ENV)
    setup_stderr(-1)
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-", ignore_cleanup_errors=True) as tmp:
        work = Path(tmp)
        loop = run_loop(work / "fast", args.tasks, args.concurrency, 0.0).elapsed
        plain = run_plain(work / "fast", args.tasks)
        print(
            f"tasks:                      {args.tasks} (instant agent, instant verify, concurrency {args.concurrency})"
        )
        print(f"loop wall time:             {loop:.2f} s")
        print(f"throughput:                 {args.tasks / loop:.1f} tasks/s")
        print(f"plain git script:           {plain:.2f} s")
        print(f"loop / plain git:           {loop / plain:.2f}x  (target <= 3x)")
        slow_run = run_loop(work / "slow", args.slow_tasks, 8, 1.0)
        slow, agent_time = slow_run.elapsed, slow_run.mean_agent_seconds
        waves = math.ceil(args.slow_tasks / 8)
        ideal = waves * 1.0
        measured_ideal = waves * agent_time
        print(f"1 s agents, concurrency 8:  {args.slow_tasks} tasks in {slow:.2f} s")
        print(
            f"slot utilisation:           {100 * ideal / slow:.1f}%  (ideal {ideal:.0f} s = {waves} x 1 s; target >= 90%)"
        )
        print(
            f"  against measured agents:  {100 * measured_ideal / slow:.1f}%  (each agent process ran {agent_time:.3f} s"
            " on average, its own start-up and commit included)"
        )
        empty = idle_cycle_ms(work / "empty", 0)
        full = idle_cycle_ms(work / "history", args.history)
        print(
            f"idle cycle:                 {empty:.2f} ms on an empty store, {full:.2f} ms over "
            f"{args.history} done tasks with 6 comments each"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
