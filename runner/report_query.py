"""The rows the `report` command is built from, read from the state database in a fixed number of
queries (never one per task), aggregated in SQL so that a store of 100,000 tasks stays fast.

Times are the ISO-8601 UTC strings the runner stores (``state.now_iso``); they sort in time order,
so a window is a string comparison and a day is the first ten characters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runner.sqldialect import Dialect
from runner.state import Database

# The timeline draws at most this many attempts (the most recent); the rest of the report counts all.
TIMELINE_LIMIT = 2000

# The stages of a task's life, as stored in pipeline_runs.phase of an attempt (parent_id NULL).
STAGES = ("dev", "verify", "integrate")


@dataclass(frozen=True)
class TaskInput:
    """One work task with its attempts aggregated over its whole life."""

    id: str
    title: str
    status: str
    created_at: str
    attempts: int  # dev runs not cancelled: each is one try at the task
    failures: int  # failed attempts of any stage
    cost_cents: float
    landed_at: str | None  # the last successful integration's finish


@dataclass(frozen=True)
class DayInput:
    """Attempts started on one UTC day."""

    day: str  # YYYY-MM-DD
    runs: int
    cost_cents: float


@dataclass(frozen=True)
class DurationBucket:
    """How many runs of one stage (``kind`` 'stage': dev, verify, integrate) or check phase
    (``kind`` 'check') ended with ``status`` after ``seconds`` (to three significant digits)."""

    kind: str
    name: str
    status: str  # success or failure
    reused: bool  # a check phase whose earlier pass on the same tree was reused instead of run
    seconds: float | None
    count: int


@dataclass(frozen=True)
class FlakyInput:
    """A check phase that failed and later passed on the same tree."""

    phase: str
    tree: str
    failures: int
    passes: int
    task_ids: tuple[str, ...]


@dataclass(frozen=True)
class RunInput:
    """One attempt, for the timeline."""

    id: int
    task_id: str
    stage: str
    status: str
    started_at: str
    finished_at: str | None


@dataclass(frozen=True)
class ReportInputs:
    """Everything the report is computed from."""

    tasks: list[TaskInput]
    days: list[DayInput]
    durations: list[DurationBucket]
    flaky: list[FlakyInput]
    runs: list[RunInput]  # the most recent TIMELINE_LIMIT attempts in the window, oldest first
    runs_in_window: int  # all attempts in the window, drawn or not


def _tasks(d: Dialect) -> str:
    return f"""
WITH a AS (
    SELECT task_id,
        {d.count_if("phase = 'dev' AND status != 'cancelled'")} AS attempts,
        {d.count_if("status = 'failure'")} AS failures,
        {d.total('cost_cents')} AS cost_cents,
        MAX(started_at) AS last_start,
        MAX(CASE WHEN phase = 'integrate' AND status = 'success' THEN finished_at END) AS landed_at
    FROM pipeline_runs WHERE {d.no_index}parent_id IS NULL GROUP BY task_id  -- a scan: most rows qualify
)
SELECT t.id, t.title, t.status, t.created_at, COALESCE(a.attempts, 0) AS attempts,
    COALESCE(a.failures, 0) AS failures, COALESCE(a.cost_cents, 0) AS cost_cents, a.landed_at
FROM tasks t LEFT JOIN a ON a.task_id = t.id
WHERE t.type = 'work' AND (:since IS NULL OR t.created_at >= :since OR a.last_start >= :since)
ORDER BY t.created_at, t.id
"""


def _days(d: Dialect) -> str:
    return f"""
SELECT substr(started_at, 1, 10) AS day, COUNT(*) AS runs, {d.total('cost_cents')} AS cost_cents
FROM pipeline_runs WHERE parent_id IS NULL AND (:since IS NULL OR started_at >= :since)
GROUP BY day ORDER BY day
"""


# Durations as a histogram: runs counted by stage or phase, outcome and duration rounded to three
# significant digits (SQLite's log() is optional, so by decade), which is a few thousand rows at
# most however many runs there are; percentiles are taken from it (report.weighted_percentile).
# A stage's duration is its wall time; a check phase's is the duration it recorded. `+status`
# makes SQLite scan the table in order rather than visit most of its rows through an index;
# MATERIALIZED computes each duration once rather than once per mention in the rounding.
def _durations(d: Dialect) -> str:
    return f"""
