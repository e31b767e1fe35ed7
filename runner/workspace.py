"""Where things live under the root, and the per-task worktrees.

ROOT/.gitignore            ignores everything below, so the root can sit inside the repository
ROOT/state.db              SQLite state
ROOT/runner.lock           held by the active runner
ROOT/worktrees/TASK        a task's worktree, on branch TASK
ROOT/integration           the integration worktree, detached
ROOT/prompts/RUN.md        prompts, outside every worktree so git never tracks them
ROOT/runs/RUN.json         status files of supervised agent commands
ROOT/logs/pipeline.jsonl   the runner's log; ROOT/logs/tasks/TASK/RUN.log per attempt
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from runner.errors import GitError
from runner.git import Git
from runner.ids import check_task_id, id_problem


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
    def lock_file(self) -> Path:
        """The runner lock."""
        return self.root / "runner.lock"

    @property
    def integration(self) -> Path:
        """The integration worktree."""
        return self.root / "integration"

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


class Workspaces:
    """Task worktrees: one per task, on a branch named for the task, reused across attempts."""

    def __init__(self, git: Git, layout: Layout) -> None:
        self.git = git
        self.layout = layout

    def acquire(self, task_id: str, base: str) -> Path:
        """The task's worktree, created from ``base`` unless it (or its branch) exists already."""
        path = self.layout.worktree(task_id)
        if self.git.is_worktree(path):
            return path
        if path.exists():
            self.git.remove_worktree(path)  # a directory left by a crash
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.git.add_worktree(path, task_id, base)
        except GitError:
            # Registered but its directory vanished: forget it and try once more.
            self.git.prune_worktrees()
            self.git.add_worktree(path, task_id, base)
        return path

    def reset_onto(self, task_id: str, commit: str) -> None:
        """Drop the task's work: its branch (and worktree, if present) become ``commit``."""
        path = self.layout.worktree(task_id)
        if self.git.is_worktree(path):
            self.git.reset_hard(path, commit)
        else:
            self.git.set_branch(task_id, commit)

    def release(self, task_id: str) -> None:
        """Remove the task's worktree and branch."""
        self.git.remove_worktree(self.layout.worktree(task_id))
        self.git.delete_branch(task_id)

    def drop_stale_lock(self, task_id: str) -> None:
        """Remove the index.lock a killed git command left in a task's worktree."""
        path = self.layout.worktree(task_id)
        if self.git.is_worktree(path):
            (self.git.git_dir(path) / "index.lock").unlink(missing_ok=True)

    def existing(self) -> list[str]:
        """Task ids that have a worktree directory; other directories there are left alone."""
        if not self.layout.worktrees.is_dir():
            return []
        ids = []
        for path in sorted(p for p in self.layout.worktrees.iterdir() if p.is_dir()):
            problem = id_problem(path.name)
            if problem is not None:
                # Not one of ours (no task can have that id): a stray directory must not stop the
                # runner, and it is not ours to delete.
                logger.warning("ignoring {}: not a task worktree ({})", path, problem)
                continue
            ids.append(path.name)
        return ids
