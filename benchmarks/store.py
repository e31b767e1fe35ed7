"""Benchmark: what each command costs on a store of 100,000 tasks with history, next to 100.

    .venv/bin/python benchmarks/store.py [--tasks 100000] [--small 100] [--repeat 3] [--postgresql]

With ``--postgresql`` each store is a database of a PostgreSQL server started for the run
(Debian's server binaries, as the tests start it: tests/pg_server.py) instead of a SQLite file.

Builds two pipelines in a temporary directory, each a git repository with a `pipeline.yaml`
(a command agent that commits one file, one `true` check) and a state database of N tasks: one in
a hundred open, the rest done with the history a landed task leaves. The database is written with
the store's own API, in one transaction per store: ``BuiltinTaskStore.import_tasks`` for the tasks,
``Runs.start`` / ``Runs.start_check`` / ``Runs.finish`` for each done task's attempts (a dev, a
verify with two check phases under it, an integrate; one task in ten failed its first verify and
was developed again) and ``BuiltinTaskStore.comment`` for the comments the runner writes on the
way (four or six a task). Then it times, on each store (best of ``--repeat``):

- `run --once`: one real cycle with concurrency 2 (after a `run --once --dry-run` to warm caches,
  as the acceptance check does): recovery at start, two agents started;
- `status`, `task list` (its first page), `task list --all --json`, `task show` of a done task;
- `reconcile`: recovery at start, in-process (``runner.recovery.reconcile``);
- the import of the store's tasks through `task import` (a JSON Lines file);

and prints a table: each figure on N tasks, on the small store, and their ratio; then the
start-up of `status` (the process on the small store) and of `python -c pass` beside it.
Not a test (tests/test_store_scale.py runs it on a few hundred tasks so that it does not rot).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import AGENT, GIT_ENV, command_env
from runner.state import Phase, Runs, RunStatus, open_db
from runner.tasks import Author, BuiltinTaskStore, NewTask, TaskStatus

# Where each new store is made: None for a SQLite file under the root, or a function giving the URL
# of a new PostgreSQL database (--postgresql).
NEW_DATABASE: Callable[[], str] | None = None


def make_repo(repo: Path) -> str | Path:
    """A git repository on branch `live` with a pipeline.yaml whose agent commits one file; where
    its state is (a new PostgreSQL database with --postgresql, else its SQLite file)."""
    env = {**os.environ, **GIT_ENV}
    subprocess.run(["git", "init", "-q", "-b", "live", str(repo)], check=True, env=env)
    (repo / "README.md").write_text("# sample\n")
    (repo / "agent.py").write_text(AGENT)
    config = {
        "base": "live", "root": str(repo) + ".root", "concurrency": 2, "interval": 1,
        "agent": {"preset": "command", "command": f"{sys.executable} {repo / 'agent.py'} {{prompt_file}}",
                  "timeout": 30},
        "phases": {"verify": {"run": ["true"]}},
    }  # fmt: skip
    state: str | Path = Path(str(repo) + ".root") / "state.db"
    if NEW_DATABASE is not None:
        state = NEW_DATABASE()
        config["state"] = {"url": state}
    (repo / "pipeline.yaml").write_text(json.dumps(config, indent=1))
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "config"], cwd=repo, check=True, env=env)
    return state


def task_lines(tasks: int) -> list[str]:
    """The tasks of a store as `task import` reads them: one in a hundred open, the rest done."""
    open_count = max(1, tasks // 100)
    done = tasks - open_count
    lines = [json.dumps({"id": f"d-{i}", "title": f"done task {i}", "status": "done"}) for i in range(done)]
    lines += [json.dumps({"id": f"o-{i}", "title": f"open task {i}"}) for i in range(open_count)]
    return lines


def fill(state_db: Path | str, tasks: int) -> None:
    """Write ``tasks`` tasks and their history into ``state_db`` with the store's API (see above)."""
    db = open_db(state_db)
    store = BuiltinTaskStore(db)
    runs = Runs(db)
    records = [json.loads(line) for line in task_lines(tasks)]
    news = [NewTask(title=r["title"], id=r["id"], status=TaskStatus(r.get("status", "open"))) for r in records]
    with db.write():
        store.import_tasks(news)
        for n, new in enumerate(news):
            if new.status is not TaskStatus.DONE:
                continue
            assert new.id is not None
            task_id = new.id
            for attempt in range(2 if n % 10 == 0 else 1):
                failing = n % 10 == 0 and attempt == 0
                dev = runs.start(task_id, Phase.DEV, attempt, agent_run_id=f"{task_id}-{attempt}")
                store.comment(task_id, f"Pipeline: dev started (run={task_id}-{attempt}, patchset {attempt})", Author.SYSTEM)
                runs.finish(dev, RunStatus.SUCCESS, cost_cents=25.0, after_sha=f"{n:040x}", tokens=12000)
                store.comment(task_id, f"Pipeline: dev completed (run={task_id}-{attempt}, cost=25c)", Author.SYSTEM)
                verify = runs.start(task_id, Phase.VERIFY, attempt)
                status = RunStatus.FAILURE if failing else RunStatus.SUCCESS
                for phase in ("lint", "unit"):
                    check = runs.start_check(verify, task_id, phase, attempt, tree=f"{n:040x}")
                    runs.finish(check, status if phase == "unit" else RunStatus.SUCCESS, exit_code=0, duration=1.0)
                runs.finish(verify, status, error="unit failed" if failing else None)
            integrate = runs.start(task_id, Phase.INTEGRATE, 1 if n % 10 == 0 else 0)
            runs.finish(integrate, RunStatus.SUCCESS, after_sha=f"{n:040x}")
            store.comment(task_id, f"Pipeline: integrated into live at {n:040x}", Author.SYSTEM)
            store.comment(task_id, "Looks good to me.", Author.HUMAN)
    db.close()


