"""Tasks: the model, the task-source interface, and the built-in store in the state database."""

from __future__ import annotations

import abc
import enum
import json
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.errors import TaskError
from runner.graph import find_cycle
from runner.ids import check_task_id, id_problem, namespace_problem
from runner.redact import redact
from runner.sqldialect import Dialect
from runner.state import Connection, Database, now_iso


class TaskStatus(enum.StrEnum):
    """Where a task is in its life."""

    OPEN = "open"
    IN_PROGRESS = "in_progress"
    VERIFIED = "verified"
    DONE = "done"
    NEEDS_HELP = "needs_help"
    CANCELLED = "cancelled"  # a person stopped it: nothing of it lands (`task retry` reopens it)


class TaskType(enum.StrEnum):
    """Work tasks run; epics group them."""

    WORK = "work"
    EPIC = "epic"


class Author(enum.StrEnum):
    """Who wrote a comment."""

    HUMAN = "human"
    SYSTEM = "system"
    AGENT = "agent"


PRIORITIES = ("P0", "P1", "P2", "P3", "P4")


def parse_priority(value: str | int) -> int:
    """'P0'..'P4' (or 0..4) to its number; P0 is the most urgent."""
    text = str(value).strip().upper()
    if text.isdigit():
        text = "P" + text
    if text not in PRIORITIES:
        raise TaskError(f"Invalid priority {value!r}: use one of {', '.join(PRIORITIES)}.")
    return PRIORITIES.index(text)


def parse_status(value: str) -> TaskStatus:
    """A status name to its enum, with an error listing the valid names."""
    try:
        return TaskStatus(value)
    except ValueError:
        valid = ", ".join(s.value for s in TaskStatus)
        raise TaskError(f"Invalid status {value!r}: use one of {valid}.") from None


@dataclass(frozen=True)
class Comment:
    """One comment on a task."""

    author: Author
    body: str
    created_at: str


