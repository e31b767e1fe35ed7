"""The `status` report: counts per status, active runs, tasks needing help, cost so far."""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.checkoutcomes import CheckOutcomes
from runner.faults import read_faults
from runner.fleet import fleet_view
from runner.holdups import Queued, why
from runner.lifecycle import Gate, GateResult, Limits, gate
from runner.phaseview import PhaseShown, PhaseView, phase_views
from runner.state import (
    SCHEMA_VERSION,
    Phase,
    RunRecord,
    Runs,
    RunStatus,
    last_of,
    open_db,
    parse_iso,
    state_exists,
)
from runner.tasks import Author, BuiltinTaskStore, Task, TaskStatus, TaskType

if TYPE_CHECKING:
    from runner.config import PipelineConfig

# Version of the `status --json` document; bump when a key changes meaning or disappears. Keys
# added since keep the version (a reader ignores keys it does not know).
# 2: each active run lists its phases so far.
STATUS_SCHEMA_VERSION = 2
# How much of a log's end is read for its last line: a line longer than this is shown cut.
TAIL_BYTES = 4096
LAST_LINE_CHARS = 200


# How the row of a candidate dropped from the integration stack to be built again begins.
REBUILT = "rebuilt: "
# Rows of integrations the loop itself tries again (dropped candidates, and those a stop of the
# runner interrupted, see runner.recovery): not a hold.
NOT_HELD = (REBUILT, "runner stopped")


def waiting_to_land(runs: Runs, verified: list[Task], limit: int) -> int:
    """How many of the ``verified`` tasks wait for the integrator (those held for a person do
    not); the loop and `status` count alike. Under ``limit`` even with every one counted, no run
    is read; otherwise the last integrations of them all, in one query."""
    if len(verified) < limit:
        return len(verified)
    attempts = runs.attempts_by_task(TaskStatus.VERIFIED.value)
    return sum(1 for t in verified if held(last_of(attempts.get(t.id, []), Phase.INTEGRATE)) is None)


def held_integration(runs: Runs, task_id: str) -> RunRecord | None:
    """The refused integration holding a verified task back, if its last integration was refused
    (see held)."""
    return held(runs.last_attempt(task_id, Phase.INTEGRATE))


def held(last: RunRecord | None) -> RunRecord | None:
    """``last``, a task's last integration, when it holds the task back (pure).

    A refusal (base's checkout dirty, untracked files in the way) is recorded as a cancelled
    integrate run with the reason; it needs a person, not another attempt of the task.
    """
    if last is None or last.status is not RunStatus.CANCELLED or not last.error_summary:
        return None
    # A candidate dropped to be built again, or one a stop interrupted, is retried by the loop.
    if last.error_summary.startswith(NOT_HELD):
        return None
    return last


@dataclass(frozen=True)
class Waiting:
    """A task that the loop cannot finish without a person."""

    task_id: str
    title: str
    why: str  # "needs help", "integration held" or "blocked"
    reason: str


def waiting_for_a_person(
    root: Path, *, parent: str | None = None, task_id: str | None = None, state: Path | str | None = None
) -> list[Waiting]:
    """Work tasks (under ``parent``, or just ``task_id``, when given) that need help or whose
    integration is held back, with the last reason given for each. ``state``: where the state
    is (config.state_target), by default ROOT/state.db."""
    db_path = state or root / "state.db"
    if not state_exists(db_path):
        return []
    db = open_db(db_path, create=False)
    try:
        store = BuiltinTaskStore(db)
        runs = Runs(db)
        waiting: list[Waiting] = []
        for task in store.list_tasks(TaskStatus.NEEDS_HELP, parent, with_comments=True):
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


