"""The SQLite state: connection settings, schema migrations and the pipeline_runs records.

WAL lets ``status`` read while a runner writes; every write transaction takes the write lock up
front (BEGIN IMMEDIATE) so two processes never deadlock upgrading a read lock.
"""

from __future__ import annotations

import enum
import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runner.errors import StateError
from runner.redact import redact

BUSY_TIMEOUT_MS = 30_000
# How long a person's command (`task add`, `task set-status`) waits for another process's write:
# the runner's transactions take milliseconds, so a lock held longer is something to report.
COMMAND_LOCK_WAIT_SECONDS = 5.0

# Each entry moves the schema from version i to i+1. Never edit a shipped entry: append.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE tasks (
        id TEXT PRIMARY KEY,
        title TEXT NOT NULL,
        type TEXT NOT NULL DEFAULT 'work' CHECK (type IN ('work', 'epic')),
        parent TEXT,
        namespace TEXT,
        status TEXT NOT NULL DEFAULT 'open'
            CHECK (status IN ('open', 'in_progress', 'verified', 'done', 'needs_help')),
        patchset INTEGER NOT NULL DEFAULT 0,
        priority INTEGER NOT NULL DEFAULT 2 CHECK (priority BETWEEN 0 AND 4),
        complexity INTEGER,
        description TEXT NOT NULL DEFAULT '',
        tags TEXT NOT NULL DEFAULT '[]',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        resumed_at TEXT
    );
    CREATE INDEX idx_tasks_status ON tasks(status);
    CREATE INDEX idx_tasks_parent ON tasks(parent);
    CREATE TABLE task_dependencies (
        task_id TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
        depends_on TEXT NOT NULL,
        PRIMARY KEY (task_id, depends_on)
    );
    CREATE TABLE task_comments (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
        author TEXT NOT NULL CHECK (author IN ('human', 'system', 'agent')),
        body TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX idx_task_comments_task ON task_comments(task_id);
    CREATE TABLE id_counter (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    CREATE TABLE pipeline_runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id TEXT NOT NULL,
        phase TEXT NOT NULL CHECK (phase IN ('dev', 'verify', 'integrate')),
        patchset INTEGER NOT NULL,
        agent_run_id TEXT,
        status TEXT NOT NULL CHECK (status IN ('running', 'success', 'failure', 'cancelled')),
        cost_cents REAL NOT NULL DEFAULT 0,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        error_summary TEXT,
        log_path TEXT,
        pid INTEGER,
        workspace TEXT,
        before_sha TEXT,
        after_sha TEXT,
        tokens INTEGER
    );
    CREATE INDEX idx_pipeline_runs_task ON pipeline_runs(task_id);
    CREATE INDEX idx_pipeline_runs_status ON pipeline_runs(status);
    """,
    # 2: run status 'skipped' (a verification in which a skip code or the lack of any applicable
    # recipe meant no full check). SQLite cannot alter a CHECK, so the table is rebuilt; the phase
    # CHECK goes, so that a new phase needs no migration (Phase validates it on read). Row ids
    # and the AUTOINCREMENT counter are kept, so no id is ever handed out twice.
    """
    CREATE TABLE pipeline_runs_v2 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id TEXT NOT NULL,
        phase TEXT NOT NULL,
        patchset INTEGER NOT NULL,
        agent_run_id TEXT,
        status TEXT NOT NULL
            CHECK (status IN ('running', 'success', 'failure', 'cancelled', 'skipped')),
        cost_cents REAL NOT NULL DEFAULT 0,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        error_summary TEXT,
        log_path TEXT,
        pid INTEGER,
        workspace TEXT,
        before_sha TEXT,
        after_sha TEXT,
        tokens INTEGER
    );
    INSERT INTO pipeline_runs_v2 (id, task_id, phase, patchset, agent_run_id, status, cost_cents,
        started_at, finished_at, error_summary, log_path, pid, workspace, before_sha, after_sha, tokens)
    SELECT id, task_id, phase, patchset, agent_run_id, status, cost_cents,
        started_at, finished_at, error_summary, log_path, pid, workspace, before_sha, after_sha, tokens
    FROM pipeline_runs;
    DELETE FROM sqlite_sequence WHERE name = 'pipeline_runs_v2';
    INSERT INTO sqlite_sequence (name, seq)
        SELECT 'pipeline_runs_v2', seq FROM sqlite_sequence WHERE name = 'pipeline_runs';
    DROP TABLE pipeline_runs;
    ALTER TABLE pipeline_runs_v2 RENAME TO pipeline_runs;
    CREATE INDEX idx_pipeline_runs_task ON pipeline_runs(task_id);
    CREATE INDEX idx_pipeline_runs_status ON pipeline_runs(status);
    """,
    # 3: the check graph. A verification or integration (parent_id NULL, as every older row) now
    # has a row per phase of the graph under it (parent_id = its id, phase = the phase's own name),
    # with the phase's exit code, duration, the tree it checked and, for a pass reused instead of
    # run, the run it was reused from. check_results holds the passes by content key.
    """
    ALTER TABLE pipeline_runs ADD COLUMN parent_id INTEGER;
    ALTER TABLE pipeline_runs ADD COLUMN exit_code INTEGER;
    ALTER TABLE pipeline_runs ADD COLUMN duration REAL;
    ALTER TABLE pipeline_runs ADD COLUMN tree TEXT;
    ALTER TABLE pipeline_runs ADD COLUMN cached_from INTEGER;
    CREATE INDEX idx_pipeline_runs_parent ON pipeline_runs(parent_id);
    CREATE TABLE check_results (
        key TEXT PRIMARY KEY,
        phase TEXT NOT NULL,
        tree TEXT NOT NULL,
        run_id INTEGER,
        duration REAL NOT NULL,
        exit_code INTEGER NOT NULL,
        passed_at TEXT NOT NULL
    );
    """,
    # 4 (task steering): task status 'cancelled', a person's decision that nothing of the task
    # lands. SQLite cannot alter a CHECK, so tasks is rebuilt, keeping each row's rowid (the
    # creation order's tie-break). _migrate turns foreign keys off meanwhile: with them on,
    # dropping the old table would delete every comment and dependency by cascade.
    """
    CREATE TABLE tasks_v4 (
        id TEXT PRIMARY KEY,
        title TEXT NOT NULL,
        type TEXT NOT NULL DEFAULT 'work' CHECK (type IN ('work', 'epic')),
        parent TEXT,
        namespace TEXT,
        status TEXT NOT NULL DEFAULT 'open'
            CHECK (status IN ('open', 'in_progress', 'verified', 'done', 'needs_help', 'cancelled')),
        patchset INTEGER NOT NULL DEFAULT 0,
        priority INTEGER NOT NULL DEFAULT 2 CHECK (priority BETWEEN 0 AND 4),
        complexity INTEGER,
        description TEXT NOT NULL DEFAULT '',
        tags TEXT NOT NULL DEFAULT '[]',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        resumed_at TEXT
    );
    INSERT INTO tasks_v4 (rowid, id, title, type, parent, namespace, status, patchset, priority,
        complexity, description, tags, created_at, updated_at, resumed_at)
    SELECT rowid, id, title, type, parent, namespace, status, patchset, priority,
        complexity, description, tags, created_at, updated_at, resumed_at
    FROM tasks;
    DROP TABLE tasks;
    ALTER TABLE tasks_v4 RENAME TO tasks;
    CREATE INDEX idx_tasks_status ON tasks(status);
    CREATE INDEX idx_tasks_parent ON tasks(parent);
    """,
    # 5: empty (a number given up; kept so that the later ones keep theirs).
    "",
    # 6 (store size): indexes for the queries the loop, `status` and `task list` make, so that their
    # cost follows the tasks they show, not the store's history. A task's failed attempts
    # (task_id, status): with only the status index SQLite read every failure of every task,
    # once per open task. Attempts finished since a time (today's cost under a daily cap, each
    # cycle; the end-of-run summary): by finished_at, not every attempt ever made. Tasks in
    # creation order, all or of one status: a page of `task list` reads its rows from the index
    # instead of sorting the whole table; (status, created_at) serves every lookup the status
    # index served. Counts per type and status (`status`) from a small index, not the table.
    """
    CREATE INDEX IF NOT EXISTS idx_pipeline_runs_task_status ON pipeline_runs(task_id, status);
    CREATE INDEX IF NOT EXISTS idx_pipeline_runs_finished ON pipeline_runs(finished_at);
    CREATE INDEX IF NOT EXISTS idx_tasks_created ON tasks(created_at);
    CREATE INDEX IF NOT EXISTS idx_tasks_status_created ON tasks(status, created_at);
    CREATE INDEX IF NOT EXISTS idx_tasks_type_status ON tasks(type, status);
    DROP INDEX IF EXISTS idx_tasks_status;
    """
    # Also (6): the cost of every attempt so far (`status`), kept up to date by triggers in
    # the transaction of each write instead of summed over the whole history at each reading.
    # Kept in integer millionths of a cent, so that it adds up exactly whatever the order of
    # writes. A migration that rebuilds pipeline_runs must create these triggers again.
    """
    CREATE TABLE IF NOT EXISTS run_totals (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        cost_microcents INTEGER NOT NULL
    );
    INSERT OR REPLACE INTO run_totals (id, cost_microcents)
        SELECT 1, COALESCE(SUM(CAST(ROUND(cost_cents * 1000000) AS INTEGER)), 0) FROM pipeline_runs;
    CREATE TRIGGER IF NOT EXISTS run_totals_insert AFTER INSERT ON pipeline_runs BEGIN
        UPDATE run_totals SET cost_microcents = cost_microcents + CAST(ROUND(NEW.cost_cents * 1000000) AS INTEGER);
    END;
    CREATE TRIGGER IF NOT EXISTS run_totals_update AFTER UPDATE OF cost_cents ON pipeline_runs BEGIN
        UPDATE run_totals SET cost_microcents = cost_microcents
            + CAST(ROUND(NEW.cost_cents * 1000000) AS INTEGER) - CAST(ROUND(OLD.cost_cents * 1000000) AS INTEGER);
    END;
    CREATE TRIGGER IF NOT EXISTS run_totals_delete AFTER DELETE ON pipeline_runs BEGIN
        UPDATE run_totals SET cost_microcents = cost_microcents - CAST(ROUND(OLD.cost_cents * 1000000) AS INTEGER);
    END;
    """,
    # 7: flaky checks. How often each check (by content key: tree, phase, recipes, env, on) passed
    # and failed, so that a failure where the same check passed before is told apart (rerun once,
    # runner.flaky). The partial index serves `status`'s list of the checks that did both.
    """
    CREATE TABLE check_outcomes (
        key TEXT PRIMARY KEY,
        phase TEXT NOT NULL,
        passes INTEGER NOT NULL DEFAULT 0,
        fails INTEGER NOT NULL DEFAULT 0,
        reruns INTEGER NOT NULL DEFAULT 0,
        cleared INTEGER NOT NULL DEFAULT 0,
        last_at TEXT NOT NULL
    );
    CREATE INDEX idx_check_outcomes_flaky ON check_outcomes(last_at) WHERE passes > 0 AND fails > 0;
    """,
    # 8: a phase row run once more after a flaky failure names the first run's row of that phase,
    # so that `task show`, receipts and `status` tell the rerun from the run it repeats.
    "ALTER TABLE pipeline_runs ADD COLUMN rerun_of INTEGER;",
    # 9: runners sharing one state (runner.fleet). Each runner holds a lease (host, root, pid,
    # expiry) it renews while it lives; its id is the fencing token every write transaction checks
    # (Database.fence), so a runner whose lease another took over writes nothing more. A run's owner
    # is the runner that started it: a runner acts only on its own running rows. Named leases
    # (the integrator's) are held by one runner at a time. Ids are given explicitly (MAX + 1 under
    # the write lock), the same on every engine.
    """
    CREATE TABLE runners (
        id INTEGER PRIMARY KEY,
        host TEXT NOT NULL,
        root TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at TEXT NOT NULL,
        renewed_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        taken_at TEXT,
        taken_by INTEGER
    );
    CREATE INDEX idx_runners_place ON runners(host, root);
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder INTEGER NOT NULL,
        expires_at TEXT NOT NULL
    );
    ALTER TABLE pipeline_runs ADD COLUMN owner INTEGER;
    CREATE INDEX idx_pipeline_runs_owner ON pipeline_runs(owner, status);
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


