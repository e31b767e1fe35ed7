"""A store far larger than any page: what a person or the loop reads follows the work shown, not
the history. Real SQLite stores built with executemany (260,000 tasks in about a second), real git
repositories, the CLI and `run --once` as real processes."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from runner import state
from runner.config import load_config
from runner.scheduler import Pipeline
from runner.sqldialect import SQLITE
from runner.state import Phase, Runs, RunStatus, open_db
from runner.tasklist import DEFAULT_LIMIT
from runner.tasks import Author, BuiltinTaskStore, TaskStatus
from runner.workspace import TASK_REFS
from tests.conftest import CLI, clean_env, git, make_repo, write_config

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "store.py"
AGENT = """\
import os, subprocess
tid = os.environ["PIPELINE_TASK_ID"]
open(f"{tid}.txt", "w").write("done\\n")
subprocess.run(["git", "add", f"{tid}.txt"], check=True)
subprocess.run(["git", "commit", "-q", "-m", f"Do {tid}"], check=True)
"""


def pipeline_repo(where: Path) -> Path:
    """A repository whose config runs an agent that commits one file and a check that passes."""
    repo = make_repo(where / "repo")
    (where / "agent.py").write_text(AGENT)
    write_config(
        repo,
        json.dumps({
            "base": "live", "concurrency": 2, "interval": 1, "check_base": False,
            "agent": {"preset": "command", "command": f"{sys.executable} {where / 'agent.py'} {{prompt_file}}"},
            "phases": {"verify": {"run": ["true"]}},
        }),
    )  # fmt: skip
    (repo / ".git" / "info" / "exclude").write_text("pipeline.yaml\n")
    return repo


def bulk_store(state_db: Path, done: int, open_: int, *, with_history: int = 0) -> None:
    """``done`` done tasks and ``open_`` open ones, written with executemany into a migrated
    database; the first ``with_history`` done tasks get two comments and a landed attempt, and
    every tenth done task depends on the one before it."""
    open_db(state_db).close()  # created and migrated as the runner does
    conn = sqlite3.connect(state_db)
    stamp = "2026-01-01T00:00:00.{:06d}+00:00"
    rows = [(f"d-{i}", f"done {i}", "done", stamp.format(i % 1_000_000)) for i in range(done)]
    rows += [(f"o-{i}", f"open {i}", "open", f"2027-01-01T00:00:00.{i:06d}+00:00") for i in range(open_)]
    with conn:
        conn.executemany(
            "INSERT INTO tasks (id, title, status, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
            ((i, t, s, c, c) for i, t, s, c in rows),
        )
        conn.executemany(
            "INSERT INTO task_dependencies (task_id, depends_on) VALUES (?, ?)",
            ((f"d-{i}", f"d-{i - 1}") for i in range(10, done, 10)),
        )
        conn.executemany(
            "INSERT INTO task_comments (task_id, author, body, created_at) VALUES (?, 'system', ?, ?)",
            ((f"d-{i}", f"Pipeline: note {n} on d-{i}", stamp.format(0)) for i in range(with_history) for n in (1, 2)),
        )
        conn.executemany(
            "INSERT INTO pipeline_runs (task_id, phase, patchset, status, started_at, finished_at, after_sha) "
            "VALUES (?, 'integrate', 0, 'success', ?, ?, ?)",
            ((f"d-{i}", stamp.format(0), stamp.format(1), f"{i:040x}") for i in range(with_history)),
        )
    conn.close()


def root_of(repo: Path) -> Path:
    return repo / ".pipeline-runner"


def test_a_store_of_260000_tasks_lists_its_done_tasks_and_runs_a_cycle(cli: CLI, tmp_path: Path) -> None:
    # One bound parameter per task (an IN list of every id) fails past SQLite's cap of 250,000
    # ("too many SQL variables") and is what made listing and the loop's cycle crash.
    repo = pipeline_repo(tmp_path)
    bulk_store(root_of(repo) / "state.db", 260_000, 3, with_history=50)
    listed = cli("task", "list", "--status", "done", "--offset", "259990", cwd=repo)
    assert listed.code == 0, listed.err
    assert "too many SQL variables" not in listed.err
    lines = listed.out.splitlines()
    assert lines[0].startswith("ID") and [line.split()[0] for line in lines[1:]] == [f"d-{i}" for i in range(259990, 260000)]
    assert "(after d-259989)" in listed.out  # dependencies come with the tasks of a page
    store = BuiltinTaskStore(open_db(root_of(repo) / "state.db"))
    every_done = store.list_tasks(TaskStatus.DONE)  # the whole status, in-process: no cap either
    assert len(every_done) == 260_000 and every_done[20].dependencies == ("d-19",)
    assert every_done[1].comments == ()  # not read unless asked for
    store.db.close()
    once = subprocess.run(
        [sys.executable, "-m", "runner", "run", "--once"], cwd=repo, env=clean_env(), capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert once.returncode == 0, once.stderr
    assert "too many SQL variables" not in once.stderr
    status = cli("status", "--json", cwd=repo).json()
    # One cycle started both agents (their work is harvested by the next cycle).
    assert (status["done"], status["in_progress"], status["open"]) == (260_000, 2, 1)
    assert sorted(r["task_id"] for r in status["active_runs"]) == ["o-0", "o-1"]
    assert [q["id"] for q in status["queue"]] == ["o-2"]


def test_task_list_shows_a_page_and_says_how_to_see_the_rest(cli: CLI, tmp_path: Path) -> None:
    repo = pipeline_repo(tmp_path)
    bulk_store(root_of(repo) / "state.db", DEFAULT_LIMIT + 5, 2, with_history=3)
    first = cli("task", "list", cwd=repo)
    assert first.code == 0, first.err
    assert len(first.out.splitlines()) == 1 + DEFAULT_LIMIT
    assert "7 more tasks after these 200: `task list --offset 200` for the next page, `--all`" in first.err
    rest = cli("task", "list", "--offset", "200", cwd=repo)
    assert [line.split()[0] for line in rest.out.splitlines()[1:]] == ["d-200", "d-201", "d-202", "d-203", "d-204", "o-0", "o-1"]
    assert rest.err == ""  # nothing left after it
    # The columns of a later page line up with the first's: the widest id of the whole listing.
    assert rest.out.splitlines()[0] == first.out.splitlines()[0]
    some = cli("task", "list", "--status", "open,done", "--limit", "2", "--offset", "204", cwd=repo)
    assert [line.split()[0] for line in some.out.splitlines()[1:]] == ["d-204", "o-0"]
    assert "1 more task after these 2: `task list --offset 206`" in some.err
    every = cli("task", "list", "--all", cwd=repo)
    assert len(every.out.splitlines()) == 1 + DEFAULT_LIMIT + 7 and every.err == ""
    past = cli("task", "list", "--offset", "500", cwd=repo)
    assert past.code == 0 and past.out == "No tasks after the first 500.\n"


def test_task_list_json_lists_every_task_with_comments_unless_limited(cli: CLI, tmp_path: Path) -> None:
    repo = pipeline_repo(tmp_path)
    bulk_store(root_of(repo) / "state.db", DEFAULT_LIMIT + 1200, 1, with_history=2)
    every = cli("task", "list", "--json", cwd=repo)
    assert every.code == 0 and every.err == ""
    tasks = every.json()  # one JSON array, however many batches it was written in
    assert len(tasks) == DEFAULT_LIMIT + 1201 and tasks[-1]["id"] == "o-0"
    assert [c["body"] for c in tasks[1]["comments"]] == ["Pipeline: note 1 on d-1", "Pipeline: note 2 on d-1"]
    assert tasks[1200]["dependencies"] == ["d-1199"]
    page = cli("task", "list", "--json", "--limit", "3", "--offset", "1", cwd=repo)
    assert [t["id"] for t in page.json()] == ["d-1", "d-2", "d-3"]
    assert f"{DEFAULT_LIMIT + 1201 - 4} more tasks after these 3" in page.err
    assert cli("task", "list", "--json", "--status", "needs_help", cwd=repo).json() == []


@pytest.mark.parametrize(
    ("args", "named"),
    [(["--limit", "0"], "--limit"), (["--limit", "x"], "--limit"), (["--offset", "-1"], "--offset"),
     (["--all", "--limit", "3"], "not allowed with")],
)  # fmt: skip
def test_bad_paging_flags_are_usage_errors(cli: CLI, tmp_path: Path, args: list[str], named: str) -> None:
    repo = pipeline_repo(tmp_path)
    done = cli("task", "list", *args, cwd=repo)
    assert done.code == 2 and named in done.err


def test_a_page_reads_only_its_rows(tmp_path: Path) -> None:
    # In-process: the store's page against the whole listing it is part of.
    state_db = tmp_path / "state.db"
    bulk_store(state_db, 3000, 20, with_history=5)
    store = BuiltinTaskStore(open_db(state_db))
    whole = [t.id for t in store.list_tasks()]
    pages = []
    for offset in range(0, len(whole), 700):
        page = store.page(limit=700, offset=offset)
        assert page.total == 3020 and page.widest_id == len("d-2999")
        pages += [t.id for t in page.tasks]
    assert pages == whole
    opened = store.page({TaskStatus.OPEN}, limit=5, offset=18)
    assert [t.id for t in opened.tasks] == ["o-18", "o-19"] and opened.total == 20
    assert store.page({TaskStatus.OPEN, TaskStatus.DONE}, limit=1, offset=2999).tasks[0].id == "d-2999"
    with_comments = store.page(limit=2, with_comments=True).tasks
    assert [len(t.comments) for t in with_comments] == [2, 2]
    assert store.counts() == {**{s.value: 0 for s in TaskStatus}, "done": 3000, "open": 20}


def test_the_queue_reads_unfinished_tasks_and_what_they_depend_on(tmp_path: Path) -> None:
    state_db = tmp_path / "state.db"
    bulk_store(state_db, 100, 0)
    store = BuiltinTaskStore(open_db(state_db))
    from runner.tasks import NewTask

    store.add(NewTask("after a done one", id="w-1", dependencies=["d-5"]))
    store.add(NewTask("after an open one", id="w-2", dependencies=["w-1"]))
    store.set_status("d-7", TaskStatus.CANCELLED, by_person=True)
    store.add(NewTask("after a cancelled one", id="w-3", dependencies=["d-7"]))
    tasks, statuses = store.unfinished()
    assert [t.id for t in tasks] == ["d-7", "w-1", "w-2", "w-3"]
    # The done dependency is known as done; no other done task is read.
    assert statuses == {"d-5": TaskStatus.DONE, "d-7": TaskStatus.CANCELLED, "w-1": TaskStatus.OPEN,
                        "w-2": TaskStatus.OPEN, "w-3": TaskStatus.OPEN}  # fmt: skip


def git_counter(where: Path) -> tuple[Path, Path]:
    """A directory holding a `git` that logs each call's arguments, then runs the real git."""
    real = shutil.which("git")
    shims = where / "shims"
    shims.mkdir()
    log = where / "git-calls.log"
    shim = shims / "git"
    shim.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {real} "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    return shims, log


