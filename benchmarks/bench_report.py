"""Benchmark of `report` on a large store. Prints its figures; asserts nothing.

    .venv/bin/python benchmarks/bench_report.py [--tasks 100000]

Builds a state database with N work tasks spread over 30 days, each with a dev, a verify (two check
phases under it) and an integrate attempt, one task in ten failing its first verification and being
developed again; then times reading the rows (one pass of SQL), building the document, and
rendering the text and the HTML file, and prints the HTML file's size.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runner.report import build_report, render_text
from runner.report_html import render_html
from runner.report_query import read_inputs
from runner.state import open_db


def populate(path: Path, tasks: int) -> int:
    """Write ``tasks`` tasks and their runs straight into a migrated database; the number of rows."""
    open_db(path).close()
    conn = sqlite3.connect(path)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    task_rows = []
    run_rows: list[tuple[object, ...]] = []
    next_id = 1

    def run(task: str, phase: str, status: str, at: datetime, seconds: float, **extra: object) -> int:
        nonlocal next_id
        run_rows.append((next_id, task, phase, 0, status, extra.get("cost", 0.0), at.isoformat(timespec="microseconds"),
                         (at + timedelta(seconds=seconds)).isoformat(timespec="microseconds"),
                         extra.get("parent"), seconds if extra.get("parent") else None, extra.get("tree")))  # fmt: skip
        next_id += 1
        return next_id - 1

    for n in range(tasks):
        task = f"t-{n + 1}"
        created = start + timedelta(seconds=n * 30 * 86400 / tasks)
        task_rows.append((task, f"task number {n + 1}", "done", created.isoformat(timespec="microseconds")))
        at = created + timedelta(minutes=5)
        for attempt in range(2 if n % 10 == 0 else 1):
            failing = n % 10 == 0 and attempt == 0
            run(task, "dev", "success", at, 300 + n % 120, cost=25.0)
            at += timedelta(seconds=420)
            verify = run(task, "verify", "failure" if failing else "success", at, 60)
            run(task, "lint", "success", at, 5 + n % 7, parent=verify, tree=f"{n:040x}")
            run(task, "unit", "failure" if failing else "success", at, 40 + n % 30, parent=verify,
                tree=f"{n:040x}")  # fmt: skip
            at += timedelta(seconds=90)
        run(task, "integrate", "success", at, 20)
    conn.executemany(
        "INSERT INTO tasks (id, title, status, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
        [(*row, row[3]) for row in task_rows],
    )
    conn.executemany(
        "INSERT INTO pipeline_runs (id, task_id, phase, patchset, status, cost_cents, started_at, finished_at, "
        "parent_id, duration, tree) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        run_rows,
    )
    conn.commit()
    conn.close()
    return len(run_rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        path = Path(tmp) / "state.db"
        rows = populate(path, args.tasks)
        db = open_db(path, create=False)
        t0 = time.perf_counter()
        inputs = read_inputs(db, None)
        t1 = time.perf_counter()
        report = build_report(inputs, datetime(2026, 2, 1, tzinfo=UTC), None)
        t2 = time.perf_counter()
        text = render_text(report)
        t3 = time.perf_counter()
        page = render_html(report)
        t4 = time.perf_counter()
        db.close()
    print(f"{args.tasks} tasks, {rows} run rows")
    print(f"  read rows (SQL)   {t1 - t0:6.2f} s")
    print(f"  build document    {t2 - t1:6.2f} s")
    print(f"  render text       {t3 - t2:6.2f} s  ({len(text) / 1e6:.1f} MB)")
    print(f"  render HTML       {t4 - t3:6.2f} s  ({len(page) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
