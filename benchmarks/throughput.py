"""Benchmark: the throughput figures at real sizes in one table, each beside the figure measured
before the work on it. Runs the other benchmarks' measurements (a few minutes); asserts nothing.

    .venv/bin/python benchmarks/throughput.py [--quick]

Each row is measured in this run, by the function of the benchmark named in its last column (see
each for what it does); ``before`` is the figure measured on the code before stacked integration,
the store's rework and warm workspaces, on the same 2-core machine. ``--quick`` uses smaller sizes
(a 10,000-task store, 2 repeats) to see that everything runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import bench_stack, startup, store, task_start, utilisation
from benchmarks.common import GIT_ENV
from runner.logs import setup_stderr

Row = tuple[str, str, str, str, str]  # what, before, now, target, benchmark


def stacked() -> list[Row]:
    """Stacked integration vs one lane, and processes per task of the stacked run."""
    with tempfile.TemporaryDirectory(prefix="bench-tp-stack-") as tmp:
        one, _ = bench_stack.land_all(Path(tmp) / "one", 16, 2.0, 4, 1)
        stack, calls = bench_stack.land_all(Path(tmp) / "stack", 16, 2.0, 4, 4)
    counts = bench_stack.process_counts(calls, 16)
    return [
        ("16 tasks, 2 s check, concurrency 4: stacked / one lane", "34.9 s in one lane",
         f"{stack / one:.2f} ({stack:.1f} s vs {one:.1f} s)", "<= 0.4", "bench_stack.py"),
        ("git processes per task", "15 in integration alone",
         f"{counts['git']:.1f} in all ({counts['runner git']:.1f} by the runner)", "as few as needed",
         "bench_stack.py"),
    ]  # fmt: skip


def store_size(tasks: int, repeat: int) -> list[Row]:
    """One `run --once` and a `task list` page on a big store vs a small one."""
    with tempfile.TemporaryDirectory(prefix="bench-tp-store-") as tmp:
        where = Path(tmp)
        big, small = store.build(where, tasks), store.build(where, 100)
        page = store.best(repeat, lambda: store.cli(big, "task", "list"))
        cycle_big, cycle_small = store.run_once(big), store.run_once(small)
    return [
        (f"one real `run --once`, {tasks:,} tasks / 100", "2.10 (141-178 s)",
         f"{cycle_big / cycle_small:.2f} ({cycle_big * 1000:.0f} ms vs {cycle_small * 1000:.0f} ms)", "<= 1.5",
         "store.py"),
        (f"`task list`, {tasks:,} tasks with history", "4.3 s, 539 MiB", f"{page * 1000:.0f} ms (a page)",
         "<= 300 ms", "store.py"),
    ]  # fmt: skip


def slots() -> list[Row]:
    """Slot utilisation, 64 agents of 1 s at concurrency 8."""
    with tempfile.TemporaryDirectory(prefix="bench-tp-util-") as tmp:
        got = utilisation.measure(Path(tmp), 64, 8, 1.0)
    share = got["agent_seconds"] / (got["wall"] * 8)
    return [("slot utilisation, 64 x 1 s agents, concurrency 8", "79-84%", f"{100 * share:.1f}%", ">= 95%",
             "utilisation.py")]  # fmt: skip


def task_starts(repeat: int) -> list[Row]:
    """A task's start on a 20,000-file repository vs a 10-file one."""
    with tempfile.TemporaryDirectory(prefix="bench-tp-start-", ignore_cleanup_errors=True) as tmp:
        small = task_start.starts(Path(tmp) / "small", 10, repeat)
        large = task_start.starts(Path(tmp) / "large", 20_000, repeat)
    return [
        ("task start, 20,000 files / 10 files", "85x (cold `git worktree add`)",
         f"warm {large['warm'] / small['warm']:.1f}x ({large['warm'] * 1000:.0f} ms); cold {large['cold'] / small['cold']:.0f}x",
         "follows the diff", "task_start.py"),
    ]  # fmt: skip


def start_up(repeat: int) -> list[Row]:
    """Start-up of the read-only commands."""
    samples = startup.measure(repeat, 100)
    # Before: the same benchmark with --against 7dec868, the code before the config snapshot.
    before = {"status": "250 / 267 ms", "task list": "216 / 255 ms"}
    rows: list[Row] = []
    for name in ("status", "task list"):
        kept = samples[(name, "kept")]
        rows.append((f"`{name}` start-up, best / median", before[name],
                     f"{min(kept) * 1000:.0f} / {statistics.median(kept) * 1000:.0f} ms", "<= 120 ms", "startup.py"))  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    """Measure every row and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, to see that it runs")
    args = parser.parse_args(argv)
    tasks, repeat = (10_000, 2) if args.quick else (100_000, 3)
    os.environ.update(GIT_ENV)
    setup_stderr(-1)
    parts: list[Callable[[], list[Row]]] = [
        stacked, lambda: store_size(tasks, repeat), slots, lambda: task_starts(repeat), lambda: start_up(repeat * 4)
    ]
    rows = [row for part in parts for row in part()]
    rows += [
        ("260,000 tasks: `run --once`, `task list --status done`", "too many SQL variables", "work",
         "works", "tests/test_store_scale.py"),
        ("`run --once` from cron", "lands at most one task", "lands every task whose integration is ready",
         "every ready task", "tests/test_stack.py"),
        ("verified tasks waiting to land, fast agents", "~460 of 512", "at most integrate.max_waiting",
         "bounded", "tests/test_max_waiting.py"),
    ]  # fmt: skip
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores")
    print("| what | before | now | target | measured by |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
