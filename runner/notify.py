"""Events a person wants to hear of, and the commands (`notify:` in the config) that tell them.

Four events: a task ``needs_help``, a task ``landed``, work ``paused`` by a fault that is no task's
(or the daily cost cap), and work ``resumed``. They are taken from the task store's status moves
and from the FaultBoard, whoever makes the move or records the fault, so no code that moves a
task has to call this module. Each matching command runs with its argv's placeholders filled one
argument at a time (never through a shell) and the event as JSON on its stdin, in a thread of its
own beside the loop, one at a time in order, each stopped after its timeout. A command that fails,
hangs or cannot start is logged and changes nothing else.
"""

from __future__ import annotations

import enum
import json
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runner import procs
from runner.config import NotifyRule
from runner.errors import ProcessError, TaskError
from runner.faults import Fault, FaultBoard
from runner.logs import logger
from runner.redact import redact
from runner.tasklist import first_line, printable
from runner.tasks import Author, BuiltinTaskStore, Task, TaskStatus
from runner.templates import fill_argv

# Notifications still queued at exit are waited for at most this long in all (each command is
# bounded by its own timeout too).
CLOSE_WAIT_SECONDS = 60.0
# Past this many waiting notifications (a command far slower than events come), new ones are
# dropped with a log line rather than pile up without end.
MAX_PENDING = 100
MAX_KEPT_EVENTS = 1000
# What a message may hold in the event's JSON and placeholders; a check's output can be long.
MAX_MESSAGE_CHARS = 2000


class EventKind(enum.StrEnum):
    """What happened (the names ``notify.on`` takes)."""

    NEEDS_HELP = "needs_help"
    LANDED = "landed"
    PAUSED = "paused"
    RESUMED = "resumed"


# The task moves that are events, by the status moved to.
TASK_EVENTS = {TaskStatus.NEEDS_HELP: EventKind.NEEDS_HELP, TaskStatus.DONE: EventKind.LANDED}
# The events `run -q` prints on stdout: those a person has to act on.
QUIET_EVENTS = frozenset({EventKind.NEEDS_HELP, EventKind.PAUSED})


@dataclass(frozen=True)
class Event:
    """One event, about a task (``task_id``, ``title``) or an area of work (``area``)."""

    kind: EventKind
    message: str
    task_id: str | None = None
    title: str | None = None
    area: str | None = None
    at: float = field(default_factory=time.time)

    @property
    def text(self) -> str:
        """One line for a person (a chat message, a desktop notification, `run -q`): a title with
        a newline or an escape sequence in it can neither forge a second event line on `run -q`'s
        stdout nor rewrite the terminal (runner.tasklist.first_line)."""
        first = printable((self.message.splitlines() or [""])[0][:300])
        line = {
            EventKind.NEEDS_HELP: f"needs help: {self.task_id} {first_line(self.title or '')}: {first}",
            EventKind.LANDED: f"landed: {self.task_id} {first_line(self.title or '')}: {first}",
            EventKind.PAUSED: f"paused: {self.area}: {first}",
            EventKind.RESUMED: f"resumed: {self.area}",
        }[self.kind]
        return line.rstrip(": ")

    def values(self, base: str, root: Path) -> dict[str, str | None]:
        """The placeholders' values (empty for what the event has not: a paused event's task)."""
        return {
            "event": self.kind.value,
            "task_id": self.task_id,
            "title": self.title,
            "message": self.message,
            "area": self.area,
            "text": self.text,
            "base": base,
            "root": str(root),
        }

    def document(self, base: str, root: Path) -> dict[str, Any]:
        """The JSON a command reads on its stdin."""
        return {
            **self.values(base, root),
            "at": datetime.fromtimestamp(self.at, UTC).isoformat(timespec="seconds"),
        }


def event_of_move(task_id: str, title: str, status: TaskStatus, reason: str) -> Event | None:
    """The event a task's move to ``status`` is, if any."""
    kind = TASK_EVENTS.get(status)
    if kind is None:
        return None
    return Event(kind, _clip(reason), task_id=task_id, title=title)


def reason_of(task: Task) -> str:
    """The last thing the runner said on ``task`` (why it needs help, where it landed)."""
    said = [c.body for c in task.comments if c.author is Author.SYSTEM]
    if not said:
        return ""
    # The event's name already says "needs help"; the comment starts with it too.
    return said[-1].removeprefix("Pipeline: ").removeprefix("needs help: ")


def event_of_fault(change: str, fault: Fault) -> Event:
    """The event of a FaultBoard change: ``paused`` (recorded) or ``resumed`` (cleared)."""
    kind = EventKind.PAUSED if change == "paused" else EventKind.RESUMED
    message = _clip(fault.message) if kind is EventKind.PAUSED else f"was paused: {_clip(fault.message)}"
    return Event(kind, message, area=fault.area)


@dataclass(frozen=True)
class Delivery:
    """One command to run for one event."""

    argv: list[str]
    stdin: str
    timeout: int
    kind: EventKind