@dataclass(frozen=True)
class Task:
    """A unit of work, as the reference tracker models it."""

    id: str
    title: str
    type: TaskType = TaskType.WORK
    parent: str | None = None
    namespace: str | None = None
    status: TaskStatus = TaskStatus.OPEN
    patchset: int = 0
    priority: int = 2
    complexity: int | None = None
    dependencies: tuple[str, ...] = ()
    description: str = ""
    comments: tuple[Comment, ...] = ()
    tags: tuple[str, ...] = ()
    created_at: str = ""
    updated_at: str = ""
    resumed_at: str | None = None

    @property
    def priority_name(self) -> str:
        """'P0'..'P4'."""
        return PRIORITIES[self.priority]

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly form, as `task show --json` prints it. Written out field by field rather
        than through ``asdict``, whose deep copies made `task list --json` of a large store slow."""
        return {
            "id": self.id, "title": self.title, "type": str(self.type), "parent": self.parent,
            "namespace": self.namespace, "status": str(self.status), "patchset": self.patchset,
            "priority": self.priority_name, "complexity": self.complexity, "dependencies": list(self.dependencies),
            "description": self.description,
            "comments": [{"author": str(c.author), "body": c.body, "created_at": c.created_at} for c in self.comments],
            "tags": list(self.tags), "created_at": self.created_at, "updated_at": self.updated_at,
            "resumed_at": self.resumed_at,
        }  # fmt: skip


@dataclass
class NewTask:
    """The fields a person gives when adding a task."""

    title: str
    id: str | None = None
    type: TaskType = TaskType.WORK
    parent: str | None = None
    namespace: str | None = None
    priority: int = 2
    complexity: int | None = None
    dependencies: list[str] = field(default_factory=list)
    description: str = ""
    tags: list[str] = field(default_factory=list)
    status: TaskStatus = TaskStatus.OPEN

    def check(self) -> None:
        """Refuse bad fields before anything is written."""
        if not self.title.strip():
            raise TaskError("A task needs a non-empty title.")
        if self.id is not None:
            check_task_id(self.id)
        for ref in (*self.dependencies, *([self.parent] if self.parent else [])):
            problem = id_problem(ref)
            if problem is not None:
                raise TaskError(f"Invalid task id {ref!r} referenced by task: {problem}.")
        if self.id is not None and self.id in self.dependencies:
            raise TaskError(f"Task {self.id} cannot depend on itself.")
        if self.id is not None and self.parent == self.id:
            raise TaskError(f"Task {self.id} cannot be its own parent.")
        if self.namespace is not None:
            _check_namespace(self.namespace)


def _check_namespace(namespace: str) -> None:
    problem = namespace_problem(namespace)
    if problem is not None:
        raise TaskError(f"Invalid namespace {namespace!r}: {problem}.")


@dataclass(frozen=True)
class TaskChanges:
    """Fields of an existing task to change; None leaves a field as it is. An empty namespace or
    parent clears it; ``dependencies`` replaces the whole list."""

    title: str | None = None
    description: str | None = None
    priority: int | None = None
    dependencies: tuple[str, ...] | None = None
    namespace: str | None = None
    parent: str | None = None
    tags: tuple[str, ...] | None = None
    complexity: int | None = None

    def check(self, task_id: str) -> None:
        """Refuse bad values as ``NewTask.check`` does, before anything is opened or written."""
        if self.title is not None and not self.title.strip():
            raise TaskError("A task needs a non-empty title.")
        for ref in (*(self.dependencies or ()), *([self.parent] if self.parent else [])):
            problem = id_problem(ref)
            if problem is not None:
                raise TaskError(f"Invalid task id {ref!r} referenced by task {task_id}: {problem}.")
        if self.dependencies is not None and task_id in self.dependencies:
            raise TaskError(f"Task {task_id} cannot depend on itself.")
        if self.parent == task_id:
            raise TaskError(f"Task {task_id} cannot be its own parent.")
        if self.namespace:
            _check_namespace(self.namespace)

    def differing(self, task: Task) -> TaskChanges:
        """Only the changes that differ from ``task`` as stored (text masked as it would be)."""
        stored: dict[str, Any] = {
            "title": task.title, "description": task.description, "priority": task.priority,
            "dependencies": task.dependencies, "namespace": task.namespace or "",
            "parent": task.parent or "", "tags": task.tags, "complexity": task.complexity,
        }  # fmt: skip
        wanted = self.columns()
        kept = {k: getattr(self, k) for k, v in wanted.items() if v != stored[k]}
        return TaskChanges(**kept)

    def columns(self) -> dict[str, Any]:
        """The given fields as they would be stored (text masked, an empty namespace as none)."""
        out: dict[str, Any] = {}
        for name in ("title", "description", "priority", "namespace", "parent", "complexity"):
            value = getattr(self, name)
            if value is not None:
                out[name] = redact(value) if name in ("title", "description") else value
        if self.dependencies is not None:
            out["dependencies"] = tuple(dict.fromkeys(self.dependencies))
        if self.tags is not None:
            out["tags"] = tuple(redact(t) for t in self.tags)
        return out


def graph_problem(dependencies: Mapping[str, Sequence[str]], parents: Mapping[str, str | None]) -> str | None:
    """Why a store whose tasks have these dependencies and parents cannot be (pure): a task that is
    its own dependency or parent, or a cycle, named as ``a -> b -> a``. None when there is none."""
    for task_id, deps in dependencies.items():
        if task_id in deps:
            return f"task {task_id} depends on itself ({task_id} -> {task_id})"
    for task_id, parent in parents.items():
        if parent == task_id:
            return f"task {task_id} is its own parent ({task_id} -> {task_id})"
    cycle = find_cycle(dependencies)
    if cycle:
        return f"dependency cycle {' -> '.join(cycle)}: none of them could ever start"
    cycle = find_cycle({t: [p] if p else [] for t, p in parents.items()})
    if cycle:
        return f"parent cycle {' -> '.join(cycle)}"
    return None


@dataclass
class ImportResult:
    """What an import did: ids added, updated, found unchanged, and those not updated (id, why)."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    not_updated: list[tuple[str, str]] = field(default_factory=list)


# An import updates a task only while no attempt of it is under way and it has not ended: a task
# being developed or checked is changed with `task edit` (for its next attempt), a done or
# cancelled one not at all by a file.
IMPORT_UPDATABLE = frozenset({TaskStatus.OPEN, TaskStatus.NEEDS_HELP})

# The statuses of tasks not done, as SQL literals (the enum's own values, never a person's text).
_UNFINISHED = ", ".join(f"'{s.value}'" for s in TaskStatus if s is not TaskStatus.DONE)


