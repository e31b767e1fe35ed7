"""Where things live under the root.

ROOT/.gitignore            ignores everything below, so the root can sit inside the repository
ROOT/state.db              SQLite state
ROOT/runner.lock           held by the active runner
ROOT/faults.json           faults that pause work (a stale lock, a missing tool), for status
ROOT/wake.fifo             a named pipe: `task add` wakes a daemon through it
ROOT/worktrees/TASK        a task's workspace: the agent's own repository, branch TASK
ROOT/indexes/TASK          the index of the files the runner last wrote there (runner.warm)
ROOT/warm/N                released workspaces kept for the next tasks (runner.warm)
ROOT/checks/TASK/RUN       a pristine checkout of exactly the commit under verification
ROOT/integration/RUN       a pristine checkout of the integration candidate
ROOT/prompts/RUN.md        prompts, outside every checkout so git never tracks them
ROOT/runs/RUN.json         status files of supervised agent commands
ROOT/logs/pipeline.jsonl   the runner's log; ROOT/logs/tasks/TASK/RUN.log per attempt
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runner.ids import check_task_id


@dataclass(frozen=True)
class Layout:
    """Paths under one root."""

    root: Path

    def ensure(self) -> None:
        """Create the root, ignored by git wherever it sits."""
        self.root.mkdir(parents=True, exist_ok=True)
        ignore = self.root / ".gitignore"
        if not ignore.exists():
            ignore.write_text("*\n")

    @property
    def faults_file(self) -> Path:
        """Faults that pause work, for `status` to show."""
        return self.root / "faults.json"

    @property
    def base_seen_file(self) -> Path:
        """Base's tip when the runner last looked, to read only what base gained since."""
        return self.root / "base.seen"

    @property
    def nudge_file(self) -> Path:
        """The named pipe a daemon listens on, so that `task add` wakes it at once."""
        return self.root / "wake.fifo"

    @property
    def lock_file(self) -> Path:
        """The runner lock."""
        return self.root / "runner.lock"

    @property
    def integration(self) -> Path:
        """The integration worktree."""
        return self.root / "integration"

    def checks(self, task_id: str) -> Path:
        """Where a task's commits are checked out for verification, one directory per attempt."""
        return self.root / "checks" / check_task_id(task_id)

    def check(self, task_id: str, attempt: int) -> Path:
        """The checkout of one verification attempt: never shared with another attempt, even one
        whose processes are still being ended after a kill."""
        return self.checks(task_id) / str(attempt)

    def integration_attempt(self, attempt: int) -> Path:
        """The checkout of one integration attempt's candidate."""
        return self.integration / str(attempt)

    @property
    def worktrees(self) -> Path:
        """Parent of the task worktrees."""
        return self.root / "worktrees"

    def worktree(self, task_id: str) -> Path:
        """A task's worktree; the id is checked before it becomes a path."""
        return self.worktrees / check_task_id(task_id)

    def prompt(self, run_id: str) -> Path:
        """A run's prompt file."""
        return self.root / "prompts" / f"{run_id}.md"

    def status_file(self, run_id: str) -> Path:
        """A supervised run's status file."""
        return self.root / "runs" / f"{run_id}.json"

    def task_log(self, task_id: str, name: str) -> Path:
        """A log file of one attempt of a task."""
        return self.root / "logs" / "tasks" / check_task_id(task_id) / f"{name}.log"
