"""Benchmark of the check graph. Prints its figures; asserts nothing.

    .venv/bin/python benchmarks/bench_phases.py [--figure N]... [--repeat 3] [--tasks 16] [--seconds 2]
        [--rows 100000] [--no-independent]

1. Side by side: four independent phases of 1 s each (``sleep 1``) on one tree through
   ``phases.checks.run_graph`` with check_concurrency 4: the wall time of the verification
   (target <= 1.3 s), the same graph with check_concurrency 1 for comparison, and the floor of
   one recipe: ``true`` run under the supervisor every recipe runs under.
2. Reuse at integration: N tasks through the real ``pipeline-runner run --until-idle`` with an
   instant fake agent and concurrency 4, one phase on both stages that takes S seconds. Each task
   depends on the one before, so base does not move between its verification and its integration
   and the candidate's tree is the verified tree. The figure is the total time of the
   integrate-stage checks, read from the phases' rows in state.db: with the cache (reused, about 0)
   and with ``--no-cache`` (N x S). The same with N independent tasks, developed four at a time,
   shows what reuse is left when base does move: only a task whose candidate equals its verified
   tree (the first to land on a base that did not move since its agent started) reuses its pass.
3. Cache lookup: the cost per phase of deciding that a pass can be reused (content key and lookup
   in check_results) with R passes in the table (target <= 5 ms), and of a whole graph of four
   phases that are all reused.
"""

from __future__ import annotations

import argparse
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import AGENT, GIT_ENV, git
from phases.checks import GraphRun, run_graph
from phases.outcomes import VerifyStatus
from runner import procs
from runner.checkcache import CheckCache, cache_key
from runner.config import PhaseConfig
from runner.state import now_iso, open_db


def spread(values: list[float], unit: str = "s", scale: float = 1.0, digits: int = 2) -> str:
    shown = [f"{v * scale:.{digits}f}" for v in values]
    if len(values) == 1:
        return f"{shown[0]} {unit}"
    return (
        f"min {min(values) * scale:.{digits}f} {unit}, median {statistics.median(values) * scale:.{digits}f} {unit}"
        f"  ({', '.join(shown)})"
    )


def repeated(times: int, measure: Callable[[], float]) -> list[float]:
    return [measure() for _ in range(times)]


# -- 1. side by side ---------------------------------------------------------------------------------


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def graph_wall_time(
    work: Path, phases: int, seconds: float, slots: int, cpu: list[float] | None = None
) -> float:
    """Wall time of one verification of ``phases`` independent phases of ``seconds`` each (and,
    into ``cpu``, the CPU seconds of the processes it started: supervisors and recipes)."""
    checkout = work / "checkout"
    checkout.mkdir(parents=True, exist_ok=True)
    graph = {f"p{i}": PhaseConfig(run=[["sleep", f"{seconds:g}"]]) for i in range(phases)}
    cpu_before = children_cpu()
    start = time.perf_counter()
    result = run_graph(
        GraphRun(
            phases=graph, stage="verify", tree="bench", workdir=lambda: checkout, values={},
            log_dir=work / "logs", slots=threading.BoundedSemaphore(slots), cache=None,
        )
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    if cpu is not None:
        cpu.append(children_cpu() - cpu_before)
    assert result.status is VerifyStatus.PASS, result.summary
    return elapsed


def supervised_true(work: Path) -> float:
    """Wall time of ``true`` run as every recipe is: under the supervisor, its output to a log."""
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    done = procs.run_logged(["true"], work, log_path=work / "true.log", timeout=60)
    elapsed = time.perf_counter() - start
    assert done.ok, done.error
    return elapsed


# -- 2. reuse at integration -----------------------------------------------------------------------


def make_repo(path: Path, seconds: float, tasks: int, chain: bool) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "live")
    (path / "README.md").write_text("bench\n")
    (path / "agent.py").write_text(AGENT)
    (path / ".git" / "info" / "exclude").write_text("_/\npipeline.yaml\ntasks.yaml\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    (path / "pipeline.yaml").write_text(
        "base: live\n"
        "concurrency: 4\n"
        "check_concurrency: 4\n"
        "interval: 0.2\n"
        "limits: {max_retries: 1}\n"
        f"agent: {{preset: command, command: ['{sys.executable}', '-I', '-S', '{path / 'agent.py'}']}}\n"
        "phases:\n"
        f"  test: {{run: [['sleep', '{seconds:g}']]}}   # on both stages (the default)\n"
    )
    lines = ["tasks:"]
    for index in range(1, tasks + 1):
        after = f", depends_on: [t{index - 1}]" if chain and index > 1 else ""
        lines.append(f"  - {{id: t{index}, title: task {index}{after}}}")
    (path / "tasks.yaml").write_text("\n".join(lines) + "\n")
    return path


