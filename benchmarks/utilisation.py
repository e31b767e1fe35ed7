"""Slot utilisation of the real loop: N tasks of agents that each take S seconds, at concurrency C.
Prints its figures; asserts nothing.

    .venv/bin/python benchmarks/utilisation.py [--tasks 64] [--concurrency 8] [--seconds 1]

The repository and the runner's root go in a temporary directory (TMPDIR chooses where: the
file system is printed, since creating files costs very differently on tmpfs and on a disk).

The agent (a real process) commits one file and sleeps out the rest of its S seconds; the checks
are `true`. Utilisation is agent-seconds over wall time times slots: the share of the slots'
time in which an agent was running, measured from the agents' own start and end times (their
supervisors' status files), over the time agents had work: from the first agent's start to the
last agent's end. The time to the last landing (the last wave's checks and integration, when no
agent can have work) is printed beside it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_loop import run_loop
from benchmarks.common import GIT_ENV, filesystem_of
from runner.logs import setup_stderr


def measure(work: Path, tasks: int, concurrency: int, seconds: float) -> dict[str, float]:
    """Run ``tasks`` tasks through the real scheduler (benchmarks/bench_loop.py's run); the wall
    time and the agents' time."""
    run = run_loop(work, tasks, concurrency, seconds)
    first = min(s["started_at"] for s in run.spans)
    last = max(s["finished_at"] for s in run.spans)
    agent_seconds = sum(s["finished_at"] - s["started_at"] for s in run.spans)
    return {"wall": last - first, "landed": run.ended - first, "agent_seconds": agent_seconds, "agents": len(run.spans)}


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
        where = filesystem_of(Path(tmp))
    utilisation = got["agent_seconds"] / (got["wall"] * args.concurrency)
    print(f"tasks:             {args.tasks} agents of {args.seconds:g} s at concurrency {args.concurrency}")
    print(f"file system:       {where} (TMPDIR={tempfile.gettempdir()})")
    print(f"wall time:         {got['wall']:.2f} s (first agent's start to the last agent's end)")
    print(f"to the last land:  {got['landed']:.2f} s ({100 * got['agent_seconds'] / (got['landed'] * args.concurrency):.1f}%"
          " of the slots' time up to then)")
    print(f"agent-seconds:     {got['agent_seconds']:.2f} s in {got['agents']:.0f} agent runs")
    print(f"slot utilisation:  {100 * utilisation:.1f}%  (agent-seconds / (wall x slots); target >= 95%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
