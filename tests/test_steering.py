"""A person steering tasks: the rules in-process (real SQLite, real git), the commands as a user
types them. The loop's side (a cancel reaching a running agent or integration) is in
test_steering_loop.py."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from phases.dev import MAX_PROMPT_COMMENTS, build_prompt
from runner import state
from runner.config import PipelineConfig, load_config
from runner.errors import TaskError
from runner.git import Git
from runner.layout import Layout
from runner.lifecycle import PERSON_ACTIONS, Action, Step, TaskView, Verdict, next_step, person_action
from runner.sqldialect import SQLITE
from runner.state import Phase, Runs, RunStatus, open_db
from runner.steering import Steering
from runner.tasklist import ID_MAX, MIN_TITLE, task_table
from runner.tasks import (
    Author,
    BuiltinTaskStore,
    NewTask,
    Task,
    TaskChanges,
    TaskStatus,
    graph_problem,
    read_task_file,
    tasks_from_records,
)
from runner.workspace import Workspaces, task_ref
from tests.conftest import CLI, default_root, git, make_repo, write_config


@pytest.fixture
def config(tmp_path: Path) -> PipelineConfig:
    repo = make_repo(tmp_path / "repo")
    return load_config(write_config(repo, "base: live\nphases: {test: {run: [\"true\"]}}\n")).config


@pytest.fixture
def store(config: PipelineConfig) -> Iterator[BuiltinTaskStore]:
    db = open_db(config.state_db)
    yield BuiltinTaskStore(db)
    db.close()


def add(store: BuiltinTaskStore, task_id: str, *deps: str, parent: str | None = None) -> Task:
    return store.add(NewTask(title=f"task {task_id}", id=task_id, dependencies=list(deps), parent=parent))


# -- cycles (pure) --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("deps", "parents", "expected"),
    [
        ({"a": ["b"], "b": []}, {}, None),
        ({"a": ["a"]}, {}, "task a depends on itself (a -> a)"),
        ({"a": []}, {"a": "a"}, "task a is its own parent (a -> a)"),
        ({"a": ["b"], "b": ["a"]}, {}, "dependency cycle a -> b -> a"),
        ({"x": [], "a": ["b"], "b": ["c"], "c": ["a"]}, {}, "dependency cycle a -> b -> c -> a"),
        ({"a": [], "b": []}, {"a": "b", "b": "a"}, "parent cycle a -> b -> a"),
        ({"a": ["gone"]}, {}, None),  # a dependency on no task is no cycle
    ],
)
def test_graph_problem_names_the_cycle(
    deps: dict[str, list[str]], parents: dict[str, str | None], expected: str | None
) -> None:
    problem = graph_problem(deps, parents)
    assert (problem is None) if expected is None else (problem is not None and problem.startswith(expected))


# -- what a person may do (pure) ------------------------------------------------------------------


def test_every_action_has_a_verdict_for_every_status_and_nothing_undoes_a_landing() -> None:
    for action in Action:
        assert set(PERSON_ACTIONS[action]) == set(TaskStatus), action
        assert person_action(action, TaskStatus.DONE)[0] is Verdict.REFUSE
    assert person_action(Action.CANCEL, TaskStatus.CANCELLED)[0] is Verdict.ALREADY
    for status in (TaskStatus.NEEDS_HELP, TaskStatus.CANCELLED):
        assert person_action(Action.RETRY, status)[0] is Verdict.APPLY
    # Under way: cancel first. A delete would pull the task from under its agent or check.
    for status in (TaskStatus.IN_PROGRESS, TaskStatus.VERIFIED):
        assert person_action(Action.DELETE, status)[0] is Verdict.REFUSE
        assert person_action(Action.RETRY, status)[0] is Verdict.REFUSE


def test_an_open_task_after_a_cancelled_one_is_blocked_not_waiting() -> None:
    assert next_step(TaskView(TaskStatus.OPEN, dependencies_done=False, blocked=True)) is Step.BLOCKED
    assert next_step(TaskView(TaskStatus.CANCELLED)) is Step.NOTHING


# -- the store: edit, import ----------------------------------------------------------------------


def test_edit_changes_only_the_given_fields(store: BuiltinTaskStore) -> None:
    add(store, "a")
    store.add(NewTask(title="b", id="b", description="keep me", namespace="src/x.py", priority=3,
                      dependencies=["a"]))  # fmt: skip
    task, names = store.update("b", TaskChanges(title="b renamed"))
    assert names == ["title"]
    assert (task.title, task.description, task.namespace, task.priority, task.dependencies) == (
        "b renamed", "keep me", "src/x.py", 3, ("a",)
    )
    task, names = store.update("b", TaskChanges(namespace="", dependencies=()))
    assert sorted(names) == ["dependencies", "namespace"] and task.namespace is None and task.dependencies == ()
    assert store.update("b", TaskChanges(title="b renamed"))[1] == []  # nothing differs


def test_edit_refuses_a_cycle_an_unknown_dependency_and_itself_and_changes_nothing(
    store: BuiltinTaskStore,
) -> None:
    add(store, "a")
    add(store, "b", "a")
    add(store, "c", "b")
    with pytest.raises(TaskError, match=r"dependency cycle a -> c -> b -> a"):
        store.update("a", TaskChanges(title="new", dependencies=("c",)))
    assert store.get("a").dependencies == () and store.get("a").title == "task a"
    with pytest.raises(TaskError, match="'nope', which does not exist"):
        store.update("a", TaskChanges(dependencies=("nope",)))
    with pytest.raises(TaskError, match="cannot depend on itself"):
        store.update("a", TaskChanges(dependencies=("a",)))
    with pytest.raises(TaskError, match="own parent"):
        store.update("a", TaskChanges(parent="a"))


def test_add_refuses_a_cycle_through_a_dangling_dependency(store: BuiltinTaskStore) -> None:
    # b still names "a" after a was deleted; a new "a" depending on b would close a cycle.
    add(store, "b")
    with store.db.write() as conn:
        conn.execute("INSERT INTO task_dependencies (task_id, depends_on) VALUES ('b', 'a')")
    with pytest.raises(TaskError, match=r"cycle (a -> b -> a|b -> a -> b)"):
        add(store, "a", "b")
    assert not store.exists("a")


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_import_refuses_duplicate_ids_naming_the_id_and_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "dup.yaml", "- {id: a, title: One}\n- {id: b, title: Two}\n- {id: a, title: Three}\n")
    with pytest.raises(TaskError) as raised:
        tasks_from_records(read_task_file(path), str(path))
    assert "'a'" in str(raised.value) and str(path) in str(raised.value) and "tasks 1 and 3" in str(raised.value)


def test_import_refuses_a_cycle_through_the_store_and_imports_nothing(
    store: BuiltinTaskStore, tmp_path: Path
) -> None:
    add(store, "a")
    path = write(tmp_path, "t.yaml", "- {id: b, title: B, depends_on: [c]}\n- {id: c, title: C, depends_on: [b]}\n")
    with pytest.raises(TaskError, match="dependency cycle b -> c -> b"):
        store.import_tasks(tasks_from_records(read_task_file(path), str(path)))
    # Through a task already there: a now depends on x, which depends on a.
    path = write(tmp_path, "u.yaml", "- {id: a, title: task a, depends_on: [x]}\n- {id: x, title: X, depends_on: [a]}\n")
    with pytest.raises(TaskError, match="a -> x -> a"):
        store.import_tasks(tasks_from_records(read_task_file(path), str(path)))
    assert [t.id for t in store.list_tasks()] == ["a"] and store.get("a").dependencies == ()
    path = write(tmp_path, "v.yaml", "- {id: p, title: P, parent: p}\n")
    with pytest.raises(TaskError, match="own parent"):
        tasks_from_records(read_task_file(path), str(path))


def test_reimport_updates_open_tasks_and_says_which_it_did_not(store: BuiltinTaskStore, tmp_path: Path) -> None:
    first = "- {id: a, title: A}\n- {id: b, title: B}\n- {id: c, title: C}\n- {id: d, title: D}\n"
    path = write(tmp_path, "t.yaml", first)
    result = store.import_tasks(tasks_from_records(read_task_file(path), str(path)))
    assert result.added == ["a", "b", "c", "d"]
    store.set_status("b", TaskStatus.DONE)
    store.set_status("c", TaskStatus.IN_PROGRESS)
    path.write_text(
        "- {id: a, title: A2, priority: P0, depends_on: [d], description: more}\n"
        "- {id: b, title: B2}\n- {id: c, title: C}\n- {id: d, title: D}\n- {id: e, title: E}\n"
    )
    result = store.import_tasks(tasks_from_records(read_task_file(path), str(path)))
    assert (result.added, result.updated, result.unchanged) == (["e"], ["a"], ["c", "d"])
    assert result.not_updated == [("b", "done; differs in title")]
    a = store.get("a")
    assert (a.title, a.priority, a.dependencies, a.description) == ("A2", 0, ("d",), "more")
    assert store.get("b").title == "B"


# -- the actions ----------------------------------------------------------------------------------


def workspace_of(config: PipelineConfig, task_id: str) -> Path:
    """A real workspace and runner ref for the task, as an attempt leaves them."""
    layout = Layout(config.root)
    path = Workspaces(Git(config.repo_path), layout).acquire(task_id, "live")
    git(config.repo_path, "update-ref", task_ref(task_id), "live")
    return path


def test_cancel_removes_the_workspace_and_ref_and_says_so_once(config: PipelineConfig, store: BuiltinTaskStore) -> None:
    add(store, "a")
    path = workspace_of(config, "a")
    steering = Steering(config, store)
    done = steering.cancel("a")
    assert done.task is not None and done.task.status is TaskStatus.CANCELLED
    assert "will not start" in done.message and not path.exists()
    assert git(config.repo_path, "for-each-ref", "refs/pipeline") == ""
    assert "cancelled already" in steering.cancel("a").message
    # Said by the runner for the person: not a comment of the person's, so not in a prompt.
    assert [c.author for c in store.get("a").comments] == [Author.SYSTEM]


def test_cancel_of_a_running_attempt_leaves_the_workspace_to_the_runner(
    config: PipelineConfig, store: BuiltinTaskStore
) -> None:
    add(store, "a")
    path = workspace_of(config, "a")
    store.set_status("a", TaskStatus.IN_PROGRESS)
    Runs(store.db).start("a", Phase.DEV, 0, pid=0)
    message = Steering(config, store).cancel("a").message
    assert "dev run is stopped by the runner" in message and path.exists()


def test_cancel_is_refused_once_base_may_be_moving_to_the_candidate(
    config: PipelineConfig, store: BuiltinTaskStore
) -> None:
    add(store, "a")
    store.set_status("a", TaskStatus.VERIFIED)
    runs = Runs(store.db)
    row = runs.start("a", Phase.INTEGRATE, 0)
    steering = Steering(config, store)
    # Before the candidate is recorded, the integration's own check refuses to swap (it reads the
    # status under the same lock): cancelling then is safe. Once recorded, it is too late.
    runs.update(row, after_sha="f" * 40)
    with pytest.raises(TaskError, match="landing right now"):
        steering.cancel("a")
    assert store.get("a").status is TaskStatus.VERIFIED
    runs.finish(row, RunStatus.CANCELLED, error="base kept moving")
    assert steering.cancel("a").task is not None


def test_cancel_and_delete_refuse_a_done_task(config: PipelineConfig, store: BuiltinTaskStore) -> None:
    add(store, "a")
    store.set_status("a", TaskStatus.DONE)
    steering = Steering(config, store)
    for action in (steering.cancel, steering.delete, steering.retry):
        with pytest.raises(TaskError, match="done"):
            action("a")
    with pytest.raises(TaskError, match="done"):
        steering.edit("a", TaskChanges(title="x"))
    assert store.get("a").status is TaskStatus.DONE


def test_retry_gives_a_fresh_retry_budget(config: PipelineConfig, store: BuiltinTaskStore) -> None:
    add(store, "a")
    runs = Runs(store.db)
    for _ in range(3):
        runs.finish(runs.start("a", Phase.DEV, 0), RunStatus.FAILURE, error="bad")
    store.set_status("a", TaskStatus.NEEDS_HELP)
    steering = Steering(config, store)
    task = steering.retry("a").task
    assert task is not None and task.status is TaskStatus.OPEN
    assert runs.failures_since("a", task.resumed_at)[0] == 0
    store.set_status("a", TaskStatus.IN_PROGRESS)
    with pytest.raises(TaskError, match="under way"):
        steering.retry("a")


def test_delete_refuses_dependants_and_running_runs_then_forgets_everything(
    config: PipelineConfig, store: BuiltinTaskStore
) -> None:
    add(store, "a")
    add(store, "b", "a")
    add(store, "c", parent="a")
    steering = Steering(config, store)
    with pytest.raises(TaskError, match="b, c depend on it"):
        steering.delete("a")
    steering.delete("b")
    steering.delete("c")
    runs = Runs(store.db)
    runs.finish(runs.start("a", Phase.DEV, 0), RunStatus.FAILURE, error="bad")
    row = runs.start("a", Phase.DEV, 0)
    store.set_status("a", TaskStatus.CANCELLED)
    with pytest.raises(TaskError, match="still being stopped"):
        steering.delete("a")
    runs.finish(row, RunStatus.CANCELLED)
    path = workspace_of(config, "a")
    store.comment("a", "a note")
    assert "2 attempt(s) forgotten" in steering.delete("a").message
    assert not store.exists("a") and not path.exists()
    assert git(config.repo_path, "for-each-ref", "refs/pipeline") == ""
    # A new task with the same id starts with no failures and no comments of the old one.
    again = add(store, "a")
    assert again.comments == () and runs.for_task("a") == []


# -- the schema ---------------------------------------------------------------------------------


def test_a_version_3_database_keeps_its_tasks_comments_and_order_and_takes_cancelled(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path)
    for script in state.MIGRATIONS[:3]:
        conn.executescript(state.migration_sql(script, SQLITE))
    conn.execute("PRAGMA user_version = 3")
    stamp = "2026-01-01T00:00:00+00:00"
    for task_id in ("z", "a"):  # same created_at: the rowid keeps z first
        conn.execute(
            "INSERT INTO tasks (id, title, created_at, updated_at) VALUES (?, ?, ?, ?)", (task_id, task_id, stamp, stamp)
        )
    conn.execute("INSERT INTO task_dependencies (task_id, depends_on) VALUES ('a', 'z')")
    conn.execute("INSERT INTO task_comments (task_id, author, body, created_at) VALUES ('a', 'human', 'hi', ?)", (stamp,))
    conn.commit()
    conn.close()
    db = open_db(path)
    try:
        store = BuiltinTaskStore(db)
        assert [t.id for t in store.list_tasks()] == ["z", "a"]
        a = store.get("a")
        assert a.dependencies == ("z",) and [c.body for c in a.comments] == ["hi"]
        store.set_status("a", TaskStatus.CANCELLED)
        assert store.status_of("a") is TaskStatus.CANCELLED and store.status_of("b") is None
        store.comment("a", "after")  # comment ids continue
        assert [c.body for c in store.get("a").comments] == ["hi", "after"]
        assert db.scalar("PRAGMA foreign_keys") == 1
        # Foreign keys still cascade from the rebuilt table.
        with db.write() as c:
            c.execute("DELETE FROM tasks WHERE id = 'a'")
        assert db.scalar("SELECT COUNT(*) FROM task_comments") == 0
    finally:
        db.close()


# -- comments in the prompt ---------------------------------------------------------------------


def prompt_for(task: Task, template: str = "{title}\n{comments}{feedback}") -> str:
    return build_prompt(template, task, base="live", workspace=Path("/w"), recipes=[], feedback="it failed")


def test_a_persons_comments_reach_the_prompt_and_the_runners_do_not(store: BuiltinTaskStore) -> None:
    add(store, "a")
    store.comment("a", "USE-THE-BLUE-WIRE please")
    store.comment("a", "Pipeline: dev failed", Author.SYSTEM)
    store.comment("a", "and {task_id} stays as written\nsecond line")
    prompt = prompt_for(store.get("a"))
    assert "USE-THE-BLUE-WIRE please" in prompt and "dev failed" not in prompt
    assert "{task_id} stays as written\n  second line" in prompt
    assert prompt.index("BLUE-WIRE") < prompt.index("{task_id} stays")  # oldest first
    # A template of its own that never mentions comments still gets them, at the end.
    custom = prompt_for(store.get("a"), template="Do {title}.")
    assert custom.startswith("Do task a.") and "USE-THE-BLUE-WIRE" in custom


def test_only_the_latest_comments_are_in_the_prompt(store: BuiltinTaskStore) -> None:
    add(store, "a")
    for number in range(MAX_PROMPT_COMMENTS + 5):
        store.comment("a", f"note-{number:03d}")
    prompt = prompt_for(store.get("a"))
    assert "note-000" not in prompt and f"note-{MAX_PROMPT_COMMENTS + 4:03d}" in prompt
    assert "5 earlier comment(s) not shown" in prompt
    assert "### Comments from a person" not in prompt_for(add(store, "b"))


# -- the list -----------------------------------------------------------------------------------


def test_long_and_multi_line_titles_keep_the_columns() -> None:
    tasks = [
        Task(id="t-1", title="x" * 500),
        Task(id="t-2", title="first line\nsecond line\n" * 3, dependencies=("t-1",)),
        Task(id="a" * 64, title="short"),
    ]
    narrowest = ID_MAX + 2 + len("in_progress") + 2 + 3 + 2 + MIN_TITLE
    for width in (40, 80, 200):
        lines = task_table(tasks, width)
        assert len(lines) == 4 and all(len(line) <= max(width, narrowest) for line in lines), lines
        assert "second" not in lines[2] and lines[2].split()[3].startswith("first")
        assert width < 80 or lines[2].split()[3:5] == ["first", "line"]
        title_at = lines[0].index("TITLE")
        assert all(line[title_at - 2 : title_at] == "  " for line in lines)


# -- the commands -------------------------------------------------------------------------------


def test_edit_and_list_validate_as_add_does(cli: CLI, repo: Path) -> None:
    assert cli("task", "add", "x", cwd=repo).code == 0
    bad = cli("task", "edit", "t-1", "--priority", "P7", cwd=repo)
    assert bad.code == 2 and "'P7'" in bad.err
    assert cli("task", "add", "y", "--priority", "urgent", cwd=repo).code == 2
    bad_status = cli("task", "list", "--status", "open,finished", cwd=repo)
    assert bad_status.code == 2 and "'finished'" in bad_status.err
    empty = cli("task", "edit", "t-1", "--title", " ", cwd=repo)
    assert empty.code == 1 and "non-empty title" in empty.err


def test_bad_ids_are_refused_before_the_database(cli: CLI, repo: Path) -> None:
    for args in (["edit", "../x", "--title", "t"], ["cancel", "a..b"], ["retry", "x/y"], ["delete", "$(x)"],
                 ["edit", "ok", "--depends-on", "../up"]):  # fmt: skip
        done = cli("task", *args, cwd=repo)
        assert done.code == 1 and "Invalid task id" in done.err, args
    assert not default_root(repo).exists()


def test_list_filters_by_several_statuses_and_parent(cli: CLI, repo: Path) -> None:
    for args in (["a", "--id", "a"], ["b", "--id", "b"], ["e", "--id", "e", "--type", "epic"],
                 ["c", "--id", "c", "--parent", "e"]):  # fmt: skip
        assert cli("task", "add", *args, cwd=repo).code == 0
    assert cli("task", "cancel", "a", cwd=repo).code == 0
    assert cli("task", "set-status", "b", "needs_help", cwd=repo).code == 0
    both = cli("task", "list", "--status", "cancelled", "--status", "needs_help", "--json", cwd=repo).json()
    assert [t["id"] for t in both] == ["a", "b"]
    assert [t["id"] for t in cli("task", "list", "--status", "open,cancelled", "--json", cwd=repo).json()] == ["a", "e", "c"]
    under = cli("task", "list", "--parent", "e", "--status", "open", cwd=repo)
    assert under.out.splitlines()[1].split()[:2] == ["c", "open"] and len(under.out.splitlines()) == 2