def integrate_check_time(
    work: Path, tasks: int, seconds: float, *, chain: bool, use_cache: bool
) -> tuple[float, int, float]:
    """(seconds of integrate-stage checks in total, how many were reused, the run's wall time)."""
    repo = make_repo(work, seconds, tasks, chain)
    runner = [sys.executable, "-m", "runner", "-q"]
    subprocess.run([*runner, "task", "import", "tasks.yaml"], cwd=repo, check=True, capture_output=True)
    start = time.perf_counter()
    done = subprocess.run(
        [*runner, "run", "--until-idle", *([] if use_cache else ["--no-cache"])],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"run --until-idle exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    landed = len(git(repo, "log", "--format=%H", "live").splitlines()) - 1
    assert landed == tasks, f"{landed} commits landed for {tasks} tasks"
    db = sqlite3.connect(repo / ".pipeline-runner" / "state.db")
    try:
        total, count, reused = db.execute(
            "SELECT SUM(c.duration), COUNT(*), SUM(c.cached_from IS NOT NULL) FROM pipeline_runs c "
            "JOIN pipeline_runs p ON c.parent_id = p.id "
            "WHERE p.phase = 'integrate' AND p.status = 'success' AND c.phase = 'test'"
        ).fetchone()
    finally:
        db.close()
    assert count == tasks, f"{count} integrate-stage checks for {tasks} tasks"
    return float(total or 0.0), int(reused or 0), wall


# -- 3. cache lookup -------------------------------------------------------------------------------


def fill_cache(path: Path, rows: int, argvs: list[list[str]], on: list[str]) -> CheckCache:
    db = open_db(path)
    passed_at = now_iso()
    with db.write() as conn:
        conn.executemany(
            "INSERT INTO check_results (key, phase, tree, run_id, duration, exit_code, passed_at) "
            "VALUES (?, ?, ?, ?, ?, 0, ?)",
            (
                (
                    cache_key(f"{i:040x}", f"p{i % 4}", argvs, {}, on),
                    f"p{i % 4}",
                    f"{i:040x}",
                    i,
                    1.0,
                    passed_at,
                )
                for i in range(rows)
            ),
        )
    return CheckCache(db)


def lookup_ms(
    cache: CheckCache, rows: int, argvs: list[list[str]], on: list[str], hits: bool, lookups: int = 2000
) -> float:
    """Mean milliseconds to compute one phase's key and look it up."""
    start = time.perf_counter()
    for n in range(lookups):
        i = (n * 7919) % rows
        tree = f"{i:040x}" if hits else f"{i:039x}z"
        found = cache.lookup(cache_key(tree, f"p{i % 4}", argvs, {}, on))
        assert (found is not None) == hits
    return (time.perf_counter() - start) / lookups * 1000


def cached_graph_ms(cache: CheckCache, work: Path, argvs: list[list[str]], graphs: int = 200) -> float:
    """Mean milliseconds per phase of a run_graph whose four phases are all reused."""
    phases = {f"p{i}": PhaseConfig(run=argvs) for i in range(4)}
    tree = f"{1234:040x}"
    for i in range(4):
        cache.store(
            cache_key(tree, f"p{i}", argvs, {}, phases[f"p{i}"].on),
            phase=f"p{i}",
            tree=tree,
            run_id=1,
            duration=1.0,
        )

    def no_checkout() -> Path:
        raise AssertionError("a graph that is all reused makes no checkout")

    start = time.perf_counter()
    for _ in range(graphs):
        result = run_graph(
            GraphRun(
                phases=phases, stage="integrate", tree=tree, workdir=no_checkout, values={},
                log_dir=work / "logs", slots=threading.BoundedSemaphore(4), cache=cache,
            )
        )  # fmt: skip
        assert result.status is VerifyStatus.PASS, result.summary
    return (time.perf_counter() - start) / graphs / 4 * 1000


def figure_side_by_side(work: Path, repeat: int) -> None:
    print("\n1. four independent phases of 1 s each on one tree, through run_graph")
    cpu: list[float] = []
    side = repeated(repeat, lambda: graph_wall_time(work / "graph", 4, 1.0, 4, cpu))
    print(f"   check_concurrency 4:  {spread(side)}  (target <= 1.3 s)")
    print(f"   CPU of the processes one verification started: {spread(cpu)}")
    serial = graph_wall_time(work / "graph", 4, 1.0, 1)
    print(f"   check_concurrency 1:  {serial:.2f} s")
    floor = repeated(repeat, lambda: supervised_true(work / "floor"))
    print(f"   one supervised `true`: {spread(floor)}")


def figure_reuse(work: Path, tasks: int, seconds: float, independent: bool) -> None:
    print(
        f"\n2. {tasks} tasks, concurrency 4, a phase of {seconds:g} s on both stages, real `pipeline-runner run --until-idle`"
    )
    runs = [("each task depends on the one before: base does not move between verify and integration", True)]
    if independent:
        runs.append(("independent tasks, developed four at a time: base moves under most of them", False))
    for title, chain in runs:
        print(f"   {title}")
        for label, use_cache in (("with the cache", True), ("--no-cache", False)):
            total, reused, wall = integrate_check_time(
                work / f"{'chain' if chain else 'free'}-{use_cache}",
                tasks,
                seconds,
                chain=chain,
                use_cache=use_cache,
            )
            print(
                f"   {label:<15} integrate-stage checks {total:6.2f} s in total, {reused}/{tasks} reused"
                f"  (run {wall:.1f} s)"
            )


def figure_lookup(work: Path, repeat: int, rows: int) -> None:
    print(f"\n3. cache lookup with {rows} passes in check_results")
    argvs = [["python", "-m", "pytest", "-q", "tests/unit"]]
    on = ["verify", "integrate"]
    cache = fill_cache(work / "cache" / "state.db", rows, argvs, on)
    hit = repeated(repeat, lambda: lookup_ms(cache, rows, argvs, on, True))
    miss = repeated(repeat, lambda: lookup_ms(cache, rows, argvs, on, False))
    graph = repeated(repeat, lambda: cached_graph_ms(cache, work / "cached", argvs))
    print(f"   key + lookup, a hit:   {spread(hit, 'ms', digits=3)}  (target <= 5 ms)")
    print(f"   key + lookup, a miss:  {spread(miss, 'ms', digits=3)}")
    print(f"   run_graph, 4 phases all reused, per phase:  {spread(graph, 'ms', digits=3)}")
    cache.db.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--figure", type=int, action="append", choices=[1, 2, 3], help="only these figures")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of the cheap figures (1 and 3)")
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of the phase in figure 2")
    parser.add_argument("--rows", type=int, default=100_000, help="passes in check_results for figure 3")
    parser.add_argument(
        "--no-independent", action="store_true", help="skip the independent tasks of figure 2"
    )
    args = parser.parse_args()
    figures = set(args.figure or (1, 2, 3))
    os.environ.update(GIT_ENV)
    for name in [n for n in os.environ if n.startswith("PIPELINE_")]:
        del os.environ[name]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} cores, load average {load}")
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-", ignore_cleanup_errors=True) as tmp:
        work = Path(tmp)
        if 1 in figures:
            figure_side_by_side(work, args.repeat)
        if 2 in figures:
            figure_reuse(work, args.tasks, args.seconds, not args.no_independent)
        if 3 in figures:
            figure_lookup(work, args.repeat, args.rows)
    print(f"\nload average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
