"""The store on both engines: every test here runs on a SQLite file and on a real PostgreSQL
database (the ``state_target`` fixture), through the same code the runner uses."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runner.checkcache import CheckCache
from runner.checkoutcomes import CheckOutcomes
from runner.config import load_config
from runner.errors import ConfigError, StateError, TaskError
from runner.report import load_report
from runner.sqldialect import POSTGRESQL, to_pyformat
from runner.state import (
    SCHEMA_VERSION,
    Database,
    Phase,
    Runs,
    RunStatus,
    last_of,
    latest_of,
    open_db,
    state_exists,
)
from runner.status import build_status
from runner.tasks import BuiltinTaskStore, NewTask, TaskChanges, TaskStatus, TaskType
from tests.conftest import CLI, make_repo, write_config


@pytest.fixture
def db(state_target: Path | str) -> Database:
    return open_db(state_target)


def test_tasks_are_added_listed_shown_and_paged_in_creation_order(db: Database) -> None:
    store = BuiltinTaskStore(db)
    epic = store.add(NewTask(title="epic", type=TaskType.EPIC))
    first = store.add(NewTask(title="first 100% done", parent=epic.id, tags=["a"]))
    second = store.add(NewTask(title="second", dependencies=[first.id], priority=0))
    store.comment(first.id, "it's a 'quoted' comment with ? and :name in it")
    assert [t.id for t in store.list_tasks()] == [epic.id, first.id, second.id]
    shown = store.get(first.id)
    assert shown.title == "first 100% done" and shown.tags == ("a",) and shown.parent == epic.id
    assert [c.body for c in shown.comments] == ["it's a 'quoted' comment with ? and :name in it"]
    assert store.get(second.id).dependencies == (first.id,)
    assert [t.id for t in store.ready()] == [epic.id, first.id]  # second waits for first
    assert store.dependants(first.id) == [second.id]
    page = store.page(limit=1, offset=1)
    assert [t.id for t in page.tasks] == [first.id] and page.total == 3
    assert [t.id for t in store.page({TaskStatus.OPEN, TaskStatus.DONE}, offset=2).tasks] == [second.id]
    assert store.page(parent=epic.id).total == 1
    assert store.counts() == {"open": 2, "in_progress": 0, "verified": 0, "done": 0, "needs_help": 0, "cancelled": 0}
    assert store.counts(None)["open"] == 3
    store.set_status(first.id, TaskStatus.DONE)
    assert [t.id for t in store.ready()] == [epic.id, second.id]
    with pytest.raises(TaskError, match="already exists"):
        store.add(NewTask(title="again", id=first.id))


def test_ties_in_creation_time_keep_insertion_order(db: Database) -> None:
    store = BuiltinTaskStore(db)
    for name in ("z", "a", "m"):
        store.add(NewTask(title=name, id=name))
    store.update("z", TaskChanges(dependencies=("m", "a")))
    with db.write() as conn:
        conn.execute("UPDATE tasks SET created_at = ?", ("2026-01-01T00:00:00+00:00",))
    assert [t.id for t in store.list_tasks()] == ["z", "a", "m"]
    assert store.get("z").dependencies == ("m", "a")
    assert [t.id for t in store.page(limit=2, offset=1).tasks] == ["a", "m"]


def test_only_an_open_task_is_claimable(db: Database) -> None:
    store = BuiltinTaskStore(db)
    store.add(NewTask(title="a", id="a"))
    with db.write():
        assert store.claimable("a") and not store.claimable("nope")
        store.set_status("a", TaskStatus.IN_PROGRESS)
        assert not store.claimable("a")


def test_a_claim_passes_over_a_row_another_transaction_holds(pg_url: str) -> None:
    store = BuiltinTaskStore(open_db(pg_url))
    store.add(NewTask(title="a", id="a"))
    other = open_db(pg_url)
    other.conn.execute("BEGIN")
    other.conn.execute("SELECT 1 FROM tasks WHERE id = 'a' FOR UPDATE")
    assert not store.claimable("a")  # not waited for: passed over
    other.conn.execute("ROLLBACK")
    assert store.claimable("a")


def test_a_refused_change_rolls_the_whole_transaction_back(db: Database) -> None:
    store = BuiltinTaskStore(db)
    store.add(NewTask(title="a", id="a"))
    store.add(NewTask(title="b", id="b", dependencies=["a"]))
    with pytest.raises(TaskError, match="cycle"):
        store.update("a", TaskChanges(dependencies=("b",)))
    assert store.get("a").dependencies == ()
    with pytest.raises(RuntimeError), db.write():
        store.set_status("a", TaskStatus.IN_PROGRESS)
        raise RuntimeError("the claim failed half way")
    assert store.get("a").status is TaskStatus.OPEN


def test_import_of_many_tasks_then_paging_and_counts(db: Database) -> None:
    store = BuiltinTaskStore(db)
    news = [NewTask(title=f"task {i}", id=f"i-{i}", dependencies=[f"i-{i - 1}"] if i else []) for i in range(300)]
    result = store.import_tasks(news)
    assert len(result.added) == 300
    again = store.import_tasks(news)  # idempotent
    assert not again.added and len(again.unchanged) == 300
    assert [t.id for t in store.page(limit=3, offset=297).tasks] == ["i-297", "i-298", "i-299"]
    assert store.page(limit=5, offset=299).total == 300
    assert store.counts()["open"] == 300
    assert [t.id for t in store.ready()] == ["i-0"]
    tasks, statuses = store.unfinished()
    assert len(tasks) == 300 and statuses["i-5"] is TaskStatus.OPEN


def test_runs_are_recorded_counted_and_summed(db: Database) -> None:
    store, runs = BuiltinTaskStore(db), Runs(db)
    task = store.add(NewTask(title="t"))
    dev = runs.start(task.id, Phase.DEV, 0)
    runs.update(dev, agent_run_id=f"{task.id}-{dev}", pid=123)
    runs.finish(dev, RunStatus.FAILURE, cost_cents=1.25, error="it broke")
    dev2 = runs.start(task.id, Phase.DEV, 0)
    runs.finish(dev2, RunStatus.SUCCESS, cost_cents=0.5)
    verify = runs.start(task.id, Phase.VERIFY, 0)
    check = runs.start_check(verify, task.id, "unit", 0, tree="abc")
    runs.finish(check, RunStatus.SUCCESS, exit_code=0, duration=1.5)
    running = runs.start_check(verify, task.id, "lint", 0)
    assert dev2 > dev and check > verify
    assert runs.get(dev) is not None and runs.get(dev).pid == 123  # type: ignore[union-attr]
    assert [r.id for r in runs.for_task(task.id)] == [dev, dev2, verify]
    assert [r.id for r in runs.running()] == [verify]
    count, last = runs.failures_since(task.id, None)
    assert count == 1 and last is not None
    assert runs.failures_since(task.id, last) == (0, None)
    assert runs.last_failure(task.id).error_summary == "it broke"  # type: ignore[union-attr]
    assert runs.latest(task.id).id == verify  # type: ignore[union-attr]
    assert runs.total_cost() == pytest.approx(1.75) and runs.total_cost(task.id) == pytest.approx(1.75)
    assert runs.cost_since("2000-01-01") == pytest.approx(1.75)
    assert [r.id for r in runs.finished_since("2000-01-01")] == [dev, dev2]
    checks = runs.checks([verify])[verify]
    assert [(c.phase, c.status, c.duration) for c in checks] == [("unit", RunStatus.SUCCESS, 1.5),
                                                                  ("lint", RunStatus.RUNNING, None)]
    assert set(runs.checks_by_id([check, running])) == {check, running}
    runs.cancel_running_checks("runner stopped")
    assert runs.checks_by_id([running])[running].status is RunStatus.CANCELLED
    runs.update(dev, cost_cents=2.25)  # the total follows an update and a delete (triggers)
    assert runs.total_cost() == pytest.approx(2.75)
    integrate = runs.start(task.id, Phase.INTEGRATE, 0, after_sha="abc")
    assert [r.id for r in runs.landing_candidates()] == [integrate]
    runs.finish(integrate, RunStatus.SUCCESS)
    assert runs.landed(task.id) == {"abc"}
    assert runs.last_attempt(task.id, Phase.INTEGRATE).id == integrate  # type: ignore[union-attr]
    store.set_status(task.id, TaskStatus.DONE)
    assert runs.landing_candidates() == []
    assert store.delete(task.id) == 4
    assert runs.total_cost() == 0 and runs.for_task(task.id) == []


def test_the_attempts_of_the_tasks_of_one_status_are_read_at_once_as_one_at_a_time(db: Database) -> None:
    store, runs = BuiltinTaskStore(db), Runs(db, owner=7)
    busy, other, idle = (store.add(NewTask(title=t)) for t in ("busy", "other", "idle"))
    store.set_status(busy.id, TaskStatus.IN_PROGRESS)
    store.set_status(other.id, TaskStatus.IN_PROGRESS)
    dev = runs.start(busy.id, Phase.DEV, 0)
    runs.finish(dev, RunStatus.SUCCESS, after_sha="abc")
    verify = runs.start(busy.id, Phase.VERIFY, 0)
    runs.start_check(verify, busy.id, "unit", 0)  # a phase row: not an attempt
    runs.finish(verify, RunStatus.CANCELLED, error="stopped")
    Runs(db, owner=8).start(other.id, Phase.DEV, 0)
    runs.start(idle.id, Phase.DEV, 0)  # open: not read
    found = runs.attempts_by_task(TaskStatus.IN_PROGRESS.value)
    assert set(found) == {busy.id, other.id}
    assert [r.id for r in found[busy.id]] == [r.id for r in runs.for_task(busy.id)] == [dev, verify]
    # The pure readers agree with the queries they replace.
    assert latest_of(found[busy.id]).id == runs.latest(busy.id).id == dev  # type: ignore[union-attr]
    assert last_of(found[busy.id], Phase.VERIFY).id == runs.last_attempt(busy.id, Phase.VERIFY).id  # type: ignore[union-attr]
    assert last_of(found[busy.id], Phase.INTEGRATE) is None
    assert [found[t][-1].owner for t in (busy.id, other.id)] == [runs.owner_of(busy.id), runs.owner_of(other.id)] == [7, 8]
    assert runs.attempts_by_task(TaskStatus.VERIFIED.value) == {}


def test_the_check_cache_and_outcomes(db: Database) -> None:
    cache, outcomes = CheckCache(db), CheckOutcomes(db)
    assert cache.lookup("k") is None
    cache.store("k", phase="unit", tree="t1", run_id=7, duration=2.0)
    cache.store("k", phase="unit", tree="t1", run_id=9, duration=3.0)  # the newest pass wins
    found = cache.lookup("k")
    assert found is not None and (found.run_id, found.duration, found.exit_code) == (9, 3.0, 0)
    assert outcomes.passed_before("k") and not outcomes.passed_before("other")
    outcomes.record("o", "unit", passed=True)
    outcomes.record("o", "unit", passed=False)
    outcomes.rerun("o", cleared=True)
    [flaky] = outcomes.flaky()
    assert (flaky.phase, flaky.passes, flaky.fails, flaky.reruns, flaky.cleared) == ("unit", 1, 1, 1, 1)


def test_the_report_reads_the_same_figures(db: Database, state_target: Path | str, tmp_path: Path) -> None:
    store, runs = BuiltinTaskStore(db), Runs(db)
    task = store.add(NewTask(title="t"))
    for status in (RunStatus.FAILURE, RunStatus.SUCCESS):
        row = runs.start(task.id, Phase.VERIFY, 0)
        check = runs.start_check(row, task.id, "unit", 0, tree="same")
        runs.finish(check, status, duration=0.25)
        runs.finish(row, status, cost_cents=1.0)
    report = load_report(tmp_path, None, state=state_target)
    assert report.summary.attempts == 0 and report.summary.failures == 1 and report.summary.cost_cents == 2.0
    assert [(f.phase, f.failures, f.passes) for f in report.flaky] == [("unit", 1, 1)]
    assert {p.name for p in report.phases} == {"verify", "unit"}


def test_reopening_migrates_nothing_and_a_newer_schema_is_refused(state_target: Path | str) -> None:
    db = open_db(state_target)
    BuiltinTaskStore(db).add(NewTask(title="kept", id="kept"))
    db.close()
    db = open_db(state_target)
    assert BuiltinTaskStore(db).get("kept").title == "kept"
    with db.write() as conn:
        if db.dialect is POSTGRESQL:
            conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
        else:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StateError, match="newer than this pipeline-runner understands"):
        open_db(state_target)


def test_a_migration_appended_in_sqlites_sql_runs_on_both_engines(
    state_target: Path | str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runner import state

    open_db(state_target).close()  # at the current version
    appended = """
    CREATE TABLE widgets (id INTEGER PRIMARY KEY, host TEXT NOT NULL, expires REAL NOT NULL);
    ALTER TABLE pipeline_runs ADD COLUMN weight INTEGER;
    """
    monkeypatch.setattr(state, "MIGRATIONS", [*state.MIGRATIONS, appended])
    monkeypatch.setattr(state, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    db = open_db(state_target)
    with db.write() as conn:
        ids = [conn.execute("INSERT INTO widgets (host, expires) VALUES (?, ?)", (h, 0.5)).lastrowid
               for h in ("a", "b")]  # fmt: skip
    assert ids == [1, 2]
    row = Runs(db).start("t", Phase.DEV, 0, weight=2**40)  # 64-bit, as SQLite's integers
    assert db.query("SELECT weight FROM pipeline_runs WHERE id = ?", (row,))[0]["weight"] == 2**40
    assert db.query("SELECT expires FROM widgets WHERE id = 2")[0][0] == 0.5


def test_an_older_postgresql_state_is_migrated_keeping_its_rows_and_total(pg_url: str) -> None:
    from runner import state
    from runner.pgstate import connect
    from runner.sqldialect import postgresql_ddl

    conn = connect(pg_url)  # a state left at schema version 3, with an attempt that cost something
    for entry in state.MIGRATIONS[:3]:
        conn.script(postgresql_ddl(state.migration_sql(entry, POSTGRESQL)))
    conn.script("CREATE TABLE schema_version (version BIGINT NOT NULL); INSERT INTO schema_version VALUES (3)")
    conn.execute("INSERT INTO tasks (id, title, created_at, updated_at) VALUES ('a', 'a', 'x', 'x')")
    conn.execute(
        "INSERT INTO pipeline_runs (task_id, phase, patchset, status, started_at, cost_cents) "
        "VALUES ('a', 'dev', 0, 'failure', 'x', 2.5)"
    )
    conn.close()
    db = open_db(pg_url)
    assert db.scalar("SELECT version FROM schema_version") == SCHEMA_VERSION
    store, runs = BuiltinTaskStore(db), Runs(db)
    store.set_status("a", TaskStatus.CANCELLED)  # a status migration 4 allows
    assert runs.total_cost() == 2.5  # migration 6 summed what was there
    runs.finish(runs.start("a", Phase.DEV, 0), RunStatus.SKIPPED, cost_cents=0.5)  # 2 allows skipped
    assert runs.total_cost() == 3.0 and runs.failures_since("a", None)[0] == 1


def test_a_read_only_opening_writes_nothing(state_target: Path | str) -> None:
    open_db(state_target).close()
    db = open_db(state_target, readonly=True)
    store = BuiltinTaskStore(db)
    assert store.list_tasks() == []
    with pytest.raises(Exception, match=r"(?i)read.only|readonly"):
        store.add(NewTask(title="no"))


def test_a_write_waits_for_another_process_then_says_it_is_locked(state_target: Path | str) -> None:
    holder = open_db(state_target)
    waiter = open_db(state_target, lock_wait=0.3)
    with holder.write(), pytest.raises(StateError, match="locked by another process"):
        BuiltinTaskStore(waiter).add(NewTask(title="late"))
    assert BuiltinTaskStore(waiter).add(NewTask(title="now")).id == "t-1"


WRITER = """
import sys
from runner.state import open_db
from runner.tasks import BuiltinTaskStore, NewTask
target = sys.argv[1]
store = BuiltinTaskStore(open_db(target))
for i in range(25):
    store.add(NewTask(title=f"{sys.argv[2]} {i}"))  # reads the id counter, then writes it
