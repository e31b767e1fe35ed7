"""A task's life in one place: the statuses it may move between, the next step for it, and what
each outcome of a step does to it.

Pure functions over explicit tables, no processes and no database: the loop asks ``next_step``
what to do with a task and applies the ``Move`` an outcome maps to; a dry run prints the steps.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from phases.outcomes import IntegrateStatus, VerifyStatus
from runner.state import Phase, RunStatus
from runner.tasks import TaskStatus

OPEN, IN_PROGRESS, VERIFIED = TaskStatus.OPEN, TaskStatus.IN_PROGRESS, TaskStatus.VERIFIED
DONE, NEEDS_HELP, CANCELLED = TaskStatus.DONE, TaskStatus.NEEDS_HELP, TaskStatus.CANCELLED

# Every move the runner makes, and why. A person may set any status (`task set-status`, and the
# moves of runner.steering: cancel, retry); the runner then takes the person's status as it is and
# only ever makes these moves. None leaves CANCELLED: that is a person's decision alone, and a
# task's run still going when it is cancelled is stopped and its outcome recorded as cancelled.
TRANSITIONS: dict[tuple[TaskStatus, TaskStatus], str] = {
    (OPEN, IN_PROGRESS): "an agent starts an attempt",
    (OPEN, NEEDS_HELP): "a limit is reached (max_retries, max_task_cost) before an attempt",
    (IN_PROGRESS, OPEN): "an attempt failed with retries left, a fault of the environment stopped "
    "the agent (uncharged), or no agent is alive after a restart",
    (IN_PROGRESS, VERIFIED): "its commit passed the verify phases",
    (IN_PROGRESS, NEEDS_HELP): "a failed attempt reached a limit, or no check ran on it",
    (VERIFIED, DONE): "its candidate passed the integrate phases and base moved to it",
    (VERIFIED, OPEN): "the candidate conflicts, fails its checks or is empty on base's tip: redeveloped",
    (VERIFIED, NEEDS_HELP): "the same at a limit, or no integrate check ran on it",
    # A kill between base's swap and the bookkeeping: the candidate is on base, so it landed.
    (OPEN, DONE): "found on base after a restart",
    (IN_PROGRESS, DONE): "found on base after a restart",
}


def allowed(old: TaskStatus, new: TaskStatus) -> bool:
    """Whether the runner may move a task from ``old`` to ``new``."""
    return old == new or (old, new) in TRANSITIONS


class Step(enum.StrEnum):
    """What the loop does next with a task."""

    DEVELOP = "develop"  # start an agent
    WAIT = "wait"  # backing off after a failure, or its dependencies are not done
    GIVE_UP = "give_up"  # a limit is reached: needs help
    WATCH = "watch"  # its agent is running: look whether it finished
    VERIFY = "verify"  # the agent committed: check that commit
    CHECKING = "checking"  # its verification or integration is running
    REOPEN = "reopen"  # in progress with no agent and nothing to check (after a restart)
    INTEGRATE = "integrate"  # verified: land it
    HELD = "held"  # verified, but its integration waits for a person (base's checkout dirty)
    BLOCKED = "blocked"  # open, but a dependency was cancelled: it cannot start until a person acts
    NOTHING = "nothing"  # done, or waits for a person


class Gate(enum.StrEnum):
    """Whether an open task may start an attempt now."""

    GO = "go"
    RETRIES = "retries"
    COST = "cost"
    BACKOFF = "backoff"


BACKOFF_CAP_SECONDS = 600.0


@dataclass(frozen=True)
class GateResult:
    """The gate and, for a backoff, how long is left."""

    gate: Gate
    detail: str = ""
    wait_seconds: float = 0.0


@dataclass(frozen=True)
class Limits:
    """What the gate weighs a task against (``limits.*`` and ``interval`` of the config)."""

    max_retries: int
    max_task_cost: float  # cents; 0: no cap
    interval: float  # seconds; the backoff's unit


def backoff_delay(interval: float, failures: int) -> float:
    """Seconds to wait after ``failures`` failed attempts: interval * 2^failures, capped at 600."""
    import tenacity  # here: tenacity costs ~25 ms of the start-up of read-only commands

    wait = tenacity.wait_exponential(multiplier=interval, max=BACKOFF_CAP_SECONDS)
    state = tenacity.RetryCallState(None, None, (), {})  # type: ignore[arg-type]
    state.attempt_number = failures + 1
    return float(wait(state))


def gate(
    limits: Limits, *, failures: int, last_failure: float | None, spent: float, now: float,
    include_backoff: bool = True,
) -> GateResult:  # fmt: skip
    """Whether an open task may start an attempt at ``now`` (pure): the retry limit (``failures``
    since a person last resumed it, the last at ``last_failure``), the cost cap (``spent`` cents),
    then the backoff after its last failure."""
    if limits.max_retries and failures >= limits.max_retries:
        return GateResult(Gate.RETRIES, f"{failures} failed attempts reached limits.max_retries={limits.max_retries}")
    if limits.max_task_cost and spent >= limits.max_task_cost:
        return GateResult(Gate.COST, f"spent {spent:g} cents, reaching limits.max_task_cost={limits.max_task_cost}")
    if include_backoff and failures and last_failure is not None:
        remaining = last_failure + backoff_delay(limits.interval, failures) - now
        if remaining > 0:
            return GateResult(Gate.BACKOFF, f"backoff {remaining:.1f}s", remaining)
    return GateResult(Gate.GO)


@dataclass(frozen=True)
class TaskView:
    """What the decision needs to know of one task."""

    status: TaskStatus
    gate: Gate = Gate.GO
    dependencies_done: bool = True
    agent_running: bool = False  # a dev run of it is recorded running
    checking: bool = False  # its verification or integration is in flight in this process
    latest: tuple[Phase, RunStatus] | None = None  # its last attempt that was not cancelled
    held: bool = False  # its last integration was refused for a reason that needs a person
    blocked: bool = False  # a dependency of it is cancelled (or gone)


def next_step(task: TaskView) -> Step:
    """The next step for ``task`` (pure)."""
    if task.status is OPEN:
        if task.blocked:
            return Step.BLOCKED
        if not task.dependencies_done:
            return Step.WAIT
        return {Gate.GO: Step.DEVELOP, Gate.BACKOFF: Step.WAIT}.get(task.gate, Step.GIVE_UP)
    if task.status is IN_PROGRESS:
        if task.checking:
            return Step.CHECKING
        if task.agent_running:
            return Step.WATCH
        if task.latest == (Phase.DEV, RunStatus.SUCCESS):
            return Step.VERIFY
        return Step.REOPEN
    if task.status is VERIFIED:
        if task.checking:
            return Step.CHECKING
        return Step.HELD if task.held else Step.INTEGRATE
    return Step.NOTHING


class Then(enum.StrEnum):
    """What an outcome does to the task's status."""

    KEEP = "keep"  # stays where it is (the step is done again once its fault clears)
    PROMOTE = "promote"  # in progress -> verified, verified -> done
    RETRY = "retry"  # a failure charged to the task: open, or needs help at a limit
    REDEVELOP = "redevelop"  # back to open on a new base, nothing charged (a person rewrote base)
    NEEDS_HELP = "needs_help"  # not the task's failure, but only a person can change it
    # A verification in which no check ran: promoted only when the config allows unchecked work.
    PROMOTE_IF_ALLOWED = "promote_if_allowed"