# The columns a Task is built from, in the order ``_select`` unpacks them.
_TASK_COLUMNS = (
    "t.id, t.title, t.type, t.parent, t.namespace, t.status, t.patchset, t.priority, t.complexity, "
    "t.description, t.tags, t.created_at, t.updated_at, t.resumed_at"
)
_TYPES = {t.value: t for t in TaskType}
_STATUSES = {s.value: s for s in TaskStatus}


def _filters(
    statuses: Sequence[TaskStatus] | None, parent: str | None, dialect: Dialect
) -> tuple[str, tuple[Any, ...]]:
    """The condition on tasks (``t``) for these statuses (any when None) and parent. The statuses
    go in as one JSON parameter, however many; only the filters given are written, so that
    SQLite can use the status and parent indexes (an "? IS NULL OR status = ?" condition makes it
    scan every task)."""
    where: list[str] = []
    params: list[Any] = []
    if statuses is not None and len(statuses) == 1:
        # One status (the common case) walks the (status, created_at) index in order: a page
        # stops after its rows instead of sorting every task of that status first.
        where.append("t.status = ?")
        params.append(str(statuses[0]))
    elif statuses is not None:
        where.append(f"t.status IN {dialect.json_texts}")
        params.append(json.dumps([str(s) for s in statuses]))
    if parent is not None:
        where.append("t.parent = ?")
        params.append(parent)
    return " AND ".join(where) or "TRUE", tuple(params)


@dataclass(frozen=True)
class TaskPage:
    """One page of a listing: its tasks, how many match in all, and where the page starts."""

    tasks: list[Task]
    total: int
    offset: int
    widest_id: int = 0  # the longest id among every matching task, so that pages line up


class TaskSource(abc.ABC):
    """What the loop needs from a task tracker. The built-in store implements all of it."""

    @abc.abstractmethod
    def get(self, task_id: str) -> Task:
        """One task; TaskError if it does not exist."""

    @abc.abstractmethod
    def list_tasks(
        self, status: TaskStatus | None = None, parent: str | None = None, *, with_comments: bool = False
    ) -> list[Task]:
        """Tasks, oldest first, optionally filtered; their comments only when asked for."""

    def ready(self) -> list[Task]:
        """Open tasks whose dependencies are all done, oldest first, without their comments.

        The loop asks this every cycle; a tracker that can answer it with one query should.
        """
        done = {t.id for t in self.list_tasks(TaskStatus.DONE, with_comments=False)}
        return [
            t
            for t in self.list_tasks(TaskStatus.OPEN, with_comments=False)
            if all(d in done for d in t.dependencies)
        ]

    @abc.abstractmethod
    def add(self, new: NewTask) -> Task:
        """Create a task; its id is generated unless given."""

    @abc.abstractmethod
    def comment(self, task_id: str, body: str, author: Author = Author.HUMAN) -> None:
        """Append a comment."""

    @abc.abstractmethod
    def set_status(self, task_id: str, status: TaskStatus, *, by_person: bool = False) -> None:
        """Move a task; a person moving it to open restarts its retry count."""

    @abc.abstractmethod
    def bump_patchset(self, task_id: str) -> Task:
        """Start a new patchset after a rejection of an existing commit."""


