"""What one `run --once` / `run --until-idle` invocation did, said in one paragraph at its end,
and whether it needs a person (the exit code for cron and CI).

The summary is computed from the state database, over the attempts that finished during the
invocation, and from the tasks it sent to needs_help (told by the task store as they moved).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from runner.config import PipelineConfig
from runner.faults import Fault, read_faults
from runner.layout import Layout
from runner.notify import reason_of
from runner.state import Phase, RunRecord, Runs, RunStatus, now_iso, open_db, state_exists
from runner.status import Waiting, waiting_for_a_person
from runner.tasks import BuiltinTaskStore, TaskStatus

# Task ids named in the paragraph before "and N more".
MAX_NAMED = 10


@dataclass
class Invocation:
    """What only the invocation itself knows: when it began, whether it got to act (the lock),
    and the tasks it sent to needs_help."""

    started: str = field(default_factory=now_iso)
    acted: bool = False
    needs_help: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class HelpNeeded:
    """A task the invocation left needing help, with the reason said on it."""

    task_id: str
    title: str
    reason: str


@dataclass(frozen=True)
class Summary:
    """What an invocation did."""

    landed: tuple[str, ...]
    rejected: int  # failed attempts, of any phase
    needs_help: tuple[HelpNeeded, ...]
    cost_cents: float
    paused: tuple[Fault, ...]  # work paused at its end


class Mode(enum.Enum):
    """How `run` was invoked (a daemon has no summary)."""

    ONCE = "once"
    UNTIL_IDLE = "until-idle"


def summarize(runs: Sequence[RunRecord], needs_help: Sequence[HelpNeeded], paused: Sequence[Fault]) -> Summary:
    """The summary of the attempts ``runs`` (those that finished during the invocation)."""
    landed = [r.task_id for r in runs if r.phase is Phase.INTEGRATE and r.status is RunStatus.SUCCESS]
    return Summary(
        landed=tuple(dict.fromkeys(landed)),
        rejected=sum(1 for r in runs if r.status is RunStatus.FAILURE),
        needs_help=tuple(needs_help),
        cost_cents=sum(r.cost_cents for r in runs),
        paused=tuple(paused),
    )


def needs_attention(mode: Mode, summary: Summary, waiting: int) -> bool:
    """Whether the invocation ends needing a person (exit code 3).

    ``--once``: a task it sent to needs_help, or work paused at its end. ``--until-idle``: besides,
    any of the ``waiting`` tasks (needing help from before, or with an integration held back),
    since it ran until nothing else could move.
    """
    if summary.paused or summary.needs_help:
        return True
    return mode is Mode.UNTIL_IDLE and waiting > 0


def _ids(ids: Sequence[str]) -> str:
    named = ", ".join(ids[:MAX_NAMED])
    more = f" and {len(ids) - MAX_NAMED} more" if len(ids) > MAX_NAMED else ""
    return f" ({named}{more})" if ids else ""


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def render(summary: Summary) -> str:
    """The paragraph: landed, rejected attempts, needing help, cost, and what is paused."""
    cents = summary.cost_cents
    parts = [
        f"{_plural(len(summary.landed), 'task', 'tasks')} landed{_ids(summary.landed)}",
        f"{_plural(summary.rejected, 'attempt was', 'attempts were')} rejected",
        f"{_plural(len(summary.needs_help), 'task', 'tasks')} went to needs help"
        + _ids([h.task_id for h in summary.needs_help]),
        f"agents cost ${cents / 100:.2f} ({cents:g} cents)",
    ]
    text = "This run: " + "; ".join(parts) + "."
    for item in summary.needs_help[:MAX_NAMED]:
        reason = (item.reason.splitlines() or [""])[0][:200]
        text += f" {item.task_id} ({item.title}) needs help: {reason}".rstrip(": ") + "."
    if summary.paused:
        text += " Paused: " + "; ".join(
            f"{f.area} ({(f.message.splitlines() or [''])[0][:200]})" for f in summary.paused
        ) + "."
    return text


def collect(config: PipelineConfig, invocation: Invocation) -> Summary:
    """Read what ``invocation`` did from the state database and the faults file."""
    paused = read_faults(Layout(config.root).faults_file)
    if not state_exists(config.state_target):
        return summarize([], [], paused)
    db = open_db(config.state_target, create=False)
    try:
        runs = Runs(db).finished_since(invocation.started)
        store = BuiltinTaskStore(db)
        helped: list[HelpNeeded] = []
        for task_id in invocation.needs_help:
            task = store.get(task_id)
            if task.status is not TaskStatus.NEEDS_HELP:
                continue  # a person resumed it meanwhile
            helped.append(HelpNeeded(task.id, task.title, reason_of(task)))
    finally:
        db.close()
    return summarize(runs, helped, paused)


def waiting_lines(waiting: Sequence[Waiting], faults: Sequence[Fault]) -> list[str]:
    """The list `--until-idle` ends with when it stopped short: each task and fault with its reason."""
    lines: list[str] = []
    if waiting:
        lines.append(f"Stopped with {len(waiting)} task(s) waiting for a person:")
    for item in waiting:
        reason = item.reason.splitlines()[0][:300] if item.reason else ""
        lines.append(f"  {item.task_id}  {item.why}: {item.title}" + (f"\n      {reason}" if reason else ""))
    if faults:
        lines.append("Stopped with work paused by faults that are no task's:")
    lines += [f"  {fault.area}: {fault.message}" for fault in faults]
    return lines


def report(config: PipelineConfig, invocation: Invocation, mode: Mode, *, quiet: bool) -> bool:
    """Print the invocation's summary (and, for ``--until-idle``, what waits for a person) unless
    ``quiet``; True when it needs a person."""
    if not invocation.acted:
        return False  # another runner held the lock: this one did nothing
    summary = collect(config, invocation)
    waiting: list[Waiting] = []
    if mode is Mode.UNTIL_IDLE:
        waiting = waiting_for_a_person(
            config.root, parent=config.parent, task_id=config.task_id, state=config.state_target
        )
    attention = needs_attention(mode, summary, len(waiting))
    if not quiet:
        print(render(summary))
        if mode is Mode.UNTIL_IDLE and attention:
            print("\n".join(waiting_lines(waiting, summary.paused)))
    return attention
