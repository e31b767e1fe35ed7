"""Slot utilisation of the real loop: N tasks of agents that each take S seconds, at concurrency C.
Prints its figures; asserts nothing.

    .venv/bin/python benchmarks/utilisation.py [--tasks 64] [--concurrency 8] [--seconds 1]

The agent (a real process) commits one file and sleeps out the rest of its S seconds; the checks
are `true`. Utilisation is agent-seconds over wall time times slots: the share of the slots'
time in which an agent was running, measured from the agents' own start and end times (their
supervisors' status files), over the time agents had work: from the first agent's start to the
last agent's end. The time to the last landing (the last wave's checks and integration, when no
agent can have work) is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import GIT_ENV, git
from runner import registries
from runner.config import load_config
from runner.layout import Layout
from runner.logs import setup_stderr
from runner.scheduler import Pipeline
from runner.state import open_db
from runner.tasks import BuiltinTaskStore, NewTask, TaskStatus

# Commits one file named for the task, then sleeps out the rest of its duration. No shell.
AGENT = """\
import os, subprocess, sys, time
start = time.time()
task = os.environ["PIPELINE_TASK_ID"]
open(task + ".txt", "w").write(task + "\\n")
subprocess.run(["git", "add", task + ".txt"], check=True)
subprocess.run(["git", "commit", "-q", "-m", task + "\\n\\nTask-Id: " + task], check=True)
time.sleep(max(0.0, float(sys.argv[1]) - (time.time() - start)))
"""


def measure(work: Path, tasks: int, concurrency: int, seconds: float) -> dict[str, float]:
    """Run ``tasks`` tasks through the real scheduler; the wall time and the agents' time."""
    repo = work / "repo"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "live")
    (repo / "README.md").write_text("bench\n")
    (repo / "agent.py").write_text(AGENT)
    (repo / ".git" / "info" / "exclude").write_text("_/\npipeline.yaml\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    (repo / "pipeline.yaml").write_text(
        f"base: live\nconcurrency: {concurrency}\ninterval: 1\nlimits: {{max_retries: 1}}\n"
        f"agent: {{preset: command, command: ['{sys.executable}', '-I', '-S', '{repo / 'agent.py'}', '{seconds}']}}\n"
        "phases: {test: {run: [['true']]}}\n"
    )
    config = load_config(repo / "pipeline.yaml", registries=registries.names()).config
    Layout(config.root).ensure()
    db = open_db(config.state_db)
    store = BuiltinTaskStore(db)
    for index in range(tasks):
        store.add(NewTask(title=f"task {index}"))
    pipeline = Pipeline(config, db)
    pipeline.reconcile()
    while store.counts()[TaskStatus.DONE] < tasks:
        if store.counts()[TaskStatus.NEEDS_HELP]:
            raise SystemExit(f"a task needs help: {store.list_tasks(status=TaskStatus.NEEDS_HELP)[0].comments}")
        if not pipeline.cycle():
            pipeline.sleep()
    ended = time.time()
    pipeline.close()
    spans = [json.loads(p.read_text()) for p in (config.root / "runs").glob("*.json")]
    first = min(s["started_at"] for s in spans)
    last = max(s["finished_at"] for s in spans)
    agent_seconds = sum(s["finished_at"] - s["started_at"] for s in spans)
    return {"wall": last - first, "landed": ended - first, "agent_seconds": agent_seconds, "agents": len(spans)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=1.0, help="how long each agent takes")
    args = parser.parse_args(argv)
    os.environ.update(GIT_ENV)
    setup_stderr(-1)
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-", ignore_cleanup_errors=True) as tmp:
        got = measure(Path(tmp), args.tasks, args.concurrency, args.seconds)
    utilisation = got["agent_seconds"] / (got["wall"] * args.concurrency)
    print(f"tasks:             {args.tasks} agents of {args.seconds:g} s at concurrency {args.concurrency}")
    print(f"wall time:         {got['wall']:.2f} s (first agent's start to the last agent's end)")
    print(f"to the last land:  {got['landed']:.2f} s ({100 * got['agent_seconds'] / (got['landed'] * args.concurrency):.1f}%"
          " of the slots' time up to then)")
    print(f"agent-seconds:     {got['agent_seconds']:.2f} s in {got['agents']:.0f} agent runs")
    print(f"slot utilisation:  {100 * utilisation:.1f}%  (agent-seconds / (wall x slots); target >= 95%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
