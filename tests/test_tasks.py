"""The built-in task store through the real CLI and a real SQLite file."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from runner.state import open_db
from runner.tasks import BuiltinTaskStore, NewTask, TaskSource, TaskStatus
from tests.conftest import CLI, default_root


def db_rows(repo: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(default_root(repo) / "state.db")
    try:
        return list(conn.execute(sql))
    finally:
        conn.close()


def test_add_list_show_comment_set_status_round_trip(cli: CLI, repo: Path) -> None:
    first = cli("task", "add", "Write parser", "--description", "parse it", "--namespace", "lib/p.py",
                "--priority", "P1", "--json", cwd=repo)  # fmt: skip
    assert first.code == 0, first.err
    task = first.json()
    assert task["id"] == "t-1" and task["priority"] == "P1" and task["status"] == "open"

    epic = cli("task", "add", "Epic", "--type", "epic", "--id", "epic-1", "--json", cwd=repo).json()
    assert epic["type"] == "epic"
    second = cli("task", "add", "Use parser", "--depends-on", "t-1", "--parent", "epic-1", "--json", cwd=repo)
    assert second.json()["id"] == "t-2"
    assert second.json()["dependencies"] == ["t-1"]

    listed = cli("task", "list", "--json", cwd=repo).json()
    assert [t["id"] for t in listed] == ["t-1", "epic-1", "t-2"]
    by_parent = cli("task", "list", "--parent", "epic-1", "--json", cwd=repo).json()
    assert [t["id"] for t in by_parent] == ["t-2"]

    assert cli("task", "comment", "t-1", "looks tricky", cwd=repo).code == 0
    assert cli("task", "set-status", "t-1", "needs_help", cwd=repo).code == 0
    shown = cli("task", "show", "t-1", "--json", cwd=repo).json()
    assert shown["status"] == "needs_help"
    assert shown["description"] == "parse it" and shown["namespace"] == "lib/p.py"
    assert shown["comments"][0]["body"] == "looks tricky"
    assert shown["comments"][0]["author"] == "human"

    only_help = cli("task", "list", "--status", "needs_help", "--json", cwd=repo).json()
    assert [t["id"] for t in only_help] == ["t-1"]
    text = cli("task", "show", "t-1", cwd=repo)
    assert "Write parser" in text.out and "looks tricky" in text.out

    # Reopening by a person records when, so the retry count restarts from there.
    assert cli("task", "set-status", "t-1", "open", cwd=repo).code == 0
    assert cli("task", "show", "t-1", "--json", cwd=repo).json()["resumed_at"] is not None


def test_generated_ids_skip_given_ones(cli: CLI, repo: Path) -> None:
    assert cli("task", "add", "given", "--id", "t-2", cwd=repo).code == 0
    assert cli("task", "add", "a", "--json", cwd=repo).json()["id"] == "t-1"
    assert cli("task", "add", "b", "--json", cwd=repo).json()["id"] == "t-3"
    dup = cli("task", "add", "again", "--id", "t-1", cwd=repo)
    assert dup.code == 1 and "already exists" in dup.err


@pytest.mark.parametrize(
    "bad_id",
    ["-x", ".x", "../a", "a..b", "a.lock", "a.", "a b", "$(touch x)", "a/b", "x" * 65, ""],
)
def test_bad_ids_refused_before_anything_is_written(cli: CLI, repo: Path, bad_id: str) -> None:
    done = cli("task", "add", "title", f"--id={bad_id}", cwd=repo)
    assert done.code == 1
    assert "Invalid task id" in done.err
    assert not default_root(repo).exists(), "nothing may be written for a refused id"
    assert not (repo / "x").exists()


def test_bad_id_refused_by_other_commands(cli: CLI, repo: Path) -> None:
    assert cli("task", "add", "ok", cwd=repo).code == 0
    for args in (["show", "../etc"], ["comment", "a..b", "hi"], ["set-status", "$(x)", "open"]):
        done = cli("task", *args, cwd=repo)
        assert done.code == 1 and "Invalid task id" in done.err


def test_64_character_id_is_accepted(cli: CLI, repo: Path) -> None:
    done = cli("task", "add", "long", "--id", "a" * 64, "--json", cwd=repo)
    assert done.code == 0 and done.json()["id"] == "a" * 64


def test_unknown_dependency_and_bad_status_refused(cli: CLI, repo: Path) -> None:
    done = cli("task", "add", "x", "--depends-on", "t-404", cwd=repo)
    assert done.code == 1 and "t-404" in done.err
    assert cli("task", "add", "ok", cwd=repo).code == 0
    bad = cli("task", "set-status", "t-1", "finished", cwd=repo)
    assert bad.code == 1 and "needs_help" in bad.err
    unknown = cli("task", "show", "t-99", cwd=repo)
    assert unknown.code == 1 and "t-99" in unknown.err


def test_import_yaml_and_jsonl_is_idempotent(cli: CLI, repo: Path, tmp_path: Path) -> None:
    yaml_file = tmp_path / "tasks.yaml"
    yaml_file.write_text(
        "tasks:\n"
        "  - {id: a-1, title: First, priority: P3, namespace: src}\n"
        "  - {id: a-2, title: Second, depends_on: [a-1], description: two}\n"
    )
    done = cli("task", "import", str(yaml_file), cwd=repo)
    assert done.code == 0, done.err
    assert "Imported 2" in done.out
    again = cli("task", "import", str(yaml_file), cwd=repo)
    assert "Imported 0" in again.out and "2 already present" in again.out

    jsonl = tmp_path / "more.jsonl"
    jsonl.write_text(json.dumps({"id": "b-1", "title": "Third", "dependencies": ["a-2"]}) + "\n")
    assert cli("task", "import", str(jsonl), cwd=repo).code == 0
    tasks = {t["id"]: t for t in cli("task", "list", "--json", cwd=repo).json()}
    assert set(tasks) == {"a-1", "a-2", "b-1"}
    assert tasks["a-1"]["priority"] == "P3"
    assert tasks["a-2"]["dependencies"] == ["a-1"]
    assert tasks["b-1"]["dependencies"] == ["a-2"]
    assert db_rows(repo, "SELECT COUNT(*) FROM tasks") == [(3,)]


def test_import_with_a_bad_record_writes_nothing(cli: CLI, repo: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {id: ok-1, title: Fine}\n- {id: '../evil', title: Bad}\n")
    done = cli("task", "import", str(bad), cwd=repo)
    assert done.code == 1 and "task 2" in done.err and "../evil" in done.err
    assert cli("task", "list", "--json", cwd=repo).json() == []


def test_state_db_uses_wal_and_schema_version(cli: CLI, repo: Path) -> None:
    assert cli("task", "add", "x", cwd=repo).code == 0
    assert db_rows(repo, "PRAGMA journal_mode") == [("wal",)]
    assert int(str(db_rows(repo, "PRAGMA user_version")[0][0])) >= 1
    columns = {r[1] for r in db_rows(repo, "PRAGMA table_info(pipeline_runs)")}
    assert {"task_id", "phase", "patchset", "agent_run_id", "status", "cost_cents", "started_at",
            "finished_at", "error_summary", "log_path", "pid", "before_sha", "after_sha"} <= columns  # fmt: skip


def test_ready_tasks_are_open_with_every_dependency_done(tmp_path: Path) -> None:
    db = open_db(tmp_path / "state.db")
    store = BuiltinTaskStore(db)
    a = store.add(NewTask(title="a")).id
    b = store.add(NewTask(title="b", dependencies=[a])).id
    c = store.add(NewTask(title="c")).id
    d = store.add(NewTask(title="d", dependencies=[b, c])).id
    store.add(NewTask(title="e", id="e-1"))
    store.set_status("e-1", TaskStatus.NEEDS_HELP)
    store.comment(a, "a comment")

    def ready_ids() -> list[str]:
        ids = [t.id for t in store.ready()]
        # The one-query answer agrees with the generic one any task source inherits.
        assert ids == [t.id for t in TaskSource.ready(store)]
        return ids

    assert ready_ids() == [a, c]
    assert store.ready()[0].comments == ()  # the loop reads no comments
    store.set_status(a, TaskStatus.DONE)
    assert ready_ids() == [b, c]
    store.set_status(c, TaskStatus.IN_PROGRESS)
    assert ready_ids() == [b]
    store.set_status(b, TaskStatus.DONE)
    assert ready_ids() == []  # d still waits for c
    store.set_status(c, TaskStatus.DONE)
    assert ready_ids() == [d]
    db.close()


@pytest.mark.parametrize(
    "bad", ["-rf", "--upload-pack=x", "a\nb", "/etc/passwd", "../outside", "a/../../b", " "]
)
def test_bad_namespaces_refused_before_anything_is_written(
    cli: CLI, repo: Path, tmp_path: Path, bad: str
) -> None:
    done = cli("task", "add", "title", f"--namespace={bad}", cwd=repo)
    assert done.code == 1
    assert "Invalid namespace" in done.err
    assert not default_root(repo).exists()
    records = tmp_path / "tasks.jsonl"
    records.write_text(json.dumps({"id": "n-1", "title": "t", "namespace": bad}) + "\n")
    imported = cli("task", "import", str(records), cwd=repo)
    assert imported.code == 1 and "Invalid namespace" in imported.err
    assert not default_root(repo).exists()


def test_path_like_namespaces_are_accepted(cli: CLI, repo: Path) -> None:
    for namespace in ("lib/parser.py", "Omni/Task.hs", "src/a b/c.rs", "./docs"):
        done = cli("task", "add", "t", f"--namespace={namespace}", "--json", cwd=repo)
        assert done.code == 0, done.err
        assert done.json()["namespace"] == namespace
