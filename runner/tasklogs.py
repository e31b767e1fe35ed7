"""`logs TASK [-f] [--run ID]`: what a task's agent and its checks printed.

An attempt is the task's last dev run and the verification and integration that followed it.
Its logs are the agent's log, then for each check attempt its own log (a line per phase) and each
phase's log (runner.status.attempt_logs). Printed like `tail` prints several files: each under a
``==> PATH <==`` header. ``-f`` follows them as they grow, taking in the checks as they start,
and ends when the attempt ends (runner.tasklogs.attempt_over).
"""

from __future__ import annotations

import enum
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from runner.crash import silence_stdout
from runner.errors import PipelineError, TaskError
from runner.layout import Layout
from runner.lock import RunnerLock
from runner.phaseview import phase_views
from runner.procs import pid_alive
from runner.state import Phase, RunRecord, Runs, RunStatus, open_db, state_exists
from runner.status import attempt_logs, held_integration
from runner.tasks import BuiltinTaskStore, TaskStatus

POLL_SECONDS = 0.2
CHUNK = 1 << 16


def attempt_of(records: Sequence[RunRecord]) -> list[RunRecord]:
    """The runs of the task's latest attempt (pure): its last dev run and every run after it; all
    its runs when it has no dev run."""
    devs = [r.id for r in records if r.phase is Phase.DEV]
    start = max(devs) if devs else 0
    return [r for r in records if r.id >= start]


class Follow(enum.StrEnum):
    """Whether `logs -f` keeps following."""

    GO_ON = "go_on"
    OVER = "over"


@dataclass(frozen=True)
class AttemptState:
    """What tells whether an attempt can still write: its runs, its task, the runner."""

    running: bool  # a run of the attempt is recorded running, and its process (if known) lives
    task_status: TaskStatus
    new_attempt: bool  # a dev run newer than the attempt's started: that is another attempt
    runner_active: bool  # a runner holds the root's lock: it takes the attempt's next step
    held: bool = False  # verified, and its integration waits for a person


def attempt_over(state: AttemptState) -> Follow:
    """Whether the attempt followed has ended (pure). It goes on while one of its runs runs, and
    between them while a runner is there to start the next (verification after the agent
    committed, integration after it passed); it ends once the task left those states, a new
    attempt began, or nothing is left that would write to it."""
    if state.new_attempt:
        return Follow.OVER
    if state.running:
        return Follow.GO_ON
    if state.task_status is TaskStatus.IN_PROGRESS or (state.task_status is TaskStatus.VERIFIED and not state.held):
        return Follow.GO_ON if state.runner_active else Follow.OVER
    return Follow.OVER


def runner_active(root: Path) -> bool:
    """Whether a runner holds the root's lock: the pid it wrote there is a live process.

    Read, never taken: taking it even for a moment could turn away a runner starting then."""
    holder = RunnerLock(Layout(root).lock_file).holder()
    return holder.isdigit() and pid_alive(int(holder))


@dataclass
class _Reader:
    """Where each log was read up to, and which was printed last (for the headers)."""

    out: BinaryIO
    offsets: dict[Path, int]
    current: Path | None = None

    def drain(self, path: Path, *, announce_empty: bool = False) -> bool:
        """Write what ``path`` gained since last read; True if anything was."""
        try:
            with open(path, "rb") as f:
                f.seek(self.offsets.get(path, 0))
                data = f.read(CHUNK)
                wrote = False
                while data:
                    self._header(path)
                    self.out.write(data)
                    self.offsets[path] = f.tell()
                    wrote = True
                    data = f.read(CHUNK)
        except FileNotFoundError:
            return False
        if not wrote and announce_empty and path not in self.offsets:
            self._header(path)
            self.offsets[path] = 0
        if wrote:
            self.out.flush()
        return wrote

    def _header(self, path: Path) -> None:
        if self.current != path:
            lead = b"\n" if self.current is not None else b""
            self.out.write(lead + f"==> {path} <==\n".encode())
            self.current = path