class BuiltinTaskStore(TaskSource):
    """Tasks kept in the pipeline's own SQLite database; needs no other tool."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # Called with (task id, old status, new status) after each move this store makes, so that
        # whatever is told about moves (notifications) needs no call from the code that moves.
        self.listeners: list[Callable[[str, TaskStatus, TaskStatus], None]] = []

    # -- reads ---------------------------------------------------------------------------------

    def get(self, task_id: str) -> Task:
        """One task with its dependencies and comments."""
        check_task_id(task_id)
        found = self._select("t.id = ?", (task_id,), with_comments=True)
        if not found:
            raise TaskError(f"No task with id {task_id!r}.")
        return found[0]

    def exists(self, task_id: str) -> bool:
        """Whether a task with this id exists."""
        return self.db.scalar("SELECT 1 FROM tasks WHERE id = ?", (task_id,)) is not None

    def status_of(self, task_id: str) -> TaskStatus | None:
        """A task's status, None when there is no such task: one query, where ``get`` reads its
        dependencies and comments too (the loop asks this of its running tasks many times a cycle)."""
        status = self.db.scalar("SELECT status FROM tasks WHERE id = ?", (task_id,))
        return None if status is None else TaskStatus(status)

    def claimable(self, task_id: str) -> bool:
        """Whether ``task_id`` is open and no other transaction holds its row; called in a write
        transaction, which then holds it (PostgreSQL) until it ends. Every write transaction takes
        one lock first (runner.state), so today nothing is ever passed over; the row lock is what
        keeps two claims of one task apart once writers stop taking turns."""
        return (
            self.db.scalar(f"SELECT 1 FROM tasks WHERE id = ? AND status = 'open'{self.db.dialect.skip_locked}", (task_id,))
            is not None
        )

    def list_tasks(
        self, status: TaskStatus | None = None, parent: str | None = None, *, with_comments: bool = False
    ) -> list[Task]:
        """Tasks in creation order; their comments only with ``with_comments``."""
        where, params = _filters(None if status is None else (status,), parent, self.db.dialect)
        return self._select(where, params, with_comments=with_comments)

    def page(
        self, statuses: Collection[TaskStatus] = (), parent: str | None = None, *, limit: int | None = None,
        offset: int = 0, with_comments: bool = False,
    ) -> TaskPage:  # fmt: skip
        """Up to ``limit`` tasks (all when None) of ``statuses`` (any when empty) under ``parent``,
        in creation order from the ``offset``-th, and how many match in all. Reads the page's rows
        (and their comments only when asked): a page costs the same on a store of any size."""
        where, params = _filters(tuple(statuses) or None, parent, self.db.dialect)
        row = self.db.query(f"SELECT COUNT(*), MAX(LENGTH(t.id)) FROM tasks AS t WHERE {where}", params)[0]
        tasks = self._select(where, params, limit=limit, offset=offset, with_comments=with_comments)
        return TaskPage(tasks=tasks, total=int(row[0]), offset=offset, widest_id=int(row[1] or 0))

    def ready(self) -> list[Task]:
        """Open tasks whose dependencies are all done, in one query: a backlog of thousands of
        finished tasks costs the loop nothing."""
        return self._select(
            "t.status = 'open' AND NOT EXISTS ("
            " SELECT 1 FROM task_dependencies AS d LEFT JOIN tasks AS u ON u.id = d.depends_on"
            " WHERE d.task_id = t.id AND (u.status IS NULL OR u.status != 'done'))",
            (),
        )

    def unfinished(self) -> tuple[list[Task], dict[str, TaskStatus]]:
        """Every task that is not done, in creation order without comments, and the status of
        each task one of them depends on (a dependency that does not exist is left out): what
        the queue's reasons need, read without the history of done tasks."""
        tasks = self._select(f"t.status IN ({_UNFINISHED})", ())
        rows = self.db.query(
            "SELECT u.id, u.status FROM tasks AS u WHERE u.id IN ("
            " SELECT d.depends_on FROM task_dependencies AS d JOIN tasks AS t ON t.id = d.task_id"
            f" WHERE t.status IN ({_UNFINISHED}))"
        )
        statuses = {str(r[0]): TaskStatus(r[1]) for r in rows}
        statuses.update({t.id: t.status for t in tasks})
        return tasks, statuses

    def dependencies_done(self, task: Task) -> bool:
        """Whether every dependency of ``task`` exists and is done."""
        return all(self.exists(d) and self.get(d).status is TaskStatus.DONE for d in task.dependencies)

    def counts(self, type_: TaskType | None = TaskType.WORK) -> dict[str, int]:
        """Number of tasks per status, of one type or (None) of every type."""
        by_type = self.counts_by_type()
        counts = {s.value: 0 for s in TaskStatus}
        for kind in TaskType if type_ is None else (type_,):
            for status, count in by_type[kind].items():
                counts[status] += count
        return counts

    def counts_by_type(self) -> dict[TaskType, dict[str, int]]:
        """Number of tasks per type and status, in one pass."""
        found = {kind: {s.value: 0 for s in TaskStatus} for kind in TaskType}
        for row in self.db.query("SELECT type, status, COUNT(*) FROM tasks GROUP BY type, status"):
            found[TaskType(row[0])][str(row[1])] = int(row[2])
        return found

    def _select(
        self, where: str, params: tuple[Any, ...], *, with_comments: bool = False, limit: int | None = None,
        offset: int = 0,
    ) -> list[Task]:  # fmt: skip
        """The tasks (``t``) matching ``where`` in creation order, with their dependencies, and
        their comments when asked. Dependencies and comments are read by the same condition in
        a subquery, never by a list of ids: one parameter per task overflows SQLite's cap on a
        large store (and costs a parse of that list each time)."""
        rowid = self.db.dialect.rowid
        order = f" ORDER BY t.created_at, t.{rowid}"
        window: tuple[Any, ...] = ()
        if limit is not None or offset:
            order += " LIMIT ? OFFSET ?"
            window = (self.db.dialect.no_limit if limit is None else limit, offset)
        rows = self.db.conn.execute(f"SELECT {_TASK_COLUMNS} FROM tasks AS t WHERE {where}{order}",
                                    (*params, *window)).fetchall()  # fmt: skip
        if not rows:
            return []
        chosen = f"SELECT t.id FROM tasks AS t WHERE {where}{order}"
        deps: dict[str, list[str]] = {}
        for r in self.db.query(
            f"SELECT task_id, depends_on FROM task_dependencies WHERE task_id IN ({chosen}) ORDER BY {rowid}",
            (*params, *window),
        ):
            deps.setdefault(r[0], []).append(r[1])
        comments: dict[str, list[Comment]] = {}
        if with_comments:
            for r in self.db.query(
                f"SELECT task_id, author, body, created_at FROM task_comments WHERE task_id IN ({chosen}) "
                "ORDER BY id",
                (*params, *window),
            ):
                comments.setdefault(r[0], []).append(Comment(Author(r[1]), r[2], r[3]))
        # Plain tuples and lookups by value: a listing of every done task builds a quarter of a
        # million of these, where sqlite3.Row access by name and Enum calls were most of the cost.
        return [
            Task(
                id=id_, title=title, type=_TYPES[type_], parent=parent, namespace=namespace,
                status=_STATUSES[status], patchset=patchset, priority=priority, complexity=complexity,
                dependencies=tuple(deps.get(id_, ())), description=description,
                comments=tuple(comments.get(id_, ())), tags=() if tags == "[]" else tuple(json.loads(tags)),
                created_at=created_at, updated_at=updated_at, resumed_at=resumed_at,
            )
            for (id_, title, type_, parent, namespace, status, patchset, priority, complexity, description, tags,
                 created_at, updated_at, resumed_at) in rows
        ]

    # -- writes --------------------------------------------------------------------------------

    def add(self, new: NewTask) -> Task:
        """Create a task; refuses bad ids, unknown dependencies, duplicate ids and cycles."""
        new.check()
        with self.db.write() as conn:
            task_id = self._insert(conn, new, known=set())
            self._check_graph(conn)
        return self.get(task_id)

    def _check_graph(self, conn: Connection) -> None:
        """Refuse (rolling the caller's transaction back) a store whose dependencies or parents
        now hold a cycle. Read whole: only a person's add, edit or import pays for it."""
        deps: dict[str, list[str]] = {}
        parents: dict[str, str | None] = {}
        rowid = self.db.dialect.rowid
        for row in conn.execute(f"SELECT id, parent FROM tasks ORDER BY created_at, {rowid}"):
            deps[row[0]] = []
            parents[row[0]] = row[1]
        for row in conn.execute(f"SELECT task_id, depends_on FROM task_dependencies ORDER BY {rowid}"):
            deps.setdefault(row[0], []).append(row[1])
        problem = graph_problem(deps, parents)
        if problem is not None:
            raise TaskError(f"Refused: {problem}. Nothing was changed.")

    def blocked(self) -> dict[str, list[str]]:
        """Open tasks that can never start as things are: each with its dependencies that were
        cancelled (or deleted). A person decides (`task retry` the dependency, or `task edit
        --depends-on` without it)."""
        found: dict[str, list[str]] = {}
        for row in self.db.query(
            "SELECT d.task_id, d.depends_on FROM task_dependencies AS d JOIN tasks AS t ON t.id = d.task_id "
            "LEFT JOIN tasks AS u ON u.id = d.depends_on "
            f"WHERE t.status = 'open' AND (u.status IS NULL OR u.status = 'cancelled') ORDER BY d.{self.db.dialect.rowid}"
        ):
            found.setdefault(row[0], []).append(row[1])
        return found

    def dependants(self, task_id: str) -> list[str]:
        """Tasks that depend on ``task_id`` or have it as their parent."""
        rows = self.db.query(
            "SELECT task_id FROM task_dependencies WHERE depends_on = ? UNION "
            "SELECT id FROM tasks WHERE parent = ? ORDER BY 1",
            (task_id, task_id),
        )
        return [str(r[0]) for r in rows]

    def update(self, task_id: str, changes: TaskChanges) -> tuple[Task, list[str]]:
        """Change the given fields of a task in one transaction; the task and the names of the
        fields that changed. Refuses what ``add`` refuses: unknown dependencies or parent, cycles."""
        changes.check(task_id)
        with self.db.write() as conn:
            names = self._update(conn, self.get(task_id), changes)
            if names:
                self._check_graph(conn)
        return self.get(task_id), names

    def _update(self, conn: Connection, task: Task, changes: TaskChanges) -> list[str]:
        wanted = changes.differing(task).columns()
        for ref in wanted.get("dependencies", ()):
            if not self.exists(ref):
                raise TaskError(f"Task {task.id} would depend on {ref!r}, which does not exist.")
        if wanted.get("parent") and not self.exists(wanted["parent"]):
            raise TaskError(f"Parent {wanted['parent']!r} of task {task.id} does not exist.")
        if not wanted:
            return []
        sets = {k: v for k, v in wanted.items() if k not in ("dependencies", "tags")}
        for name in ("namespace", "parent"):
            if sets.get(name) == "":
                sets[name] = None  # an empty value clears it
        if "tags" in wanted:
            sets["tags"] = json.dumps(list(wanted["tags"]))
        sets["updated_at"] = now_iso()
        conn.execute(
            f"UPDATE tasks SET {', '.join(f'{k} = ?' for k in sets)} WHERE id = ?", (*sets.values(), task.id)
        )
        if "dependencies" in wanted:
            conn.execute("DELETE FROM task_dependencies WHERE task_id = ?", (task.id,))
            conn.executemany(
                "INSERT INTO task_dependencies (task_id, depends_on) VALUES (?, ?)",
                [(task.id, d) for d in wanted["dependencies"]],
            )
        return list(wanted)

    def delete(self, task_id: str) -> int:
        """Remove a task with its comments, dependencies and every attempt recorded for it (a new
        task given the same id later starts with none); the number of attempts removed. The
        caller decides whether it may go (runner.steering)."""
        with self.db.write() as conn:
            self.get(task_id)
            attempts = int(
                conn.execute(
                    "SELECT COUNT(*) FROM pipeline_runs WHERE task_id = ? AND parent_id IS NULL", (task_id,)
                ).fetchone()[0]
            )
            conn.execute("DELETE FROM pipeline_runs WHERE task_id = ?", (task_id,))
            conn.execute("DELETE FROM tasks WHERE id = ?", (task_id,))  # comments, dependencies cascade
        return attempts

    def _insert(self, conn: Connection, new: NewTask, known: set[str]) -> str:
        for ref in new.dependencies:
            if ref not in known and not self.exists(ref):
                raise TaskError(f"Task depends on {ref!r}, which does not exist.")
        if new.parent and new.parent not in known and not self.exists(new.parent):
            raise TaskError(f"Parent {new.parent!r} does not exist.")
        task_id = new.id or self._next_id(conn)
        if self.exists(task_id):
            raise TaskError(f"A task with id {task_id!r} already exists.")
        conn.execute(_INSERT_TASK, _row(new, task_id, now_iso()))
        conn.executemany(
            "INSERT INTO task_dependencies (task_id, depends_on) VALUES (?, ?) ON CONFLICT DO NOTHING",
            [(task_id, d) for d in new.dependencies],
        )
        return task_id

    def _stored(self, conn: Connection, ids: Collection[str | None]) -> set[str]:
        """Which of ``ids`` are tasks in the store, in one query (the ids as one JSON parameter)."""
        wanted = json.dumps([i for i in ids if i])
        rows = conn.execute(f"SELECT id FROM tasks WHERE id IN {self.db.dialect.json_texts}", (wanted,))
        return {str(r[0]) for r in rows}

    def _next_id(self, conn: Connection) -> str:
        row = conn.execute("SELECT value FROM id_counter WHERE name = 'task'").fetchone()
        value = int(row[0]) if row else 0
        while True:
            value += 1
            candidate = f"t-{value}"
            if not self.exists(candidate):
                break
        conn.execute(
            "INSERT INTO id_counter (name, value) VALUES ('task', ?) "
            "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            (value,),
        )
        return candidate

    def comment(self, task_id: str, body: str, author: Author = Author.HUMAN) -> None:
        """Append a comment to an existing task."""
        if self.status_of(check_task_id(task_id)) is None:
            raise TaskError(f"No task with id {task_id!r}.")
        stamp = now_iso()
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO task_comments (task_id, author, body, created_at) VALUES (?,?,?,?)",
                (task_id, str(author), redact(body), stamp),
            )
            conn.execute("UPDATE tasks SET updated_at = ? WHERE id = ?", (stamp, task_id))

    def set_status(self, task_id: str, status: TaskStatus, *, by_person: bool = False) -> None:
        """Move a task. A person reopening it restarts the retry count from now."""
        before = self.status_of(check_task_id(task_id))
        if before is None:
            raise TaskError(f"No task with id {task_id!r}.")
        stamp = now_iso()
        with self.db.write() as conn:
            if by_person and status is TaskStatus.OPEN:
                conn.execute(
                    "UPDATE tasks SET status = ?, updated_at = ?, resumed_at = ? WHERE id = ?",
                    (str(status), stamp, stamp, task_id),
                )
            else:
                conn.execute(
                    "UPDATE tasks SET status = ?, updated_at = ? WHERE id = ?",
                    (str(status), stamp, task_id),
                )
        for listener in self.listeners:
            listener(task_id, before, status)

    def bump_patchset(self, task_id: str) -> Task:
        """Increment the patchset count."""
        with self.db.write() as conn:
            conn.execute(
                "UPDATE tasks SET patchset = patchset + 1, updated_at = ? WHERE id = ?",
                (now_iso(), task_id),
            )
        return self.get(task_id)

    def import_tasks(self, news: Sequence[NewTask]) -> ImportResult:
        """Add checked tasks (see ``tasks_from_records``) in one transaction. A task already present
        is updated where its title, description, priority, dependencies, namespace, parent, tags or
        complexity differ, while its status allows (``IMPORT_UPDATABLE``); otherwise it is listed
        as not updated, with why. A cycle, through the file or the store, refuses the whole file."""
        result = ImportResult()
        with self.db.write() as conn:
            known = {n.id for n in news if n.id}
            present_ids = self._stored(conn, known)
            present = [n for n in news if n.id in present_ids]
            # New ones first: an update may name a task the same file adds. Added in one
            # statement each for the tasks and their dependencies: a file of 100,000 tasks is
            # not 300,000 statements.
            added = [n for n in news if n.id not in present_ids]
            refs = self._stored(conn, {r for n in added for r in (*n.dependencies, n.parent or "")} - known - {""})
            rows: list[tuple[Any, ...]] = []
            for new in added:
                for ref in new.dependencies:
                    if ref not in known and ref not in refs:
                        raise TaskError(f"Task depends on {ref!r}, which does not exist.")
                if new.parent and new.parent not in known and new.parent not in refs:
                    raise TaskError(f"Parent {new.parent!r} does not exist.")
                assert new.id is not None  # an imported task always has one
                rows.append(_row(new, new.id, now_iso()))
                result.added.append(new.id)
            conn.executemany(_INSERT_TASK, rows)
            conn.executemany(
                "INSERT INTO task_dependencies (task_id, depends_on) VALUES (?, ?) ON CONFLICT DO NOTHING",
                [(n.id, d) for n in added for d in n.dependencies],
            )
            for new in present:
                assert new.id is not None
                task = self.get(new.id)
                changes = _changes_of(new).differing(task)
                if not changes.columns():
                    result.unchanged.append(task.id)
                elif task.status not in IMPORT_UPDATABLE:
                    fields = ", ".join(changes.columns())
                    result.not_updated.append((task.id, f"{task.status.value}; differs in {fields}"))
                else:
                    self._update(conn, task, changes)
                    result.updated.append(task.id)
            self._check_graph(conn)
        return result


