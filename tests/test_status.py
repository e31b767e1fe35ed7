"""`status` on an empty root and on a populated one."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.conftest import CLI, default_root

REFERENCE_KEYS = {"open", "in_progress", "verified", "done", "needs_help", "active_dev_runs"}


def test_status_on_empty_root_is_clear_and_creates_nothing(cli: CLI, repo: Path) -> None:
    text = cli("status", cwd=repo)
    assert text.code == 0
    assert "No pipeline state" in text.out
    doc = cli("status", "--json", cwd=repo).json()
    assert set(doc) >= REFERENCE_KEYS
    assert doc["schema_version"] == 2 and doc["initialized"] is False
    assert all(doc[k] == 0 for k in REFERENCE_KEYS)
    assert not default_root(repo).exists()


def test_status_on_populated_root(cli: CLI, repo: Path) -> None:
    for title in ("a", "b", "c"):
        assert cli("task", "add", title, cwd=repo).code == 0
    cli("task", "add", "epic", "--type", "epic", cwd=repo)
    cli("task", "set-status", "t-2", "done", cwd=repo)
    cli("task", "set-status", "t-3", "needs_help", cwd=repo)
    db = sqlite3.connect(default_root(repo) / "state.db")
    with db:
        db.execute(
            "INSERT INTO pipeline_runs (task_id, phase, patchset, status, cost_cents, started_at) "
            "VALUES ('t-1', 'dev', 0, 'running', 12.5, '2026-01-01T00:00:00+00:00')"
        )
        # An attempt from before the check graph: no phase rows under it.
        db.execute(
            "INSERT INTO pipeline_runs (task_id, phase, patchset, status, started_at, finished_at, error_summary) "
            "VALUES ('t-3', 'verify', 0, 'failure', '2025-12-31T00:00:00+00:00', '2025-12-31T00:01:00+00:00', "
            "'`make test` failed (exit 2)')"
        )
        db.execute(
            "INSERT INTO task_comments (task_id, author, body, created_at) "
            "VALUES ('t-3', 'system', 'exceeded 5 retries', '2026-01-01T00:00:01+00:00')"
        )
    db.close()
    doc = cli("status", "--json", cwd=repo).json()
    assert (doc["open"], doc["done"], doc["needs_help"], doc["active_dev_runs"]) == (1, 1, 1, 1)
    assert doc["epics"] == 1
    assert doc["cost_cents"] == 12.5
    assert doc["needs_help_tasks"][0]["id"] == "t-3"
    assert doc["needs_help_tasks"][0]["reason"] == "exceeded 5 retries"
    assert doc["active_runs"][0]["task_id"] == "t-1" and doc["active_runs"][0]["phases"] == []
    text = cli("status", cwd=repo).out
    assert "Needs help" in text and "exceeded 5 retries" in text and "Active dev runs: 1" in text
    assert "t-1  dev  patchset 0  for " in text
    (old,) = cli("task", "show", "t-3", "--json", cwd=repo).json()["runs"]
    assert (old["phase"], old["status"], old["phases"]) == ("verify", "failure", [])
    assert "verify    ps0 failure  0c  `make test` failed (exit 2)" in cli("task", "show", "t-3", cwd=repo).out