@dataclass(frozen=True)
class Move:
    """How one outcome is recorded: the attempt's row status, the task's move, a new patchset."""

    run: RunStatus
    then: Then
    new_patchset: bool = False


VERIFY_MOVES: dict[VerifyStatus, Move] = {
    VerifyStatus.PASS: Move(RunStatus.SUCCESS, Then.PROMOTE),
    VerifyStatus.SKIP: Move(RunStatus.SKIPPED, Then.PROMOTE),  # what ran passed; the rest skipped
    VerifyStatus.UNCHECKED: Move(RunStatus.SKIPPED, Then.PROMOTE_IF_ALLOWED),
    VerifyStatus.FAIL: Move(RunStatus.FAILURE, Then.RETRY, new_patchset=True),
    VerifyStatus.FAULT: Move(RunStatus.CANCELLED, Then.KEEP),  # the machine's, not the commit's
}

INTEGRATE_MOVES: dict[IntegrateStatus, Move] = {
    IntegrateStatus.INTEGRATED: Move(RunStatus.SUCCESS, Then.PROMOTE),
    IntegrateStatus.CONFLICT: Move(RunStatus.FAILURE, Then.RETRY, new_patchset=True),
    IntegrateStatus.CHECKS_FAILED: Move(RunStatus.FAILURE, Then.RETRY, new_patchset=True),
    IntegrateStatus.EMPTY: Move(RunStatus.FAILURE, Then.RETRY, new_patchset=True),
    IntegrateStatus.UNCHECKED: Move(RunStatus.SKIPPED, Then.NEEDS_HELP),
    IntegrateStatus.STALE: Move(RunStatus.CANCELLED, Then.REDEVELOP, new_patchset=True),
    IntegrateStatus.FAULT: Move(RunStatus.CANCELLED, Then.KEEP),
    IntegrateStatus.REFUSED: Move(RunStatus.CANCELLED, Then.KEEP),  # held for a person
    IntegrateStatus.STOPPED: Move(RunStatus.CANCELLED, Then.KEEP),  # a person moved the task
}