_INSERT_TASK = (
    "INSERT INTO tasks (id, title, type, parent, namespace, status, priority, complexity, "
    "description, tags, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
)


def _row(new: NewTask, task_id: str, stamp: str) -> tuple[Any, ...]:
    """The tasks row of a new task. The text a person wrote is masked before it is stored, as
    comments are: a secret pasted into a task would otherwise sit in state.db and reach the
    agent's prompt."""
    return (
        task_id, redact(new.title), str(new.type), new.parent, new.namespace, str(new.status), new.priority,
        new.complexity, redact(new.description), json.dumps([redact(t) for t in new.tags]), stamp, stamp,
    )  # fmt: skip


def _changes_of(new: NewTask) -> TaskChanges:
    """Every field of an imported record an import may change, as changes to an existing task."""
    return TaskChanges(
        title=new.title, description=new.description, priority=new.priority,
        dependencies=tuple(new.dependencies), namespace=new.namespace or "", parent=new.parent or "",
        tags=tuple(new.tags), complexity=new.complexity,
    )  # fmt: skip


_RECORD_KEYS = {
    "id", "title", "type", "parent", "namespace", "priority", "complexity", "dependencies",
    "depends_on", "description", "tags", "status",
}  # fmt: skip


def tasks_from_records(records: Iterable[Mapping[str, Any]], source: str) -> list[NewTask]:
    """Parse and check every record of a task file, before anything is opened or written. An id
    given twice is an error naming it (a later record would otherwise silently win or vanish)."""
    news = [_record_to_new(record, f"{source}: task {index}") for index, record in enumerate(records, start=1)]
    first: dict[str, int] = {}
    for index, new in enumerate(news, start=1):
        assert new.id is not None  # an imported task always has one
        if new.id in first:
            raise TaskError(
                f"{source}: id {new.id!r} is given twice (tasks {first[new.id]} and {index}); nothing was imported."
            )
        first[new.id] = index
    return news