def show_logs(
    root: Path, task_id: str, *, run_id: int | None, follow: bool, out: BinaryIO | None = None,
    state: Path | str | None = None,
) -> int:  # fmt: skip
    """Print (or follow) the logs of ``task_id``'s latest attempt, or of its run ``run_id``.
    ``state``: where the state is (config.state_target), by default ROOT/state.db."""
    out = out if out is not None else sys.stdout.buffer
    db_path = state or root / "state.db"
    if not state_exists(db_path):
        raise TaskError(f"No task with id {task_id!r} (no pipeline state yet at {root}).")
    db = open_db(db_path, create=False)
    try:
        store = BuiltinTaskStore(db)
        store.get(task_id)  # an unknown task is an error naming it
        runs = Runs(db)
        reader = _Reader(out, {})
        try:
            chosen = _select(runs, task_id, run_id)
            for path in _files(runs, chosen):
                reader.drain(path)
            if follow:
                _follow(root, store, runs, task_id, run_id, chosen, reader)
        except KeyboardInterrupt:
            return 0
        except BrokenPipeError:
            silence_stdout()
        return 0
    finally:
        db.close()


def _select(runs: Runs, task_id: str, run_id: int | None) -> list[RunRecord]:
    """The runs to show: the latest attempt's, or the one asked for (an unknown id names the task's)."""
    records = runs.for_task(task_id)
    if run_id is None:
        if not records:
            raise PipelineError(f"Task {task_id} has no runs yet: nothing has logged for it.")
        return attempt_of(records)
    chosen = [r for r in records if r.id == run_id]
    if not chosen:
        known = ", ".join(f"{r.id} ({r.phase.value}, {r.status.value})" for r in records) or "none yet"
        raise PipelineError(f"Task {task_id} has no run {run_id}; its runs: {known}.")
    return chosen


def _files(runs: Runs, records: Sequence[RunRecord]) -> list[Path]:
    """Every log of ``records``, in order: each run's own, then its phases'."""
    phases = phase_views(runs, list(records))
    return [path for r in records for path in attempt_logs(r, phases[r.id])]


def _follow(
    root: Path, store: BuiltinTaskStore, runs: Runs, task_id: str, run_id: int | None,
    chosen: list[RunRecord], reader: _Reader,
) -> None:  # fmt: skip
    """Print what the attempt's logs gain, taking in the runs that start, until it is over."""
    first = chosen[0].id
    while True:
        records = [r for r in runs.for_task(task_id) if r.id >= first]
        if run_id is not None:
            records = [r for r in records if r.id == run_id]
        # A dev run after the first run followed starts the next attempt: not this one's.
        cut = min((r.id for r in records if r.phase is Phase.DEV and r.id > first), default=None)
        attempt = [r for r in records if cut is None or r.id < cut]
        for path in _files(runs, attempt):
            reader.drain(path)
        task = store.get(task_id)
        state = AttemptState(
            running=any(r.status is RunStatus.RUNNING and _alive(r, root) for r in attempt),
            # One run (--run) is over when it stops running, whatever its task does next.
            task_status=task.status if run_id is None else TaskStatus.DONE,
            new_attempt=cut is not None,
            runner_active=runner_active(root),
            held=task.status is TaskStatus.VERIFIED and held_integration(runs, task_id) is not None,
        )  # fmt: skip
        if attempt_over(state) is Follow.OVER:
            # What was written between the last read and the end.
            for path in _files(runs, attempt):
                reader.drain(path)
            return
        time.sleep(POLL_SECONDS)


def _alive(record: RunRecord, root: Path) -> bool:
    """Whether a running row can still write: a check's rows are the runner's (alive while it
    is); an agent's supervisor outlives the runner, so its own pid is asked."""
    if record.phase is Phase.DEV and record.pid:
        return pid_alive(record.pid) or runner_active(root)
    return runner_active(root)