def resolve(then: Then, current: TaskStatus, *, limit_reached: bool, allow_unchecked: bool) -> TaskStatus:
    """The task's status after an outcome's ``then``, from ``current`` (pure)."""
    if then is Then.KEEP:
        return current
    if then is Then.PROMOTE_IF_ALLOWED:
        then = Then.PROMOTE if allow_unchecked else Then.NEEDS_HELP
    if then is Then.PROMOTE:
        return {IN_PROGRESS: VERIFIED, VERIFIED: DONE}.get(current, current)
    if then is Then.NEEDS_HELP:
        return NEEDS_HELP
    if then is Then.REDEVELOP:
        return OPEN
    return NEEDS_HELP if limit_reached else OPEN


class Action(enum.StrEnum):
    """What a person does to a task from the command line (runner.steering)."""

    EDIT = "edit"
    CANCEL = "cancel"
    RETRY = "retry"
    DELETE = "delete"


class Verdict(enum.StrEnum):
    """Whether a person's action applies to a task in its status."""

    APPLY = "apply"
    ALREADY = "already"  # nothing to do: the task is already where the action would put it
    REFUSE = "refuse"


_UNDER_WAY = "an attempt of it is under way"

# For each action of a person, the statuses it applies to and what it means there (said to the
# person), or why it is refused. A status missing from an action's row is refused with a reason
# from REFUSALS.
PERSON_ACTIONS: dict[Action, dict[TaskStatus, tuple[Verdict, str]]] = {
    Action.EDIT: {
        OPEN: (Verdict.APPLY, "applies to its next attempt"),
        IN_PROGRESS: (Verdict.APPLY, "its attempt under way goes on as it started; the change applies to its next attempt"),
        VERIFIED: (Verdict.APPLY, "its verified commit is what lands; the change applies only if it is developed again"),
        NEEDS_HELP: (Verdict.APPLY, "applies once it is retried (`task retry`)"),
        CANCELLED: (Verdict.APPLY, "applies if it is retried (`task retry`)"),
        DONE: (Verdict.REFUSE, "it is done: its commit is on base already, so a change would change nothing"),
    },
    Action.CANCEL: {
        OPEN: (Verdict.APPLY, "it will not start"),
        IN_PROGRESS: (Verdict.APPLY, "its agent or check is stopped at the runner's next cycle; nothing of it lands"),
        VERIFIED: (Verdict.APPLY, "its verified commit will not land"),
        NEEDS_HELP: (Verdict.APPLY, "it will not be resumed"),
        CANCELLED: (Verdict.ALREADY, "it is cancelled already"),
        DONE: (Verdict.REFUSE, "it is done: its commit is on base already (revert it there if it must go)"),
    },
    Action.RETRY: {
        NEEDS_HELP: (Verdict.APPLY, "reopened with a fresh retry budget"),
        CANCELLED: (Verdict.APPLY, "reopened with a fresh retry budget, starting again from base"),
        OPEN: (Verdict.APPLY, "its retry budget starts again and any backoff ends"),
        IN_PROGRESS: (Verdict.REFUSE, f"{_UNDER_WAY} (`task cancel` it first)"),
        VERIFIED: (Verdict.REFUSE, "it passed verification and waits to land (`task cancel` it first)"),
        DONE: (Verdict.REFUSE, "it is done: its commit is on base already"),
    },
    Action.DELETE: {
        OPEN: (Verdict.APPLY, "deleted"),
        NEEDS_HELP: (Verdict.APPLY, "deleted"),
        CANCELLED: (Verdict.APPLY, "deleted"),
        IN_PROGRESS: (Verdict.REFUSE, f"{_UNDER_WAY} (`task cancel` it first, then delete it)"),
        VERIFIED: (Verdict.REFUSE, "it passed verification and waits to land (`task cancel` it first, then delete it)"),
        DONE: (Verdict.REFUSE, "it is done: it stays as the record of what landed on base"),
    },
}


def person_action(action: Action, status: TaskStatus) -> tuple[Verdict, str]:
    """Whether ``action`` applies to a task in ``status``, and what it means or why not (pure)."""
    return PERSON_ACTIONS[action].get(status, (Verdict.REFUSE, f"it is {status.value}"))