def _record_to_new(record: Mapping[str, Any], where: str) -> NewTask:
    if not isinstance(record, Mapping):
        raise TaskError(f"{where}: expected a mapping of fields, got {type(record).__name__}.")
    unknown = sorted(set(record) - _RECORD_KEYS)
    if unknown:
        raise TaskError(
            f"{where}: unknown field(s) {', '.join(unknown)}; valid: {', '.join(sorted(_RECORD_KEYS))}."
        )
    if "id" not in record:
        raise TaskError(f"{where}: an imported task needs an 'id' so that importing again is idempotent.")
    try:
        type_ = TaskType(record.get("type", "work"))
    except ValueError:
        raise TaskError(f"{where}: type must be 'work' or 'epic', not {record.get('type')!r}.") from None
    deps = record.get("dependencies", record.get("depends_on", [])) or []
    if isinstance(deps, str):
        deps = [deps]
    new = NewTask(
        title=str(record.get("title", "")),
        id=str(record["id"]),
        type=type_,
        parent=record.get("parent"),
        namespace=record.get("namespace"),
        priority=parse_priority(record.get("priority", "P2")),
        complexity=record.get("complexity"),
        dependencies=[str(d) for d in deps],
        description=str(record.get("description", "") or ""),
        tags=[str(t) for t in record.get("tags", []) or []],
        status=parse_status(record.get("status", "open")),
    )
    try:
        new.check()
    except TaskError as exc:
        raise TaskError(f"{where}: {exc}") from None
    return new


def read_task_file(path: Path) -> list[Mapping[str, Any]]:
    """Parse a YAML file (a list, or a mapping with 'tasks') or a JSON Lines file of tasks."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TaskError(f"Cannot read task file {path}: {exc.strerror}.") from None
    if path.suffix in (".jsonl", ".ndjson"):
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise TaskError(f"{path}:{number}: not valid JSON: {exc.msg}.") from None
        return records
    import yaml  # here: only reading a task file needs it, not every command that opens the store

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TaskError(f"{path}: not valid YAML: {exc}.") from None
    if isinstance(data, Mapping) and "tasks" in data:
        data = data["tasks"]
    if data is None:
        return []
    if not isinstance(data, list):
        raise TaskError(f"{path}: expected a list of tasks (or a mapping with a 'tasks' list).")
    return data


TASK_SOURCES: dict[str, type[BuiltinTaskStore]] = {"builtin": BuiltinTaskStore}


def open_task_source(name: str, db: Database) -> BuiltinTaskStore:
    """The task source registered under ``name``."""
    try:
        return TASK_SOURCES[name](db)
    except KeyError:
        raise TaskError(f"Unknown task source {name!r}; valid: {', '.join(sorted(TASK_SOURCES))}.") from None