def reconcile_calls(where: Path, done: int, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The git commands recovery at start runs on a store of ``done`` done tasks with history,
    two of which kept their ref (a kill between landing and the cleanup)."""
    repo = pipeline_repo(where)
    root = root_of(repo)
    bulk_store(root / "state.db", done, 2, with_history=done)
    for task_id in ("d-3", "d-11"):
        git(repo, "update-ref", f"{TASK_REFS}{task_id}", "live")
    shims, log = git_counter(where)
    with monkeypatch.context() as patched:
        patched.setenv("PATH", f"{shims}{os.pathsep}{os.environ['PATH']}")
        loaded = load_config(repo / "pipeline.yaml")
        pipeline = Pipeline(loaded.config, open_db(loaded.config.state_db))
        try:
            pipeline.reconcile()
        finally:
            pipeline.close()
    assert git(repo, "for-each-ref", TASK_REFS) == ""  # what the done tasks held is released
    store = BuiltinTaskStore(open_db(root / "state.db"))
    assert store.counts()["done"] == done and store.get("d-3").comments[0].author is Author.SYSTEM
    last = Runs(store.db).last_attempt("d-1", Phase.INTEGRATE)
    assert last is not None and last.status is RunStatus.SUCCESS  # the history is left as it was
    store.db.close()
    # Without the temporary paths, which differ between the two pipelines.
    return [" ".join(a for a in line.split() if str(where) not in a) for line in log.read_text().splitlines()]


def test_reconcile_makes_the_same_git_calls_however_many_tasks_are_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = reconcile_calls(tmp_path / "small", 20, monkeypatch)
    large = reconcile_calls(tmp_path / "large", 4000, monkeypatch)
    assert large == small
    # The runner's task refs are read in one call, not one per task (done or not).
    assert sum(1 for c in large if "for-each-ref" in c.split()) == 1, large
    assert len(large) <= 8, large


def test_the_store_benchmark_builds_its_store_with_the_store_api(tmp_path: Path) -> None:
    # What rots first when the store's API changes: the benchmark's builder. In-process, small.
    spec = importlib.util.spec_from_file_location("bench_store", BENCHMARK)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    repo = bench.build(tmp_path, 60)
    store = BuiltinTaskStore(open_db(Path(f"{repo}.root") / "state.db"))
    assert store.counts()["done"] == 59 and store.counts()["open"] == 1
    assert [c.author for c in store.get("d-1").comments][-1] is Author.HUMAN
    assert len(Runs(store.db).for_task("d-0")) == 5  # failed its first verify: dev, verify, dev, verify, integrate
    store.db.close()
    assert bench.reconcile_seconds(repo) >= 0


@pytest.mark.skipif(os.environ.get("SLOW_TESTS") != "1", reason="about 7 s of CLI processes (SLOW_TESTS=1)")
def test_the_store_benchmark_runs_on_a_small_store() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARK), "--tasks", "300", "--small", "30", "--repeat", "1"],
        capture_output=True, text=True, timeout=300, env=clean_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "run --once" in done.stdout and "status start-up" in done.stdout


def test_what_the_loop_and_status_ask_per_task_is_read_through_an_index(tmp_path: Path) -> None:
    # Every statement these calls run, as SQLite would execute it, must search an index rather
    # than scan a table of the whole history (the plan is SQLite's own, for the real statement).
    state_db = tmp_path / "state.db"
    bulk_store(state_db, 200, 5, with_history=200)
    db = open_db(state_db)
    store, runs = BuiltinTaskStore(db), Runs(db)
    statements: list[str] = []
    assert isinstance(db.conn, sqlite3.Connection)
    db.conn.set_trace_callback(statements.append)
    runs.failures_since("o-1", None)
    runs.latest("o-1")
    runs.last_attempt("o-1", Phase.INTEGRATE)
    runs.last_failure("o-1")
    runs.total_cost("o-1")
    runs.cost_since("2026-11-01T00:00:00+00:00")
    runs.finished_since("2026-11-01T00:00:00+00:00")
    runs.running(Phase.DEV)
    store.list_tasks(TaskStatus.IN_PROGRESS)
    store.page({TaskStatus.DONE}, limit=10, offset=100)
    store.page(limit=10, offset=100)
    store.get("d-5")
    runs.landing_candidates()
    store.ready()
    store.unfinished()
    store.blocked()
    store.counts_by_type()
    db.conn.set_trace_callback(None)
    assert len(statements) >= 15
    for sql in statements:
        steps = [str(row[3]) for row in db.conn.execute("EXPLAIN QUERY PLAN " + sql)]
        # A walk along an index (in order, up to a LIMIT; or counting a covering one) is fine.
        scans = [s for s in steps if s.startswith("SCAN ") and "USING" not in s and "json_each" not in s]
        assert scans == [], (sql, steps)
        # By the task, or by when: not every failure (or every attempt) ever recorded.
        if "FROM pipeline_runs WHERE task_id =" in sql:
            assert any("(task_id=?" in s for s in steps), (sql, steps)
        if "WHERE finished_at >=" in sql:
            assert any("(finished_at>?)" in s for s in steps), (sql, steps)
        if sql.startswith("SELECT t.* FROM tasks") and "LIMIT" in sql and "json_each" not in sql:
            # A page of all tasks or of one status: in index order, not every matching row sorted.
            assert not any("TEMP B-TREE" in s for s in steps), (sql, steps)
    db.close()


def test_the_total_cost_is_kept_through_every_write_and_from_an_older_database(tmp_path: Path) -> None:
    # A database of the previous schema, with attempts that cost something already.
    old = tmp_path / "old.db"
    conn = sqlite3.connect(old)
    for script in state.MIGRATIONS[:4]:
        conn.executescript(state.migration_sql(script, SQLITE))
    conn.execute("PRAGMA user_version = 4")
    conn.execute("INSERT INTO tasks (id, title, created_at, updated_at) VALUES ('a', 'a', 'x', 'x')")
    conn.executemany(
        "INSERT INTO pipeline_runs (task_id, phase, patchset, status, cost_cents, started_at) "
        "VALUES ('a', 'dev', 0, 'success', ?, 'x')",
        [(0.1,), (0.2,), (41.7,)],
    )
    conn.commit()
    conn.close()
    db = open_db(old)  # migrated: the total starts from what was there
    runs, store = Runs(db), BuiltinTaskStore(db)

    def summed() -> float:
        return round(float(db.scalar("SELECT COALESCE(SUM(cost_cents), 0) FROM pipeline_runs")), 6)

    assert runs.total_cost() == summed() == 42.0
    from runner.tasks import NewTask

    store.add(NewTask("b", id="b"))
    first = runs.start("b", Phase.DEV, 0)
    runs.finish(first, RunStatus.SUCCESS, cost_cents=12.345678)
    assert runs.total_cost() == summed()
    runs.update(first, cost_cents=2.5)  # a cost corrected after the fact
    check = runs.start_check(first, "b", "unit", 0)
    runs.finish(check, RunStatus.FAILURE)
    assert runs.total_cost() == summed() == 44.5
    store.delete("a")  # its attempts go with it
    assert runs.total_cost() == summed() == 2.5
    db.close()