def now_iso() -> str:
    """The current UTC time as an ISO-8601 string; such strings sort in time order."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def parse_iso(value: str) -> datetime:
    """Inverse of now_iso."""
    return datetime.fromisoformat(value)


class Database:
    """A connection to the state database with explicit write transactions."""

    def __init__(self, path: Path, conn: sqlite3.Connection, lock_wait: float = BUSY_TIMEOUT_MS / 1000) -> None:
        self.path = path
        self.conn = conn
        self.lock_wait = lock_wait
        self._depth = 0
        # Run first in every write transaction (runner.fleet): raises when this runner may no
        # longer write, so that nothing of a transaction it opened lands.
        self.fence: Callable[[sqlite3.Connection], None] | None = None

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A transaction holding the write lock from its first statement; nested calls join it."""
        if self._depth:
            self._depth += 1
            try:
                yield self.conn
            finally:
                self._depth -= 1
            return
        try:
            # SQLite's busy handler retries taking the lock until lock_wait has passed.
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise
            raise StateError(
                f"State database {self.path} is locked by another process: it held its write lock for "
                f"more than {self.lock_wait:g} s ({exc}). Nothing was written; try again, and if it stays "
                "locked, look for a process holding it (`fuser` on the file)."
            ) from None
        self._depth = 1
        try:
            if self.fence is not None:
                self.fence(self.conn)
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")
        finally:
            self._depth = 0

    def query(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        """Run a read query and return all rows."""
        return list(self.conn.execute(sql, params))

    def scalar(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        """Run a query returning one value."""
        row = self.conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def _connect(path: Path, lock_wait: float) -> sqlite3.Connection:
    # Autocommit mode: transactions are opened explicitly by Database.write().
    conn = sqlite3.connect(path, isolation_level=None, timeout=lock_wait)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(lock_wait * 1000)}")
    conn.execute("PRAGMA foreign_keys = ON")
    # In WAL mode NORMAL never corrupts and survives a killed process; only a power cut may lose
    # the last commits. It saves an fsync per transaction, and the loop makes several per task.
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def open_db(
    path: Path, *, create: bool = True, readonly: bool = False, lock_wait: float = BUSY_TIMEOUT_MS / 1000
) -> Database:
    """Open the state database, creating and migrating it when ``create`` allows.

    ``readonly`` opens it immutable: nothing is written, not even WAL or lock files (--dry-run).
    ``lock_wait``: seconds a write waits for another process's write lock before a StateError.
    """
    if readonly:
        if not path.exists():
            raise StateError(f"No pipeline state at {path} yet.")
        # Without a WAL file every committed write is in the main file and immutable mode reads it
        # exactly; with one (a runner is active) read-only mode sees it without creating files.
        mode = "mode=ro" if path.with_name(path.name + "-wal").exists() else "immutable=1"
        conn = sqlite3.connect(f"file:{path}?{mode}", uri=True, isolation_level=None)
        conn.row_factory = sqlite3.Row
        return Database(path, conn)
    if not path.exists():
        if not create:
            raise StateError(f"No pipeline state at {path} yet.")
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = _connect(path, lock_wait)
        conn.execute("PRAGMA journal_mode = WAL")
        db = Database(path, conn, lock_wait)
        _migrate(db)
    except sqlite3.DatabaseError as exc:
        raise StateError(f"State database {path} cannot be used: {exc}") from None
    return db


def _migrate(db: Database) -> None:
    version = int(db.scalar("PRAGMA user_version"))
    if version > SCHEMA_VERSION:
        raise StateError(
            f"State database {db.path} has schema version {version}, newer than this "
            f"pipeline-runner understands ({SCHEMA_VERSION}). Upgrade pipeline-runner."
        )
    if version == SCHEMA_VERSION:
        return
    # Off for the migration (it can only change outside a transaction): a table rebuilt the way
    # SQLite documents (create, copy, drop, rename) must not cascade the drop to its children.
    db.conn.execute("PRAGMA foreign_keys = OFF")
    try:
        with db.write() as conn:
            # Re-read under the write lock: another process may have migrated meanwhile.
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            for index in range(version, SCHEMA_VERSION):
                for statement in _statements(MIGRATIONS[index]):
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    finally:
        db.conn.execute("PRAGMA foreign_keys = ON")


def _statements(script: str) -> list[str]:
    """The statements of a migration, one by one (a trigger's body holds ";" of its own)."""
    statements: list[str] = []
    pending = ""
    for part in script.split(";"):
        pending += part + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                statements.append(pending)
            pending = ""
    return statements


class Phase(enum.StrEnum):
    """Pipeline phases, as stored in pipeline_runs.phase."""

    DEV = "dev"
    VERIFY = "verify"
    INTEGRATE = "integrate"


class RunStatus(enum.StrEnum):
    """Status of one pipeline_runs row."""

    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"
    # Ended by the runner stopping or refusing, not by the task: never counts against its retries.
    CANCELLED = "cancelled"
    # Not a full check: a skip code ended the recipes, or no recipe ran. Never a success, and not
    # the task's failure either.
    SKIPPED = "skipped"


@dataclass(frozen=True)
class RunRecord:
    """One attempt of one phase of one task."""

    id: int
    task_id: str
    phase: Phase
    patchset: int
    agent_run_id: str | None
    status: RunStatus
    cost_cents: float
    started_at: str
    finished_at: str | None
    error_summary: str | None
    log_path: str | None
    pid: int | None
    workspace: str | None
    before_sha: str | None
    after_sha: str | None
    tokens: int | None
    tree: str | None = None  # the tree a verification or integration checked
    owner: int | None = None  # the runner that started it (runner.fleet)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> RunRecord:
        """Build from a pipeline_runs row of an attempt (not of one phase of the check graph)."""
        keys = row.keys()  # a state opened read-only is not migrated: later columns may be missing
        data = {name: row[name] for name in _RUN_COLUMNS if name in keys}
        data["phase"] = Phase(data["phase"])
        data["status"] = RunStatus(data["status"])
        return cls(**data)


@dataclass(frozen=True)
class CheckRecord:
    """One phase of the check graph within a verification or integration (its ``parent_id``)."""

    id: int
    parent_id: int
    task_id: str
    phase: str  # the phase's own name
    status: RunStatus
    started_at: str
    finished_at: str | None
    error_summary: str | None
    log_path: str | None
    exit_code: int | None
    duration: float | None
    tree: str | None
    cached_from: int | None  # the row whose pass was reused; 0: a pass by `pipeline-runner check`
    rerun_of: int | None = None  # on a rerun after a flaky failure: the first run's row of the phase

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> CheckRecord:
        """Build from a pipeline_runs row with a parent."""
        data = {name: row[name] for name in _CHECK_COLUMNS}
        data["status"] = RunStatus(data["status"])
        return cls(**data)


_RUN_COLUMNS = [f for f in RunRecord.__dataclass_fields__]
_CHECK_COLUMNS = [f for f in CheckRecord.__dataclass_fields__]


class Runs:
    """The pipeline_runs table."""

    def __init__(self, db: Database, owner: int | None = None) -> None:
        self.db = db
        # The runner whose rows these are (runner.fleet): the rows it starts carry it, and the
        # running rows it reads and cancels are its own only. None: every row (read-only views).
        self.owner = owner

    def start(self, task_id: str, phase: Phase | str, patchset: int, **fields: Any) -> int:
        """Insert a running attempt and return its row id."""
        if self.owner is not None:
            fields = {"owner": self.owner, **fields}
        columns = ["task_id", "phase", "patchset", "status", "started_at", *fields]
        values = [task_id, str(phase), patchset, str(RunStatus.RUNNING), now_iso(), *fields.values()]
        with self.db.write() as conn:
            cur = conn.execute(
                f"INSERT INTO pipeline_runs ({', '.join(columns)}) "
                f"VALUES ({', '.join('?' for _ in columns)})",
                values,
            )
            return int(cur.lastrowid or 0)

    def update(self, run_id: int, **fields: Any) -> None:
        """Set columns of a row (for example the agent run id and pid once known)."""
        if not fields:
            return
        if isinstance(fields.get("error_summary"), str):
            fields["error_summary"] = redact(fields["error_summary"])
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self.db.write() as conn:
            conn.execute(f"UPDATE pipeline_runs SET {assignments} WHERE id = ?", [*fields.values(), run_id])

    def finish(
        self,
        run_id: int,
        status: RunStatus,
        *,
        cost_cents: float | None = None,
        error: str | None = None,
        **fields: Any,
    ) -> None:
        """Mark an attempt finished."""
        updates: dict[str, Any] = {"status": str(status), "finished_at": now_iso(), **fields}
        if cost_cents is not None:
            updates["cost_cents"] = cost_cents
        if error is not None:
            updates["error_summary"] = error
        self.update(run_id, **updates)

    def get(self, run_id: int) -> RunRecord | None:
        """One row by id."""
        rows = self.db.query("SELECT * FROM pipeline_runs WHERE id = ?", (run_id,))
        return RunRecord.from_row(rows[0]) if rows else None

    def running(self, phase: Phase | None = None) -> list[RunRecord]:
        """Attempts still marked running (this runner's, with an owner), oldest first."""
        sql = "SELECT * FROM pipeline_runs WHERE status = 'running' AND parent_id IS NULL"
        params: list[Any] = []
        if phase is not None:
            sql += " AND phase = ?"
            params.append(str(phase))
        if self.owner is not None:
            sql += " AND owner = ?"
            params.append(self.owner)
        return [RunRecord.from_row(r) for r in self.db.query(sql + " ORDER BY id", tuple(params))]

    def for_task(self, task_id: str) -> list[RunRecord]:
        """Every attempt of a task, oldest first."""
        rows = self.db.query("SELECT * FROM pipeline_runs WHERE task_id = ? AND parent_id IS NULL ORDER BY id", (task_id,)
        )
        return [RunRecord.from_row(r) for r in rows]

    def failures_since(self, task_id: str, since: str | None) -> tuple[int, str | None]:
        """Failed attempts of any phase since ``since`` (all when None), and the last one's time."""
        row = self.db.query(
            "SELECT COUNT(*), MAX(finished_at) FROM pipeline_runs "
            "WHERE task_id = ? AND status = 'failure' AND parent_id IS NULL AND (? IS NULL OR finished_at > ?)",
            (task_id, since, since),
        )[0]
        return int(row[0]), row[1]

    def total_cost(self, task_id: str | None = None) -> float:
        """Cumulative cost in cents of one task, or of all tasks."""
        if task_id is None:
            # Kept by triggers (migration 6): not a sum over every attempt ever made.
            return int(self.db.scalar("SELECT cost_microcents FROM run_totals WHERE id = 1") or 0) / 1_000_000
        return float(
            self.db.scalar(
                "SELECT COALESCE(SUM(cost_cents), 0) FROM pipeline_runs WHERE task_id = ?", (task_id,)
            )
        )

    def cost_since(self, since: str) -> float:
        """Cents spent by the attempts of every task that finished at or after ``since`` (ISO, UTC)."""
        return float(
            self.db.scalar(
                # "+": by the finished_at index; the parent_id one matches every attempt ever made.
                "SELECT COALESCE(SUM(cost_cents), 0) FROM pipeline_runs WHERE finished_at >= ? "
                "AND +parent_id IS NULL",
                (since,),
            )
        )

    def finished_since(self, since: str) -> list[RunRecord]:
        """The attempts (of every task) that finished at or after ``since`` (ISO, UTC), oldest first."""
        rows = self.db.query(
            # "+": by the finished_at index, not the parent_id one or the table in id order.
            "SELECT * FROM pipeline_runs WHERE finished_at >= ? AND +parent_id IS NULL ORDER BY +id", (since,)
        )
        return [RunRecord.from_row(r) for r in rows]

    def latest(self, task_id: str) -> RunRecord | None:
        """The most recent attempt of a task that was not cancelled."""
        rows = self.db.query(
            "SELECT * FROM pipeline_runs WHERE task_id = ? AND status != 'cancelled' AND parent_id IS NULL "
            "ORDER BY id DESC LIMIT 1",
            (task_id,),
        )
        return RunRecord.from_row(rows[0]) if rows else None

    def owner_of(self, task_id: str) -> int | None:
        """The runner that made the task's most recent attempt, whatever its status."""
        owner = self.db.scalar(
            "SELECT owner FROM pipeline_runs WHERE task_id = ? AND parent_id IS NULL ORDER BY id DESC LIMIT 1",
            (task_id,),
        )
        return None if owner is None else int(owner)

    def last_attempt(self, task_id: str, phase: Phase) -> RunRecord | None:
        """The most recent attempt of one phase of a task, cancelled ones included."""
        rows = self.db.query(
            "SELECT * FROM pipeline_runs WHERE task_id = ? AND phase = ? AND parent_id IS NULL "
            "ORDER BY id DESC LIMIT 1",
            (task_id, str(phase)),
        )
        return RunRecord.from_row(rows[0]) if rows else None

    def landed(self, task_id: str) -> set[str]:
        """The commits a runner put on base for a task, or is putting there: a runner sharing the
        state records its candidate before it moves base, and its success only after (a failed
        or cancelled candidate is not one)."""
        rows = self.db.query(
            "SELECT after_sha FROM pipeline_runs WHERE task_id = ? AND phase = 'integrate' "
            "AND status IN ('success', 'running') AND after_sha IS NOT NULL AND parent_id IS NULL",
            (task_id,),
        )
        return {str(r[0]) for r in rows}

    def landing_candidates(self) -> list[RunRecord]:
        """Integration attempts that recorded a candidate for a task not yet done: each may have
        landed before the runner was stopped."""
        rows = self.db.query(
            # CROSS JOIN: from the tasks not yet done to their runs, never through the
            # integrations of every task that ever landed.
            "SELECT r.* FROM tasks AS t CROSS JOIN pipeline_runs AS r ON r.task_id = t.id "
            "WHERE r.phase = 'integrate' AND r.after_sha IS NOT NULL AND r.parent_id IS NULL "
            "AND t.status IN ('open', 'in_progress', 'verified') ORDER BY r.id"
        )
        return [RunRecord.from_row(r) for r in rows]

    def start_check(self, parent: int, task_id: str, phase: str, patchset: int, **fields: Any) -> int:
        """Insert a running phase of the check graph under the attempt ``parent``; its row id."""
        return self.start(task_id, phase, patchset, parent_id=parent, **fields)

    def checks(self, parents: list[int]) -> dict[int, list[CheckRecord]]:
        """The phase rows under each of the attempts ``parents``, oldest first."""
        found: dict[int, list[CheckRecord]] = {p: [] for p in parents}
        for record in self._check_rows("parent_id", parents):
            found[record.parent_id].append(record)
        return found

    def checks_by_id(self, ids: list[int]) -> dict[int, CheckRecord]:
        """The phase rows with these ids (a reused pass's ``cached_from``, say), by id."""
        return {record.id: record for record in self._check_rows("id", ids)}

    def _check_rows(self, column: str, values: list[int]) -> list[CheckRecord]:
        """Phase rows whose ``column`` (a trusted name) is one of ``values``, oldest first."""
        # The values as one JSON parameter: one parameter each would overflow SQLite's cap.
        rows = self.db.query(
            f"SELECT * FROM pipeline_runs WHERE {column} IN (SELECT value FROM json_each(?)) "
            "AND parent_id IS NOT NULL ORDER BY id",
            (json.dumps(values),),
        )
        return [CheckRecord.from_row(row) for row in rows]

    def cancel_running_checks(self, reason: str) -> None:
        """Mark the phase rows a stopped runner (this one, with an owner) left running as cancelled."""
        sql = (
            "UPDATE pipeline_runs SET status = 'cancelled', finished_at = ?, error_summary = ? "
            "WHERE status = 'running' AND parent_id IS NOT NULL"
        )
        params: list[Any] = [now_iso(), reason]
        if self.owner is not None:
            sql += " AND owner = ?"
            params.append(self.owner)
        with self.db.write() as conn:
            conn.execute(sql, params)

    def last_failure(self, task_id: str) -> RunRecord | None:
        """The most recent failed attempt of a task, of any phase."""
        rows = self.db.query(
            "SELECT * FROM pipeline_runs WHERE task_id = ? AND status = 'failure' AND parent_id IS NULL "
            "ORDER BY id DESC LIMIT 1",
            (task_id,),
        )
        return RunRecord.from_row(rows[0]) if rows else None
