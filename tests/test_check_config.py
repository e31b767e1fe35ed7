"""In process: config that could never check a task, or could never run, is refused or warned about;
verification results say when nothing was checked; the state schema records skips."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from phases.verify import (
    RecipeRun,
    VerifyStatus,
    counts_as_passed,
    run_recipes,
)
from runner import state
from runner.config import load_config
from runner.errors import ConfigError
from tests.conftest import CLI, write_config

SHIPPED = Path(__file__).resolve().parents[1] / "pipeline.yaml"


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return str(caught.value)


# -- defaults ----------------------------------------------------------------------------------


def test_allow_unchecked_is_shown_by_config_show(cli: CLI, repo: Path) -> None:
    write_config(repo, "allow_unchecked: true\n")
    values = cli("config", "show", "--json", cwd=repo).json()["values"]
    assert values["allow_unchecked"]["value"] is True
    assert values["allow_unchecked"]["source"].endswith("pipeline.yaml")
    env = cli("config", "show", "--json", cwd=repo, env={"PIPELINE_ALLOW_UNCHECKED": "false"}).json()
    assert env["values"]["allow_unchecked"] == {"value": False, "source": "env PIPELINE_ALLOW_UNCHECKED"}


# -- verification results ------------------------------------------------------------------------


def spec(**values: str | None) -> RecipeRun:
    return RecipeRun(values={"namespace": None, **values}, skip_exit_codes=[3], timeout=30)


def test_no_recipe_that_ran_and_passed_is_unchecked(tmp_path: Path) -> None:
    log = tmp_path / "verify.log"
    ok = ["python3", "-c", "pass"]
    skip = ["python3", "-c", "raise SystemExit(3)"]
    none = run_recipes([], tmp_path, spec(), log)
    needs_namespace = run_recipes([["python3", "-c", "pass", "{namespace}"]], tmp_path, spec(), log)
    skipped_first = run_recipes([skip, ok], tmp_path, spec(), log)
    for result in (none, needs_namespace, skipped_first):
        assert result.status is VerifyStatus.UNCHECKED and result.passed == 0
        assert not counts_as_passed(result, allow_unchecked=False)
        assert counts_as_passed(result, allow_unchecked=True)
    assert "pass {namespace} (no namespace)" in needs_namespace.summary
    checked = run_recipes([ok, ["python3", "-c", "pass", "{namespace}"]], tmp_path, spec(), log)
    assert checked.status is VerifyStatus.PASS and checked.passed == 1 and checked.skipped
    partly = run_recipes([ok, skip, ok], tmp_path, spec(), log)
    assert partly.status is VerifyStatus.SKIP and partly.passed == 1
    assert counts_as_passed(partly, allow_unchecked=False)


# -- the state schema ----------------------------------------------------------------------------


def test_a_version_1_database_is_migrated_keeping_its_runs_and_accepting_skips(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path)
    conn.executescript(state.MIGRATIONS[0])
    conn.execute("PRAGMA user_version = 1")
    for status in ("success", "failure", "cancelled"):
        conn.execute(
            "INSERT INTO pipeline_runs (task_id, phase, patchset, status, cost_cents, started_at, error_summary) "
            "VALUES ('t-1', 'verify', 0, ?, 1.5, '2026-01-01T00:00:00+00:00', ?)",
            (status, f"was {status}"),
        )
    conn.commit()
    conn.close()

    db = state.open_db(path)
    try:
        runs = state.Runs(db)
        kept = runs.for_task("t-1")
        assert [(r.id, r.status, r.error_summary, r.cost_cents) for r in kept] == [
            (1, state.RunStatus.SUCCESS, "was success", 1.5),
            (2, state.RunStatus.FAILURE, "was failure", 1.5),
            (3, state.RunStatus.CANCELLED, "was cancelled", 1.5),
        ]
        row = runs.start("t-1", state.Phase.VERIFY, 0)
        assert row == 4
        runs.finish(row, state.RunStatus.SKIPPED, error="no check ran")
        skipped = runs.last_attempt("t-1", state.Phase.VERIFY)
        assert skipped is not None and skipped.id == row and skipped.status is state.RunStatus.SKIPPED
        # A skip is not a failure of the task.
        assert runs.failures_since("t-1", None)[0] == 1
        # The phase column no longer restricts phases, so a new one needs no migration.
        with db.write() as c:
            c.execute(
                "INSERT INTO pipeline_runs (task_id, phase, patchset, status, started_at) "
                "VALUES ('t-1', 'review', 0, 'running', '2026-01-01T00:00:00+00:00')"
            )
        assert db.scalar("PRAGMA user_version") == state.SCHEMA_VERSION
        indexes = {r[0] for r in db.query("SELECT name FROM sqlite_master WHERE tbl_name = 'pipeline_runs'")}
        assert {"idx_pipeline_runs_task", "idx_pipeline_runs_status"} <= indexes
    finally:
        db.close()