def deliveries(rules: Sequence[NotifyRule], event: Event, base: str, root: Path) -> list[Delivery]:
    """The commands ``rules`` run for ``event``, placeholders filled argument by argument."""
    values = event.values(base, root)
    stdin = json.dumps(event.document(base, root)) + "\n"
    return [
        Delivery(fill_argv(rule.run, values), stdin, rule.timeout, event.kind)
        for rule in rules
        if event.kind.value in rule.on
    ]


def _clip(text: str) -> str:
    text = redact(text.strip())
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


class Notifier:
    """Runs the notify commands for the events it is given, off the caller's thread, in order."""

    def __init__(
        self,
        rules: Sequence[NotifyRule],
        *,
        base: str,
        root: Path,
        cwd: Path | None = None,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.rules = list(rules)
        self.base = base
        self.root = root
        self.cwd = cwd
        self.echo = echo  # `run -q`: where the events a person must act on are printed
        self.log_path = root / "logs" / "notify.log"
        # The latest events of this process, in order (a daemon runs for months: bounded).
        self.events: deque[Event] = deque(maxlen=MAX_KEPT_EVENTS)
        self._queue: queue.Queue[Delivery | None] = queue.Queue()
        self._worker: threading.Thread | None = None

    def emit(self, event: Event) -> None:
        """Tell of ``event``: the log, the echo under `-q`, and each matching command (queued)."""
        self.events.append(event)
        logger.info("event {}", event.text)
        if self.echo is not None and event.kind in QUIET_EVENTS:
            self.echo(event.text)
        for delivery in deliveries(self.rules, event, self.base, self.root):
            if self._queue.qsize() >= MAX_PENDING:
                logger.warning("notify: {} notifications wait already; dropped one for {}", MAX_PENDING, event.text)
                continue
            self._queue.put(delivery)
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="notify", daemon=True)
                self._worker.start()

    def _work(self) -> None:
        while True:
            delivery = self._queue.get()
            if delivery is None:
                return
            deliver(delivery, self.log_path, self.cwd)

    def close(self, wait: float = CLOSE_WAIT_SECONDS) -> None:
        """Let the queued notifications run (at most ``wait`` seconds in all), then stop."""
        if self._worker is None:
            return
        self._queue.put(None)
        self._worker.join(wait)
        if self._worker.is_alive():
            logger.warning("notify: gave up waiting for {} notification(s) at exit", self._queue.qsize())
        self._worker = None


def deliver(delivery: Delivery, log_path: Path, cwd: Path | None) -> bool:
    """Run one notify command; True when it exited 0. Nothing raises: a failure is logged."""
    program = delivery.argv[0]
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"--- {datetime.now(UTC).isoformat(timespec='seconds')} {delivery.kind}: {delivery.argv}\n")
        result = procs.run_fed(
            delivery.argv, cwd, stdin=delivery.stdin, log_path=log_path, timeout=delivery.timeout
        )
    except (ProcessError, OSError) as exc:
        logger.warning("notify: the command for {} could not run: {}", delivery.kind, exc)
        return False
    if result.timed_out:
        logger.warning(
            "notify: {!r} for {} was stopped after its timeout of {}s (its output: {})",
            program, delivery.kind, delivery.timeout, log_path,
        )  # fmt: skip
        return False
    if result.exit_code != 0:
        logger.warning(
            "notify: {!r} for {} exited {} (its output: {})", program, delivery.kind, result.exit_code, log_path
        )
        return False
    return True


class Announcer:
    """Turns the moves of the store's tasks and the FaultBoard's changes into events.

    Fault changes are told at once. A task's move is told at the next ``flush`` (the loop calls it
    after each cycle): by then the reason said on the task is written, and a move undone in the
    meantime (a rolled-back transaction, a person moving it again) is not told at all.
    """

    def __init__(self, notifier: Notifier, store: BuiltinTaskStore, faults: FaultBoard) -> None:
        self.notifier = notifier
        self.store = store
        self.pending: list[tuple[str, TaskStatus]] = []
        self.needs_help: list[str] = []  # the tasks this process sent to needs_help, told
        store.listeners.append(self._moved)
        faults.listeners.append(self._fault)

    def _moved(self, task_id: str, before: TaskStatus, after: TaskStatus) -> None:
        if after is not before and after in TASK_EVENTS:
            self.pending.append((task_id, after))

    def _fault(self, change: str, fault: Fault) -> None:
        self.notifier.emit(event_of_fault(change, fault))

    def flush(self) -> None:
        """Tell of the task moves since the last flush that still stand."""
        pending, self.pending = self.pending, []
        for task_id, status in pending:
            try:
                task = self.store.get(task_id)
            except TaskError:
                continue  # removed meanwhile: nothing to tell
            if task.status is not status:
                continue
            event = event_of_move(task.id, task.title, status, reason_of(task))
            if event is None:
                continue
            if event.kind is EventKind.NEEDS_HELP and task.id not in self.needs_help:
                self.needs_help.append(task.id)
            self.notifier.emit(event)