WITH r AS MATERIALIZED (
    SELECT CASE WHEN parent_id IS NULL THEN 'stage' ELSE 'check' END AS kind, phase AS name, status,
        cached_from IS NOT NULL AS reused,
        CASE WHEN parent_id IS NULL
             THEN {d.number(d.seconds_between('started_at', 'finished_at'))}
             ELSE {d.number('duration')} END AS s
    FROM pipeline_runs
    WHERE {d.no_index}status IN ('success', 'failure') AND (:since IS NULL OR started_at >= :since)
)
SELECT kind, name, status, reused, COUNT(*) AS n,
    CASE WHEN abs(s) < 1 THEN round(s, 3) WHEN abs(s) < 10 THEN round(s, 2)
         WHEN abs(s) < 100 THEN round(s, 1) WHEN abs(s) < 1000 THEN round(s)
         WHEN abs(s) < 10000 THEN round(s / 10) * 10 WHEN abs(s) < 100000 THEN round(s / 100) * 100
         ELSE round(s / 1000) * 1000 END AS seconds
FROM r GROUP BY kind, name, status, reused, seconds
"""


# A failure followed (by row id, which grows with time) by a pass of the same phase on the same tree:
# the tree did not change, so the check's verdict did.
def _flaky(d: Dialect) -> str:
    return f"""
SELECT phase, tree, {d.count_if("status = 'failure'")} AS failures, {d.count_if("status = 'success'")} AS passes,
    {d.concat_distinct('task_id')} AS task_ids  -- a task id holds no comma (runner/ids.py)
FROM pipeline_runs
WHERE parent_id IS NOT NULL AND tree IS NOT NULL AND status IN ('success', 'failure')
    AND (:since IS NULL OR started_at >= :since)
GROUP BY phase, tree
HAVING MIN(CASE WHEN status = 'failure' THEN id END) < MAX(CASE WHEN status = 'success' THEN id END)
ORDER BY phase, MIN(id)
"""


_RUNS = """
SELECT id, task_id, phase AS stage, status, started_at, finished_at FROM pipeline_runs
WHERE parent_id IS NULL AND (:since IS NULL OR started_at >= :since)
ORDER BY id DESC LIMIT :limit
"""


_RUN_COUNT = """
SELECT COUNT(*) FROM pipeline_runs WHERE parent_id IS NULL AND (:since IS NULL OR started_at >= :since)
"""


def read_inputs(db: Database, since: str | None, timeline_limit: int = TIMELINE_LIMIT) -> ReportInputs:
    """The report's rows: tasks created or worked on since ``since`` (an ISO UTC string; all when
    None), and the attempts and check phases started since then."""
    # One read transaction: every figure comes from the same snapshot while a runner writes.
    with db.snapshot():
        return _read(db, {"since": since}, timeline_limit)


def _read(db: Database, window: dict[str, Any], timeline_limit: int) -> ReportInputs:
    tasks = [
        TaskInput(
            str(r["id"]), str(r["title"]), str(r["status"]), str(r["created_at"]), int(r["attempts"]),
            int(r["failures"]), float(r["cost_cents"]), r["landed_at"],
        )
        for r in db.query(_tasks(db.dialect), window)
    ]
    days = [DayInput(str(r["day"]), int(r["runs"]), float(r["cost_cents"])) for r in db.query(_days(db.dialect), window)]
    durations = [
        DurationBucket(
            str(r["kind"]), str(r["name"]), str(r["status"]), bool(r["reused"]), _float(r["seconds"]), int(r["n"])
        )
        for r in db.query(_durations(db.dialect), window)
    ]
    flaky = [
        FlakyInput(
            str(r["phase"]), str(r["tree"]), int(r["failures"]), int(r["passes"]),
            tuple(sorted(str(r["task_ids"]).split(","))),
        )
        for r in db.query(_flaky(db.dialect), window)
    ]
    runs = [
        RunInput(int(r["id"]), str(r["task_id"]), str(r["stage"]), str(r["status"]), str(r["started_at"]),
                 r["finished_at"])
        for r in db.query(_RUNS, {**window, "limit": timeline_limit})
    ]
    runs.reverse()
    count = int(db.query(_RUN_COUNT, window)[0][0])
    return ReportInputs(tasks, days, durations, flaky, runs, count)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
