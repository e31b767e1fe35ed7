"""Why a queued task is not moving, and the gate it shares with the loop: pure tables, in-process."""

from __future__ import annotations

import pytest

from runner.holdups import Holdup, Queued, why
from runner.lifecycle import Gate, GateResult, Limits, backoff_delay, gate
from runner.tasks import TaskStatus

OPEN, IN_PROGRESS, VERIFIED = TaskStatus.OPEN, TaskStatus.IN_PROGRESS, TaskStatus.VERIFIED
DONE, NEEDS_HELP = TaskStatus.DONE, TaskStatus.NEEDS_HELP
NOW = 1_800_000_000.0

# The rest of the store each case sees: x in progress, h needs help, d done, c1 <-> c2 a cycle,
# o open behind h.
STATUSES = {"x": IN_PROGRESS, "h": NEEDS_HELP, "d": DONE, "c1": OPEN, "c2": OPEN, "o": OPEN}
DEPENDENCIES: dict[str, tuple[str, ...]] = {"c1": ("c2",), "c2": ("c1",), "o": ("h",)}
BACKOFF = GateResult(Gate.BACKOFF, "backoff 30.0s", 30.0)
RETRIES = GateResult(Gate.RETRIES, "3 failed attempts reached limits.max_retries=3")

CASES: list[tuple[str, Queued, dict[str, float], Holdup, tuple[str, ...]]] = [
    ("free to start", Queued("t", OPEN), {}, Holdup.READY, ()),
    ("its dependency is done", Queued("t", OPEN, ("d",)), {}, Holdup.READY, ()),
    ("a dependency in progress", Queued("t", OPEN, ("d", "x")), {}, Holdup.DEPENDENCY, ("x",)),
    ("a dependency needs help", Queued("t", OPEN, ("x", "h")), {}, Holdup.BLOCKED, ("h",)),
    ("behind one that needs help", Queued("t", OPEN, ("o",)), {}, Holdup.BLOCKED, ("h",)),
    ("in a cycle", Queued("c1", OPEN, ("c2",)), {}, Holdup.CYCLE, ("c1", "c2")),
    ("behind a cycle", Queued("t", OPEN, ("c1",)), {}, Holdup.CYCLE, ("c1", "c2")),
    ("a dependency that does not exist", Queued("t", OPEN, ("gone",)), {}, Holdup.BLOCKED, ("gone",)),
    ("backing off", Queued("t", OPEN, (), BACKOFF), {}, Holdup.BACKOFF, ()),
    ("at its retry limit", Queued("t", OPEN, (), RETRIES), {}, Holdup.LIMIT, ()),
    ("agents paused", Queued("t", OPEN), {"dev": NOW + 60}, Holdup.FAULT, ()),
    ("base moved outside", Queued("t", OPEN), {"base": NOW + 60}, Holdup.FAULT, ()),
    ("integration paused, not agents", Queued("t", OPEN), {"integrate": NOW + 60}, Holdup.READY, ()),
    ("its dependency first, then the fault", Queued("t", OPEN, ("x",)), {"dev": NOW}, Holdup.DEPENDENCY, ("x",)),
    ("verified, next to land", Queued("t", VERIFIED), {"dev": NOW}, Holdup.READY, ()),
    ("verified, integration held", Queued("t", VERIFIED, held=True), {}, Holdup.HELD, ()),
    ("verified, checkout lagging", Queued("t", VERIFIED), {"checkout": NOW + 5}, Holdup.FAULT, ()),
    ("committed, verification paused", Queued("t", IN_PROGRESS, agent_committed=True), {"verify": NOW},
     Holdup.FAULT, ()),
    ("committed, verification next", Queued("t", IN_PROGRESS, agent_committed=True), {}, Holdup.READY, ()),
]  # fmt: skip


@pytest.mark.parametrize(("name", "task", "faults", "holdup", "waiting_on"), CASES, ids=[c[0] for c in CASES])
def test_why_a_task_is_not_moving(
    name: str, task: Queued, faults: dict[str, float], holdup: Holdup, waiting_on: tuple[str, ...]
) -> None:
    statuses = {**STATUSES, task.id: task.status}
    dependencies = {**DEPENDENCIES, task.id: task.dependencies}
    found = why(task, statuses, dependencies, faults, NOW)
    assert found.holdup is holdup, found
    assert found.waiting_on == waiting_on
    for waited in waiting_on:
        assert waited in found.detail


def test_reasons_name_what_they_wait_for() -> None:
    statuses = {**STATUSES, "t": OPEN}
    backoff = why(Queued("t", OPEN, (), BACKOFF), statuses, DEPENDENCIES, {}, NOW)
    assert backoff.until == NOW + 30 and "until" in backoff.detail
    fault = why(Queued("t", OPEN), statuses, DEPENDENCIES, {"dev": NOW + 60}, NOW)
    assert (fault.fault, fault.until) == ("dev", NOW + 60)
    assert "x (in_progress)" in why(Queued("t", OPEN, ("x",)), statuses, DEPENDENCIES, {}, NOW).detail
    assert "through o" in why(Queued("t", OPEN, ("o",)), statuses, DEPENDENCIES, {}, NOW).detail
    assert "is in a dependency cycle" in why(Queued("c1", OPEN, ("c2",)), statuses, DEPENDENCIES, {}, NOW).detail
    assert "limits.max_retries" in why(Queued("t", OPEN, (), RETRIES), statuses, DEPENDENCIES, {}, NOW).detail


LIMITS = Limits(max_retries=3, max_task_cost=100, interval=10)

GATES: list[tuple[str, dict[str, float | int | None], Gate]] = [
    ("never failed", {"failures": 0, "last_failure": None, "spent": 0}, Gate.GO),
    ("failed just now", {"failures": 1, "last_failure": NOW - 1, "spent": 0}, Gate.BACKOFF),
    ("failed long ago", {"failures": 2, "last_failure": NOW - 3600, "spent": 0}, Gate.GO),
    ("retries used up", {"failures": 3, "last_failure": NOW - 1, "spent": 0}, Gate.RETRIES),
    ("cost cap reached", {"failures": 1, "last_failure": NOW - 1, "spent": 100}, Gate.COST),
]


@pytest.mark.parametrize(("name", "facts", "expected"), GATES, ids=[g[0] for g in GATES])
def test_gate(name: str, facts: dict[str, float | int | None], expected: Gate) -> None:
    failures, last, spent = facts["failures"], facts["last_failure"], facts["spent"]
    assert isinstance(failures, int) and isinstance(spent, int)
    assert gate(LIMITS, failures=failures, last_failure=last, spent=spent, now=NOW).gate is expected


def test_backoff_waits_what_is_left_and_doubles() -> None:
    found = gate(LIMITS, failures=2, last_failure=NOW - 5, spent=0, now=NOW)
    assert found.wait_seconds == pytest.approx(backoff_delay(10, 2) - 5)
    assert backoff_delay(10, 1) < backoff_delay(10, 2) <= 600
    assert gate(LIMITS, failures=2, last_failure=NOW - 5, spent=0, now=NOW, include_backoff=False).gate is Gate.GO
