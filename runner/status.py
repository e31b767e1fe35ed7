"""The `status` report: counts per status, active runs, tasks needing help, cost so far."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runner.faults import read_faults
from runner.phaseview import PhaseView, phase_lines, phase_views
from runner.state import SCHEMA_VERSION, Phase, RunRecord, Runs, RunStatus, open_db, parse_iso
from runner.tasklist import first_line
from runner.tasks import Author, BuiltinTaskStore, TaskStatus, TaskType

# Version of the `status --json` document; bump when a key changes meaning or disappears.
# 2: each active run lists its phases so far.
STATUS_SCHEMA_VERSION = 2


def held_integration(runs: Runs, task_id: str) -> RunRecord | None:
    """The refused integration holding a verified task back, if its last integration was refused.

    A refusal (base's checkout dirty, untracked files in the way) is recorded as a cancelled
    integrate run with the reason; it needs a person, not another attempt of the task.
    """
    last = runs.last_attempt(task_id, Phase.INTEGRATE)
    if last is not None and last.status is RunStatus.CANCELLED and last.error_summary:
        return last
    return None


@dataclass(frozen=True)
class Waiting:
    """A task that the loop cannot finish without a person."""

    task_id: str
    title: str
    why: str  # "needs help", "integration held" or "blocked"
    reason: str


def waiting_for_a_person(
    root: Path, *, parent: str | None = None, task_id: str | None = None
) -> list[Waiting]:
    """Work tasks (under ``parent``, or just ``task_id``, when given) that need help or whose
    integration is held back, with the last reason given for each."""
    db_path = root / "state.db"
    if not db_path.exists():
        return []
    db = open_db(db_path, create=False)
    try:
        store = BuiltinTaskStore(db)
        runs = Runs(db)
        waiting: list[Waiting] = []
        for task in store.list_tasks(TaskStatus.NEEDS_HELP, parent):
            if task.type is TaskType.WORK and task_id in (None, task.id):
                reasons = [c.body for c in task.comments if c.author is Author.SYSTEM]
                waiting.append(Waiting(task.id, task.title, "needs help", reasons[-1] if reasons else ""))
        for task in store.list_tasks(TaskStatus.VERIFIED, parent, with_comments=False):
            held = held_integration(runs, task.id)
            if held is not None and task.type is TaskType.WORK and task_id in (None, task.id):
                waiting.append(Waiting(task.id, task.title, "integration held", held.error_summary or ""))
        # A cancelled task waits for nobody (a person decided); one that depends on it cannot
        # start until a person retries the dependency or drops it.
        blocked = store.blocked()
        for task in store.list_tasks(TaskStatus.OPEN, parent, with_comments=False):
            if task.id in blocked and task.type is TaskType.WORK and task_id in (None, task.id):
                waiting.append(Waiting(task.id, task.title, "blocked", blocked_reason(blocked[task.id])))
        return waiting
    finally:
        db.close()


def blocked_reason(dependencies: list[str]) -> str:
    """Why an open task cannot start: its dependencies that were cancelled (or deleted)."""
    return (
        f"it depends on {', '.join(dependencies)}, cancelled: `task retry` them, or drop them with "
        "`task edit ID --depends-on ...`"
    )


def build_status(root: Path, base: str) -> dict[str, Any]:
    """The status document. A root without state yet gives zero counts and ``initialized: false``."""
    db_path = root / "state.db"
    doc: dict[str, Any] = {
        "schema_version": STATUS_SCHEMA_VERSION,
        "initialized": db_path.exists(),
        "root": str(root),
        "base": base,
        **{s.value: 0 for s in TaskStatus},
        "active_dev_runs": 0,
        "epics": 0,
        "cost_cents": 0.0,
        "active_runs": [],
        "needs_help_tasks": [],
        "held_integrations": [],
        "faults": [],
        "skipped_verifications": [],
        "blocked_tasks": [],
        "state_schema_version": None,
    }
    # Work paused by a fault that is no task's (a stale lock, a lagging checkout of base).
    doc["faults"] = [
        {"area": f.area, "message": f.message, "since": _iso(f.since), "retry_at": _iso(f.retry_at),
         "count": f.count}
        for f in read_faults(root / "faults.json")
    ]
    if not db_path.exists():
        return doc
    db = open_db(db_path, create=False)
    try:
        store = BuiltinTaskStore(db)
        runs = Runs(db)
        doc.update(store.counts())
        doc["epics"] = sum(store.counts(type_=None).values()) - sum(store.counts().values())
        active = runs.running()
        phases = phase_views(runs, active)
        doc["active_dev_runs"] = sum(1 for r in active if r.phase is Phase.DEV)
        doc["active_runs"] = [
            {
                "task_id": r.task_id,
                "phase": str(r.phase),
                "patchset": r.patchset,
                "agent_run_id": r.agent_run_id,
                "pid": r.pid,
                "started_at": r.started_at,
                "log_path": r.log_path,
                "phases": [p.to_json() for p in phases[r.id]],
            }
            for r in active
        ]
        doc["cost_cents"] = runs.total_cost()
        for task in store.list_tasks(status=TaskStatus.NEEDS_HELP):
            reasons = [c.body for c in task.comments if c.author is Author.SYSTEM]
            doc["needs_help_tasks"].append(
                {
                    "id": task.id,
                    "title": task.title,
                    "reason": reasons[-1] if reasons else None,
                    "cost_cents": runs.total_cost(task.id),
                }
            )
        for task in store.list_tasks(TaskStatus.VERIFIED, with_comments=False):
            # A verified task whose last integration was refused (a dirty checkout of base, say)
            # waits for a person; say why here rather than only in the log.
            held = held_integration(runs, task.id)
            if held is not None:
                doc["held_integrations"].append(
                    {"id": task.id, "title": task.title, "reason": held.error_summary, "at": held.finished_at}
                )
        for status in (TaskStatus.VERIFIED, TaskStatus.NEEDS_HELP):
            for task in store.list_tasks(status, with_comments=False):
                last = runs.last_attempt(task.id, Phase.VERIFY)
                if last is not None and last.status is RunStatus.SKIPPED:
                    doc["skipped_verifications"].append(
                        {"id": task.id, "title": task.title, "status": task.status.value,
                         "reason": last.error_summary, "at": last.finished_at}
                    )  # fmt: skip
        blocked = store.blocked()
        for task in store.list_tasks(TaskStatus.OPEN, with_comments=False):
            if task.id in blocked:
                doc["blocked_tasks"].append(
                    {"id": task.id, "title": task.title, "blocked_by": blocked[task.id],
                     "reason": blocked_reason(blocked[task.id])}
                )  # fmt: skip
        doc["state_schema_version"] = SCHEMA_VERSION
    finally:
        db.close()
    return doc


def _iso(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="seconds")


def render_status(doc: dict[str, Any]) -> str:
    """The human-readable form of the status document."""
    if not doc["initialized"]:
        return (
            f"No pipeline state at {doc['root']} yet: nothing has been queued or run.\n"
            "Add a task with `pipeline-runner task add TITLE` or import some with "
            "`pipeline-runner task import FILE`, then `pipeline-runner run`."
        )
    lines = [f"Pipeline status (root={doc['root']}, base={doc['base']})", "", "Tasks:"]
    labels = {"open": "Open", "in_progress": "In progress", "verified": "Verified",
              "done": "Done", "needs_help": "Needs help", "cancelled": "Cancelled"}  # fmt: skip
    lines += [f"  {label + ':':<13}{doc[key]}" for key, label in labels.items()]
    lines += ["", f"Active dev runs: {doc['active_dev_runs']}"]
    if doc["active_runs"]:
        lines.append("Active runs:")
    now = time.time()
    for run in doc["active_runs"]:
        elapsed = max(0.0, now - parse_iso(run["started_at"]).timestamp())
        lines.append(
            f"  {run['task_id']}  {run['phase']}  patchset {run['patchset']}  "
            f"for {elapsed:.0f}s (since {run['started_at'][:19]})"
        )
        lines += phase_lines([PhaseView.from_json(p) for p in run["phases"]], now=now)
    lines.append(f"Cost so far: {doc['cost_cents']:.2f} cents")
    if doc["needs_help_tasks"]:
        lines += ["", "Needs help:"]
        for task in doc["needs_help_tasks"]:
            lines.append(f"  {task['id']}  {task['title']}")
            if task["reason"]:
                lines.append(f"      last reason: {task['reason'].splitlines()[0][:300]}")
        lines.append("Resume one with `pipeline-runner task set-status ID open`.")
    if doc["blocked_tasks"]:
        lines += ["", "Blocked (a dependency was cancelled; they wait for a person):"]
        for task in doc["blocked_tasks"]:
            lines.append(f"  {task['id']}  {first_line(task['title'])}")
            lines.append(f"      {task['reason']}")
    if doc["faults"]:
        lines += ["", "Paused by faults that are no task's (nothing is charged; retried by itself):"]
        for fault in doc["faults"]:
            lines.append(f"  {fault['area']}: since {fault['since']}, next try {fault['retry_at']}")
            lines.append(f"      {fault['message']}")
    if doc["held_integrations"]:
        lines += ["", "Verified, integration held back:"]
        for task in doc["held_integrations"]:
            lines.append(f"  {task['id']}  {task['title']}")
            lines.append(f"      {task['reason'].splitlines()[0][:300]}")
    if doc["skipped_verifications"]:
        lines += ["", "Verification skipped (no full check ran):"]
        for task in doc["skipped_verifications"]:
            lines.append(f"  {task['id']}  {task['status']}  {task['title']}")
            if task["reason"]:
                lines.append(f"      {task['reason'].splitlines()[0][:300]}")
    return "\n".join(lines)