"""


def test_two_processes_adding_tasks_at_once_never_get_the_same_id(state_target: Path | str) -> None:
    open_db(state_target).close()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(state_target), name]) for name in ("a", "b")]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    tasks = BuiltinTaskStore(open_db(state_target)).list_tasks()
    assert len(tasks) == 50
    assert sorted(int(t.id[2:]) for t in tasks) == list(range(1, 51))


# -- without a database ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT * FROM t WHERE a = ? AND b = ?", "SELECT * FROM t WHERE a = %s AND b = %s"),
        ("SELECT '?', '%' FROM t WHERE a LIKE ?", "SELECT '?', '%%' FROM t WHERE a LIKE %s"),
        ("WHERE (:since IS NULL OR s >= :since) LIMIT :limit", "WHERE (%(since)s IS NULL OR s >= %(since)s) LIMIT %(limit)s"),
        ("SELECT CAST(x AS json)::text, 'it''s' WHERE a = ?", "SELECT CAST(x AS json)::text, 'it''s' WHERE a = %s"),
        ("SELECT 5 % 2", "SELECT 5 %% 2"),
        ("SELECT a -- the task's 100%? \nFROM t WHERE a = ?", "SELECT a -- the task's 100%%? \nFROM t WHERE a = %s"),
        ("SELECT a - 1 FROM t WHERE b = ?", "SELECT a - 1 FROM t WHERE b = %s"),
    ],
)
def test_placeholders_become_psycopgs(sql: str, expected: str) -> None:
    assert to_pyformat(sql) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://db/pipeline", "is not a PostgreSQL URL"),
        ("/var/lib/state.db", "is not a PostgreSQL URL"),
        ("postgresql://db.internal", "names no database"),
    ],
)
def test_a_bad_state_url_names_the_key_and_the_file(tmp_path: Path, url: str, message: str) -> None:
    repo = make_repo(tmp_path / "repo")
    config = write_config(repo, f"state: {{url: {url!r}}}\n")
    with pytest.raises(ConfigError) as err:
        load_config(config)
    text = str(err.value)
    assert "state.url" in text and str(config) in text and message in text


def test_the_state_url_selects_postgresql_and_its_absence_sqlite(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    loaded = load_config(write_config(repo, "base: live\n"))
    assert loaded.config.state_target == loaded.config.state_db == loaded.config.root / "state.db"
    url = "postgresql://pipeline@db.internal/pipeline"
    loaded = load_config(write_config(repo, textwrap.dedent(f"state:\n  url: {url}\n")))
    assert loaded.config.state_target == url


def test_config_show_does_not_print_the_state_urls_password(cli: CLI, repo: Path) -> None:
    write_config(repo, "base: live\nstate: {url: 'postgresql://pipeline:hunter2@db.internal/pipeline'}\n")
    for args in (["config", "show"], ["config", "show", "--json"]):
        shown = cli(*args, cwd=repo)
        assert shown.code == 0 and "hunter2" not in shown.out and "pipeline:***@db.internal" in shown.out, shown.out


def test_an_unreachable_server_is_a_clear_state_error() -> None:
    with pytest.raises(StateError, match=r"cannot be reached") as unreachable:
        open_db("postgresql://postgres:secret@127.0.0.1:1/pipeline")
    assert "secret" not in str(unreachable.value)


def test_an_empty_postgresql_database_holds_no_state_until_something_writes_one(pg_url: str, tmp_path: Path) -> None:
    assert not state_exists(pg_url)
    with pytest.raises(StateError, match="No pipeline state at"):
        open_db(pg_url, create=False)
    assert not state_exists(pg_url)  # a reader made no schema
    assert build_status(tmp_path, "live", state=pg_url)["initialized"] is False
    open_db(pg_url).close()
    assert state_exists(pg_url) and build_status(tmp_path, "live", state=pg_url)["initialized"] is True


@pytest.mark.parametrize(
    "theirs", ["CREATE TABLE tasks (id TEXT PRIMARY KEY, owner TEXT)", "CREATE TABLE invoices (id INT)"]
)
def test_a_database_holding_tables_of_something_else_is_not_made_a_state(pg_url: str, theirs: str) -> None:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(theirs)
    with pytest.raises(StateError, match=r"holds tables that are not a pipeline state \((tasks|invoices)\)"):
        open_db(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        )]  # fmt: skip
    assert tables in (["tasks"], ["invoices"])  # nothing of the runner's was written there
