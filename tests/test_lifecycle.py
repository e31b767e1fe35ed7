"""A task's life: the decision table and the outcome tables, in-process."""

from __future__ import annotations

import pytest

from phases.outcomes import IntegrateStatus, VerifyStatus
from runner.lifecycle import (
    INTEGRATE_MOVES,
    TRANSITIONS,
    VERIFY_MOVES,
    Gate,
    Step,
    TaskView,
    Then,
    allowed,
    next_step,
    resolve,
)
from runner.state import Phase, RunStatus
from runner.tasks import TaskStatus

OPEN, IN_PROGRESS, VERIFIED = TaskStatus.OPEN, TaskStatus.IN_PROGRESS, TaskStatus.VERIFIED
DONE, NEEDS_HELP = TaskStatus.DONE, TaskStatus.NEEDS_HELP


@pytest.mark.parametrize(
    ("view", "step"),
    [
        (TaskView(OPEN), Step.DEVELOP),
        (TaskView(OPEN, dependencies_done=False), Step.WAIT),
        (TaskView(OPEN, gate=Gate.BACKOFF), Step.WAIT),
        (TaskView(OPEN, gate=Gate.RETRIES), Step.GIVE_UP),
        (TaskView(OPEN, gate=Gate.COST), Step.GIVE_UP),
        (TaskView(IN_PROGRESS, agent_running=True, latest=(Phase.DEV, RunStatus.RUNNING)), Step.WATCH),
        (TaskView(IN_PROGRESS, latest=(Phase.DEV, RunStatus.SUCCESS)), Step.VERIFY),
        (TaskView(IN_PROGRESS, checking=True, latest=(Phase.DEV, RunStatus.SUCCESS)), Step.CHECKING),
        (TaskView(IN_PROGRESS, latest=(Phase.VERIFY, RunStatus.FAILURE)), Step.REOPEN),
        (TaskView(IN_PROGRESS), Step.REOPEN),
        (TaskView(VERIFIED), Step.INTEGRATE),
        (TaskView(VERIFIED, held=True), Step.HELD),
        (TaskView(VERIFIED, checking=True), Step.CHECKING),
        (TaskView(DONE), Step.NOTHING),
        (TaskView(NEEDS_HELP), Step.NOTHING),
    ],
)
def test_next_step(view: TaskView, step: Step) -> None:
    assert next_step(view) is step


def test_every_outcome_has_a_move_and_every_move_is_an_allowed_transition() -> None:
    assert set(VERIFY_MOVES) == set(VerifyStatus) and set(INTEGRATE_MOVES) == set(IntegrateStatus)
    for moves, start in ((VERIFY_MOVES, IN_PROGRESS), (INTEGRATE_MOVES, VERIFIED)):
        for move in moves.values():
            for limit in (False, True):
                for allow in (False, True):
                    new = resolve(move.then, start, limit_reached=limit, allow_unchecked=allow)
                    assert allowed(start, new), (move, new)


def test_a_failure_is_charged_only_when_the_task_is_at_fault() -> None:
    assert VERIFY_MOVES[VerifyStatus.FAIL].run is RunStatus.FAILURE
    assert VERIFY_MOVES[VerifyStatus.FAULT].run is RunStatus.CANCELLED  # the machine's
    assert INTEGRATE_MOVES[IntegrateStatus.REFUSED].run is RunStatus.CANCELLED  # a person's checkout
    assert INTEGRATE_MOVES[IntegrateStatus.UNCHECKED].then is Then.NEEDS_HELP
    assert all(m.new_patchset for m in INTEGRATE_MOVES.values() if m.then is Then.RETRY)


def test_resolve() -> None:
    assert resolve(Then.PROMOTE, IN_PROGRESS, limit_reached=False, allow_unchecked=False) is VERIFIED
    assert resolve(Then.PROMOTE, VERIFIED, limit_reached=False, allow_unchecked=False) is DONE
    assert resolve(Then.RETRY, VERIFIED, limit_reached=False, allow_unchecked=False) is OPEN
    assert resolve(Then.RETRY, VERIFIED, limit_reached=True, allow_unchecked=False) is NEEDS_HELP
    assert resolve(Then.PROMOTE_IF_ALLOWED, IN_PROGRESS, limit_reached=False, allow_unchecked=False) is NEEDS_HELP
    assert resolve(Then.PROMOTE_IF_ALLOWED, IN_PROGRESS, limit_reached=False, allow_unchecked=True) is VERIFIED
    assert resolve(Then.KEEP, VERIFIED, limit_reached=True, allow_unchecked=False) is VERIFIED


def test_the_runner_never_reopens_a_done_task_or_takes_a_task_from_needs_help() -> None:
    assert not any(old in (DONE, NEEDS_HELP) for old, _ in TRANSITIONS)