def build_status(
    root: Path, base: str, limits: Limits | None = None, now: float | None = None, *, max_waiting: int | None = None,
    state: Path | str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The status document. A root without state yet gives zero counts and ``initialized: false``.

    ``limits`` (the config's) tell a backoff or a reached limit apart; without them every open
    task counts as free to start once its dependencies are done. ``state``: where the state is
    (config.state_target), by default ROOT/state.db."""
    now = time.time() if now is None else now
    db_path = state or root / "state.db"
    initialized = state_exists(db_path)
    doc: dict[str, Any] = {
        "schema_version": STATUS_SCHEMA_VERSION,
        "initialized": initialized,
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
        "flaky_checks": [],
        "queue": [],
        "log_file": str(root / "logs" / "pipeline.jsonl"),
        "blocked_tasks": [],
        "state_schema_version": None,
        "runners": [],
    }
    # Work paused by a fault that is no task's (a stale lock, a lagging checkout of base).
    doc["faults"] = [
        {"area": f.area, "message": f.message, "since": _iso(f.since), "retry_at": _iso(f.retry_at),
         "count": f.count}
        for f in read_faults(root / "faults.json")
    ]
    if not initialized:
        return doc
    db = open_db(db_path, create=False)
    try:
        store = BuiltinTaskStore(db)
        runs = Runs(db)
        by_type = store.counts_by_type()  # one pass, however many tasks
        doc.update(by_type[TaskType.WORK])
        doc["epics"] = sum(by_type[TaskType.EPIC].values())
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
                "elapsed": round(max(0.0, now - parse_iso(r.started_at).timestamp()), 1),
                "cost_cents": r.cost_cents,
                "task_cost_cents": runs.total_cost(r.task_id),
                "logs": [str(path) for path in attempt_logs(r, phases[r.id])],
                "last_line": last_line(attempt_logs(r, phases[r.id], running_only=True)),
                "runner": r.owner,
            }
            for r in active
        ]
        doc["cost_cents"] = runs.total_cost()
        for task in store.list_tasks(TaskStatus.NEEDS_HELP, with_comments=True):
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
        doc["flaky_checks"] = [asdict(f) for f in CheckOutcomes(db).flaky()]
        doc["queue"] = queue(
            store, runs, {r.task_id for r in active}, doc["faults"], limits, now, max_waiting=max_waiting
        )
        blocked = store.blocked()
        for task in store.list_tasks(TaskStatus.OPEN, with_comments=False):
            if task.id in blocked:
                doc["blocked_tasks"].append(
                    {"id": task.id, "title": task.title, "blocked_by": blocked[task.id],
                     "reason": blocked_reason(blocked[task.id])}
                )  # fmt: skip
        doc["runners"] = fleet_view(db)
        doc["state_schema_version"] = SCHEMA_VERSION
    finally:
        db.close()
    return doc


def phase_log(attempt_log: Path, name: str) -> Path:
    """Where a phase of the attempt logged at ``attempt_log`` writes its output: the directory
    named after the attempt's log (runner.verifier, runner.integrator), then the phase's name."""
    return attempt_log.with_suffix("") / f"{name}.log"


def attempt_logs(run: RunRecord, phases: list[PhaseView], *, running_only: bool = False) -> list[Path]:
    """The logs of an attempt: its own (the agent's, for dev), then each phase's in the order they
    started; a running phase's too, before its row names it. ``running_only``: the attempt's own
    log and the running phases' (where its latest output is)."""
    if run.log_path is None:
        return []
    own = Path(run.log_path)
    paths = [own]
    for phase in phases:
        if phase.state is PhaseShown.RUNNING:
            paths.append(phase_log(own, phase.name))
        elif phase.log_path is not None and not running_only:
            paths.append(Path(phase.log_path))
    return paths


def last_line(paths: list[Path]) -> str:
    """The last non-empty line written to the last of ``paths`` that has one, without control
    characters (an agent's colours), cut to LAST_LINE_CHARS; "" when none has output yet."""
    for path in reversed(paths):
        try:
            with open(path, "rb") as f:
                f.seek(max(0, f.seek(0, 2) - TAIL_BYTES))
                tail = f.read().decode("utf-8", errors="replace")
        except OSError:
            continue
        for line in reversed(tail.splitlines()):
            clean = "".join(c for c in _strip_escapes(line) if c.isprintable()).strip()
            if clean:
                return clean[:LAST_LINE_CHARS]
    return ""


# A terminal escape sequence: CSI (colours, cursor moves), OSC (titles, links), or a short one.
ESCAPES = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)?|[@-Z\\-_])")


def _strip_escapes(text: str) -> str:
    """``text`` without terminal escape sequences."""
    return ESCAPES.sub("", text)


# The statuses of tasks that can wait in the queue, in the order the loop takes them.
QUEUED_STATUSES = (TaskStatus.VERIFIED, TaskStatus.IN_PROGRESS, TaskStatus.OPEN)


def queue(
    store: BuiltinTaskStore, runs: Runs, active: set[str], faults: list[dict[str, Any]], limits: Limits | None,
    now: float, *, max_waiting: int | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """Every work task that is queued with no run in progress, most urgent first within each
    status, with why it is not moving (runner.holdups); ``max_waiting`` is integrate.max_waiting.
    Reads the tasks that are not done and the status of what they depend on: the history of done
    tasks costs nothing here."""
    every, statuses = store.unfinished()
    verified = [t for t in every if t.status is TaskStatus.VERIFIED]
    landing = waiting_to_land(runs, verified, max_waiting) if max_waiting is not None else 0
    dependencies = {t.id: t.dependencies for t in every}
    retry_at = {f["area"]: parse_iso(f["retry_at"]).timestamp() for f in faults}
    entries = []
    for status in QUEUED_STATUSES:
        waiting = [t for t in every if t.status is status and t.type is TaskType.WORK and t.id not in active]
        for task in sorted(waiting, key=lambda t: (t.priority, t.created_at, t.id)):
            item = Queued(
                task.id, task.status, task.dependencies, _gate(runs, task, limits, now),
                held=status is TaskStatus.VERIFIED and held_integration(runs, task.id) is not None,
                agent_committed=status is TaskStatus.IN_PROGRESS and _committed(runs, task.id),
            )  # fmt: skip
            reason = why(
                item, statuses, dependencies, retry_at, now, waiting_to_land=landing, max_waiting=max_waiting
            )
            entries.append(
                {"id": task.id, "title": task.title, "status": task.status.value, "priority": task.priority_name,
                 "why": reason.holdup.value, "detail": reason.detail, "waiting_on": list(reason.waiting_on),
                 "until": _iso(reason.until) if reason.until is not None else None, "fault": reason.fault}
            )  # fmt: skip
    return entries


def _gate(runs: Runs, task: Task, limits: Limits | None, now: float) -> GateResult:
    """The loop's gate for an open task; GO without the config's limits."""
    if limits is None or task.status is not TaskStatus.OPEN:
        return GateResult(Gate.GO)
    return task_gate(runs, task, limits, now)


def task_gate(runs: Runs, task: Task, limits: Limits, now: float, *, include_backoff: bool = True) -> GateResult:
    """``lifecycle.gate`` for ``task``, with its failures since a person last resumed it and its
    cost read from ``runs``: the one reading the loop and `status` share."""
    failures, last_failure = runs.failures_since(task.id, task.resumed_at)
    spent = runs.total_cost(task.id) if limits.max_task_cost else 0.0
    last = parse_iso(last_failure).timestamp() if last_failure else None
    return gate(limits, failures=failures, last_failure=last, spent=spent, now=now, include_backoff=include_backoff)


def limits_of(config: PipelineConfig) -> Limits:
    """What the gate weighs tasks against, from the config."""
    return Limits(config.limits.max_retries, config.limits.max_task_cost, config.interval)


def _committed(runs: Runs, task_id: str) -> bool:
    """Whether the task's latest attempt is a dev run that committed (verification comes next)."""
    latest = runs.latest(task_id)
    return latest is not None and (latest.phase, latest.status) == (Phase.DEV, RunStatus.SUCCESS)


def _iso(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="seconds")


def render_status(doc: dict[str, Any]) -> str:
    """The plain-text form of the status document (runner.statusview)."""
    from runner.statusview import render_plain

    return render_plain(doc)
