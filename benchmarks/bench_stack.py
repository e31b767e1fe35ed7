"""Benchmark of stacked integration. Prints its figures; asserts nothing.

    .venv/bin/python benchmarks/bench_stack.py [--tasks 16] [--seconds 2] [--concurrency 4] [--window 4]

1. Stacked vs one lane, in one run: N independent tasks through the real
   ``pipeline-runner run --until-idle`` with an instant fake agent, concurrency C, one phase of S
   seconds (``sleep S``) on both stages and ``check_concurrency`` C; once with ``integrate.window:
   1`` (one lane) and once with ``integrate.window: W``. The figure is the ratio of the two wall
   times (target <= 0.4 for 16 tasks, 2 s, concurrency 4, window 4).
2. Processes per task, in the stacked run: every process the runner starts, counted through
   shims on PATH for ``git`` and ``sleep`` and by the agent itself, divided by the tasks; git
   calls are split by the step that made them (read from the shim's log).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import AGENT, git

# A shim for a program: logs its argv to $SHIM_LOG (a NUL after each: arguments hold newlines),
# then runs the real one.
SHIM = """#!/bin/sh
printf '%s %s\\0' "$(basename "$0")" "$*" >> "$SHIM_LOG"
exec {real} "$@"
"""


def make_repo(path: Path, tasks: int, seconds: float, concurrency: int, window: int) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "live")
    (path / "README.md").write_text("bench\n")
    (path / "agent.py").write_text(AGENT)
    (path / ".git" / "info" / "exclude").write_text("pipeline.yaml\ntasks.yaml\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    (path / "pipeline.yaml").write_text(
        "base: live\n"
        f"concurrency: {concurrency}\n"
        f"check_concurrency: {concurrency}\n"
        "interval: 1\n"
        "check_base: false\n"
        f"integrate: {{window: {window}}}\n"
        f"agent: {{preset: command, command: ['{sys.executable}', '-I', '-S', '{path / 'agent.py'}']}}\n"
        "phases:\n"
        f"  test: {{run: [['sleep', '{seconds:g}']]}}   # on both stages (the default)\n"
    )
    lines = ["tasks:"] + [f"  - {{id: t{i}, title: task {i}}}" for i in range(1, tasks + 1)]
    (path / "tasks.yaml").write_text("\n".join(lines) + "\n")
    return path


def shims(bin_dir: Path) -> None:
    bin_dir.mkdir(parents=True)
    for name in ("git", "sleep"):
        real = shutil.which(name)
        assert real is not None, f"{name} is not installed"
        shim = bin_dir / name
        shim.write_text(SHIM.format(real=real))
        shim.chmod(0o755)


def land_all(work: Path, tasks: int, seconds: float, concurrency: int, window: int) -> tuple[float, list[str]]:
    """(wall seconds of `run --until-idle` landing every task, the shim log's lines)."""
    repo = make_repo(work / "repo", tasks, seconds, concurrency, window)
    runner = [sys.executable, "-m", "runner", "-q"]
    cwd_env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run([*runner, "task", "import", "tasks.yaml"], cwd=repo, env=cwd_env, check=True, capture_output=True)
    shims(work / "bin")
    log = work / "shim.log"
    env = {**cwd_env, "PATH": f"{work / 'bin'}{os.pathsep}{os.environ['PATH']}", "SHIM_LOG": str(log)}
    start = time.perf_counter()
    done = subprocess.run([*runner, "run", "--until-idle"], cwd=repo, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"run --until-idle exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    landed = len(git(repo, "log", "--format=%H", "live").splitlines()) - 1
    assert landed == tasks, f"{landed} commits landed for {tasks} tasks"
    return wall, [call for call in log.read_text().split("\0") if call] if log.exists() else []


def subcommand(argv: list[str]) -> str:
    """The git subcommand of an argv, past its global options (``-c k=v``, ``-C dir``, ``--git-dir=``)."""
    words = iter(argv)
    for word in words:
        if word in ("-c", "-C"):
            next(words, None)
        elif not word.startswith("-"):
            return word
    return "?"


def process_counts(calls: list[str], tasks: int) -> dict[str, float]:
    """Processes per task from the shims' log: git (the agent's own two calls included), git the
    runner started, recipes."""
    programs = collections.Counter(line.split()[0] for line in calls)
    # Each task's agent runs git twice (add, commit) itself; the rest is the runner's.
    runner_git = programs["git"] - 2 * tasks
    return {
        "runner git": runner_git / tasks,
        "recipes": programs["sleep"] / tasks,
        "git": programs["git"] / tasks,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--window", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one, _ = land_all(Path(tmp) / "one", args.tasks, args.seconds, args.concurrency, 1)
        stacked, calls = land_all(Path(tmp) / "stack", args.tasks, args.seconds, args.concurrency, args.window)
    print(f"{args.tasks} tasks, `sleep {args.seconds:g}` on both stages, concurrency {args.concurrency}, "
          f"check_concurrency {args.concurrency}")  # fmt: skip
    print(f"  one lane (window 1):      {one:6.2f} s")
    print(f"  stacked (window {args.window}):      {stacked:6.2f} s")
    print(f"  stacked / one lane:       {stacked / one:6.2f}   (target <= 0.4)")
    counts = process_counts(calls, args.tasks)
    print(f"processes per task (stacked run, {args.tasks} tasks):")
    print(f"  git started by the runner: {counts['runner git']:5.1f}")
    print(f"  recipes (sleep):           {counts['recipes']:5.1f}")
    print("  agent + its supervisor:      2.0   (plus the agent's own 2 git calls)")
    verbs = collections.Counter(subcommand(line.split()[1:]) for line in calls if line.startswith("git "))
    top = ", ".join(f"{verb} {count / args.tasks:.1f}" for verb, count in verbs.most_common(12))
    print(f"  git per task by subcommand (agent's included): {top}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
