"""`pipeline-runner state migrate --to postgresql://...`, end to end with the CLI and a real server."""

from __future__ import annotations

import json
from pathlib import Path

from runner.checkcache import CheckCache
from runner.state import Phase, Runs, RunStatus, open_db, state_exists
from tests.conftest import CLI, default_root, write_config


def _sqlite_state(cli: CLI, repo: Path) -> None:
    """A state with tasks, a dependency, comments, attempts with costs, a deleted attempt (so that
    SQLite handed out an id higher than any left) and a cached pass."""
    for args in (["first"], ["second", "--depends-on", "t-1"], ["third", "--priority", "P0"]):
        assert cli("task", "add", *args, cwd=repo).code == 0
    assert cli("task", "comment", "t-1", "a person's note, 100% sure?", cwd=repo).code == 0
    db = open_db(default_root(repo) / "state.db")
    runs = Runs(db)
    for cost in (1.5, 0.25):
        row = runs.start("t-1", Phase.DEV, 0)
        runs.finish(row, RunStatus.FAILURE, cost_cents=cost, error="broke")
    gone = runs.start("t-3", Phase.DEV, 0)
    with db.write() as conn:
        conn.execute("DELETE FROM pipeline_runs WHERE id = ?", (gone,))
    CheckCache(db).store("key", phase="unit", tree="abc", run_id=1, duration=0.5)
    db.close()


def _views(cli: CLI, repo: Path) -> tuple[object, ...]:
    listed = cli("task", "list", "--all", "--json", cwd=repo)
    shown = cli("task", "show", "t-1", "--json", cwd=repo)
    status = cli("status", "--json", cwd=repo)
    assert listed.code == shown.code == status.code == 0, listed.err + shown.err + status.err
    doc = status.json()
    return listed.json(), shown.json(), {k: doc[k] for k in ("open", "done", "cost_cents", "queue")}


def test_state_migrate_copies_the_sqlite_state_and_postgresql_carries_on_from_it(
    cli: CLI, repo: Path, pg_url: str
) -> None:
    write_config(repo, "base: live\n")
    _sqlite_state(cli, repo)
    before = _views(cli, repo)

    done = cli("state", "migrate", "--to", pg_url, cwd=repo)
    assert done.code == 0, done.err
    assert "Copied the state" in done.out and "3 tasks" in done.out and "2 pipeline_runs" in done.out
    again = cli("state", "migrate", "--to", pg_url, cwd=repo)  # idempotent
    assert again.code == 0 and "already holds this state" in again.out, again.err

    write_config(repo, f"base: live\nstate: {{url: {json.dumps(pg_url)}}}\n")
    assert _views(cli, repo) == before
    # Ids go on past the copied ones: a new task is t-4, a new attempt's id was never used.
    added = cli("task", "add", "fourth", "--json", cwd=repo)
    assert added.code == 0 and added.json()["id"] == "t-4", added.err
    db = open_db(pg_url)
    assert Runs(db).start("t-4", Phase.DEV, 0) == 4  # 3 was handed out, then deleted, on SQLite
    assert Runs(db).total_cost() == 1.75
    # The totals' triggers, off while the rows were copied, count again.
    Runs(db).finish(4, RunStatus.FAILURE, cost_cents=2.0)
    assert Runs(db).total_cost() == 3.75
    assert CheckCache(db).lookup("key") is not None


def test_state_migrate_refuses_a_database_holding_another_state(cli: CLI, repo: Path, pg_url: str) -> None:
    write_config(repo, "base: live\n")
    _sqlite_state(cli, repo)
    with open_db(pg_url).write() as conn:
        conn.execute(
            "INSERT INTO tasks (id, title, created_at, updated_at) VALUES ('other', 'other', 'x', 'x')"
        )
    done = cli("state", "migrate", "--to", pg_url, cwd=repo)
    assert done.code == 1
    assert "already holds a pipeline state, not this one" in done.err and "Nothing was copied" in done.err


def test_state_migrate_refuses_a_database_holding_tables_of_something_else(cli: CLI, repo: Path, pg_url: str) -> None:
    import psycopg

    write_config(repo, "base: live\n")
    _sqlite_state(cli, repo)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE invoices (id INT)")
    done = cli("state", "migrate", "--to", pg_url, cwd=repo)
    assert done.code == 1 and "holds tables that are not a pipeline state (invoices)" in done.err, done.err
    assert not state_exists(pg_url)  # nothing was written there


def test_state_migrate_says_what_is_wrong_with_its_input(cli: CLI, repo: Path) -> None:
    write_config(repo, "base: live\n")
    nothing = cli("state", "migrate", "--to", "postgresql://postgres@127.0.0.1:1/x", cwd=repo)
    assert nothing.code == 1 and "No pipeline state at" in nothing.err and "nothing to migrate" in nothing.err
    assert cli("task", "add", "one", cwd=repo).code == 0
    bad = cli("state", "migrate", "--to", "mysql://db/x", cwd=repo)
    assert bad.code == 1 and "--to 'mysql://db/x' is not a PostgreSQL URL" in bad.err
    down = cli("state", "migrate", "--to", "postgresql://postgres:hunter2@127.0.0.1:1/x", cwd=repo)
    assert down.code == 1 and "cannot be reached" in down.err and "hunter2" not in down.err
    assert cli("state", "migrate", cwd=repo).code == 2  # --to is required