def build(where: Path, tasks: int) -> Path:
    """A pipeline with ``tasks`` tasks and history under ``where``; its repository."""
    repo = where / f"store{tasks}"
    fill(make_repo(repo), tasks)
    return repo


def cli(repo: Path, *args: str) -> float:
    """Seconds one `pipeline-runner` command takes in ``repo`` (its exit code must be 0)."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "runner", "-c", "pipeline.yaml", *args], cwd=repo, capture_output=True,
        text=True, env=command_env(XDG_CACHE_HOME=str(repo) + ".cache"),
    )  # fmt: skip
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"`{' '.join(args)}` in {repo} exited {done.returncode}: {done.stderr[-2000:]}")
    return took


def best(repeat: int, measure: Callable[[], float]) -> float:
    """The least of ``repeat`` measurements."""
    return min(measure() for _ in range(repeat))


def reconcile_seconds(repo: Path) -> float:
    """Seconds ``runner.recovery.reconcile`` takes on the pipeline of ``repo``, in this process."""
    from runner.config import load_config
    from runner.scheduler import Pipeline

    loaded = load_config(repo / "pipeline.yaml")
    pipeline = Pipeline(loaded.config, open_db(loaded.config.state_target))
    try:
        started = time.perf_counter()
        pipeline.reconcile()
        return time.perf_counter() - started
    finally:
        pipeline.close()


def run_once(repo: Path) -> float:
    """Seconds of one real `run --once` (the agents it starts commit at once)."""
    cli(repo, "run", "--once", "--dry-run")
    return cli(repo, "run", "--once")


def import_seconds(where: Path, tasks: int) -> float:
    """Seconds `task import` takes for the tasks of a store of ``tasks`` into a fresh pipeline."""
    repo = where / f"import{tasks}"
    make_repo(repo)
    (repo / "t.jsonl").write_text("\n".join(task_lines(tasks)) + "\n")
    return cli(repo, "task", "import", "t.jsonl")


def measure(repo: Path, tasks: int, repeat: int, where: Path) -> dict[str, float]:
    """Every figure on the store of ``repo``."""
    figures = {
        "status": best(repeat, lambda: cli(repo, "status")),
        "task list": best(repeat, lambda: cli(repo, "task", "list")),
        "task list --all --json": best(repeat, lambda: cli(repo, "task", "list", "--all", "--json")),
        "task show": best(repeat, lambda: cli(repo, "task", "show", "d-1")),
        "reconcile": best(repeat, lambda: reconcile_seconds(repo)),
        "task import": import_seconds(where, tasks),
    }
    figures["run --once"] = run_once(repo)  # last: it changes the store
    return figures


def main(argv: list[str] | None = None) -> int:
    """Build both stores, time each figure, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--postgresql", action="store_true", help="each store in a PostgreSQL database")
    args = parser.parse_args(argv)
    server = None
    if args.postgresql:
        global NEW_DATABASE
        from tests.pg_server import server_binaries, start_server

        binaries = server_binaries()
        if binaries is None:
            raise SystemExit("no PostgreSQL server installed (Debian's postgresql)")
        server = start_server(binaries)
        NEW_DATABASE = server.database
    try:
        return _measure_all(args)
    finally:
        if server is not None:
            server.stop()


def _measure_all(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        where = Path(tmp)
        started = time.perf_counter()
        big = build(where, args.tasks)
        built = time.perf_counter() - started
        small = build(where, args.small)
        print(f"built {args.tasks} tasks with history in {built:.1f} s")
        large_figures = measure(big, args.tasks, args.repeat, where)
        small_figures = measure(small, args.small, args.repeat, where)
        startup = best(args.repeat, lambda: cli(small, "status"))
        bare = best(args.repeat, lambda: _python_pass())
    width = max(len(name) for name in large_figures)
    print(f"{'figure':<{width}}  {args.tasks:>9}  {args.small:>9}  ratio")
    for name, value in large_figures.items():
        other = small_figures[name]
        print(f"{name:<{width}}  {value * 1000:>7.0f}ms  {other * 1000:>7.0f}ms  {value / other:5.2f}")
    print(f"status start-up (small store): {startup * 1000:.0f} ms; python -c pass: {bare * 1000:.0f} ms")
    return 0


def _python_pass() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - started


if __name__ == "__main__":
    raise SystemExit(main())
