"""Why a task that is not running is not moving: the answer `status` gives for each queued task.

A pure function over the tasks, their dependencies, their gate (retry limit, cost cap, backoff)
and the faults in force. It asks ``lifecycle.next_step`` for the step the loop would take, so it
cannot disagree with the loop, and explains a wait with the dependency graph (``graph.find_cycle``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from runner.graph import find_cycle
from runner.lifecycle import Gate, GateResult, Step, TaskView, next_step
from runner.state import Phase, RunStatus
from runner.tasks import TaskStatus


class Holdup(enum.StrEnum):
    """Why a queued task is where it is."""

    READY = "ready"  # the loop takes it at its next chance (a free agent slot, a place in the integration stack)
    DEPENDENCY = "dependency"  # waits for dependencies that are still being worked on
    BLOCKED = "blocked"  # a dependency (or one of theirs) needs help: nothing moves without a person
    CYCLE = "cycle"  # its dependencies lead back to themselves: it can never start
    BACKOFF = "backoff"  # failed recently; waits out the delay before its next attempt
    LIMIT = "limit"  # reached limits.max_retries or max_task_cost: moves to needs_help next cycle
    FAULT = "fault"  # the step it needs is paused by a fault that is no task's
    HELD = "held"  # verified; its integration was refused until a person acts (base's checkout)
    BOTTLENECK = "bottleneck"  # integrate.max_waiting verified tasks wait to land: no agent starts


# The fault areas that pause each step (runner.scheduler, runner.integrator): "base" holds all;
# a red base or a missing program (runner.preflight) holds agents and integration.
STEP_FAULTS: dict[Step, tuple[str, ...]] = {
    Step.DEVELOP: ("base", "red-base", "environment", "dev"),
    Step.VERIFY: ("base", "verify"),
    Step.INTEGRATE: ("base", "red-base", "environment", "checkout", "remote", "integrate"),
}


@dataclass(frozen=True)
class Queued:
    """What the decision needs of one task that has no run in progress."""

    id: str
    status: TaskStatus
    dependencies: tuple[str, ...] = ()
    gate: GateResult = field(default_factory=lambda: GateResult(Gate.GO))
    held: bool = False  # verified, and its last integration was refused for a person
    agent_committed: bool = False  # in progress: its last attempt is a dev run that succeeded


@dataclass(frozen=True)
class Why:
    """The reason, with what it names: the tasks waited on, the time it waits until, the fault."""

    holdup: Holdup
    detail: str
    waiting_on: tuple[str, ...] = ()
    until: float | None = None  # epoch seconds, for a backoff (or a fault's next try)
    fault: str | None = None  # the fault area


def why(
    task: Queued, statuses: Mapping[str, TaskStatus], dependencies: Mapping[str, Sequence[str]],
    faults: Mapping[str, float], now: float, *, waiting_to_land: int = 0, max_waiting: int | None = None,
) -> Why:  # fmt: skip
    """Why ``task`` is not moving (pure).

    ``statuses`` and ``dependencies`` cover every task (a dependency missing from them does not
    exist); ``faults`` maps each fault area in force to when it is tried again; ``waiting_to_land``
    verified tasks wait for the integrator, against integrate.max_waiting (None: no limit).
    """
    deps_done = all(statuses.get(d) is TaskStatus.DONE for d in task.dependencies)
    cancelled = tuple(d for d in task.dependencies if statuses.get(d) is TaskStatus.CANCELLED)
    latest = (Phase.DEV, RunStatus.SUCCESS) if task.agent_committed else None
    step = next_step(
        TaskView(status=task.status, gate=task.gate.gate, dependencies_done=deps_done, latest=latest,
                 held=task.held, blocked=bool(cancelled))
    )  # fmt: skip
    if step is Step.BLOCKED:
        return Why(Holdup.BLOCKED, f"{', '.join(cancelled)} was cancelled: `task retry` it, or edit the "
                   "dependencies with `task edit ID --depends-on ...`", cancelled)  # fmt: skip
    if step is Step.WAIT and not deps_done:
        return _dependencies(task, statuses, dependencies)
    if step is Step.WAIT:
        until = now + task.gate.wait_seconds
        return Why(Holdup.BACKOFF, f"backing off after a failure, until {_clock(until)}", until=until)
    if step is Step.GIVE_UP:
        return Why(Holdup.LIMIT, f"{task.gate.detail}; moves to needs_help on the next cycle")
    if step is Step.HELD:
        return Why(Holdup.HELD, "verified; its integration was refused and waits for a person")
    for area in STEP_FAULTS.get(step, ()):
        if area in faults:
            return Why(
                Holdup.FAULT, f"{step.value} is paused by a fault ({area}), next try at {_clock(faults[area])}",
                until=faults[area], fault=area,
            )  # fmt: skip
    if step is Step.DEVELOP:
        bottleneck = integration_bottleneck(waiting_to_land, max_waiting)
        if bottleneck is not None:
            return Why(Holdup.BOTTLENECK, bottleneck)
    return Why(Holdup.READY, _READY.get(step, f"next: {step.value}"))


def integration_bottleneck(waiting_to_land: int, max_waiting: int | None) -> str | None:
    """Why no agent starts while ``waiting_to_land`` verified tasks wait for the integrator, or
    None when they are fewer than integrate.max_waiting (pure; the loop and `status` share it)."""
    if max_waiting is None or waiting_to_land < max_waiting:
        return None
    return (
        f"integration is the bottleneck: {waiting_to_land} verified tasks wait to land "
        f"(integrate.max_waiting {max_waiting}); no agent starts until fewer do"
    )


_READY = {
    Step.DEVELOP: "ready: starts when an agent slot is free",
    Step.VERIFY: "its agent committed: verification starts next",
    Step.INTEGRATE: "verified: waits for a place in the integration stack (integrate.window)",
    Step.REOPEN: "no agent is alive: reopened on the next cycle",
}


def _dependencies(
    task: Queued, statuses: Mapping[str, TaskStatus], dependencies: Mapping[str, Sequence[str]]
) -> Why:
    """Why the task's unfinished dependencies hold it: a cycle, one needing help, or work in progress."""
    # The task first, so that a cycle through it is told from its own place.
    pending = {task.id: [d for d in task.dependencies if statuses.get(d) is not TaskStatus.DONE]}
    for name in sorted(_reachable(task.id, task.dependencies, statuses, dependencies) - {task.id}):
        pending[name] = [d for d in dependencies.get(name, ()) if statuses.get(d) is not TaskStatus.DONE]
    cycle = find_cycle(pending)
    if cycle is not None:
        where = "is in" if task.id in cycle else "waits on"
        return Why(Holdup.CYCLE, f"{where} a dependency cycle: {' -> '.join(cycle)}", tuple(dict.fromkeys(cycle)))
    missing = sorted(t for t in pending if t not in statuses and t != task.id)
    if missing:
        return Why(Holdup.BLOCKED, f"depends on {', '.join(missing)}, which does not exist", tuple(missing))
    helpless = [t for t in pending if statuses.get(t) is TaskStatus.NEEDS_HELP]
    if helpless:
        direct = [d for d in task.dependencies if d in helpless]
        via = "" if direct else f" (through {', '.join(pending[task.id])})"
        return Why(Holdup.BLOCKED, f"{', '.join(helpless)} needs help{via}", tuple(helpless))
    waiting = tuple(pending[task.id])
    named = ", ".join(f"{d} ({statuses[d].value})" for d in waiting)
    return Why(Holdup.DEPENDENCY, f"waiting on {named}", waiting)


def _reachable(
    start: str, first: Sequence[str], statuses: Mapping[str, TaskStatus], dependencies: Mapping[str, Sequence[str]]
) -> set[str]:
    """Every unfinished task ``start`` waits on, directly or not."""
    found: set[str] = set()
    todo = [d for d in first if statuses.get(d) is not TaskStatus.DONE]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        todo += [d for d in dependencies.get(name, ()) if statuses.get(d) is not TaskStatus.DONE]
    return found


def _clock(stamp: float) -> str:
    """A time of day in UTC, as `status` prints it."""
    return datetime.fromtimestamp(stamp, UTC).strftime("%H:%M:%S UTC")
