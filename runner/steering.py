"""A person steering tasks from the command line: edit, cancel, retry, delete.

Each action is one transaction on the state database, so that it lands before or after a step of
a runner working meanwhile (as a daemon, in another process), never in the middle of one. What the
action may do in each status is the table ``runner.lifecycle.PERSON_ACTIONS``; a running runner
reads the new status at its next cycle and acts on it (stops the agent or check of a cancelled
task, never lands it; see runner.scheduler).
"""

from __future__ import annotations

from dataclasses import dataclass

from runner.config import PipelineConfig
from runner.errors import TaskError
from runner.git import Git
from runner.layout import Layout
from runner.lifecycle import Action, Verdict, person_action
from runner.tasks import Author, BuiltinTaskStore, Task, TaskChanges, TaskStatus
from runner.workspace import Workspaces, task_ref


@dataclass(frozen=True)
class Steered:
    """What an action did: the task as it is now, and a line for the person."""

    task: Task | None  # None once deleted
    message: str


class Steering:
    """The actions of a person on the tasks of one pipeline."""

    def __init__(self, config: PipelineConfig, store: BuiltinTaskStore) -> None:
        self.config = config
        self.store = store
        self.db = store.db

    def _workspaces(self) -> Workspaces:
        return Workspaces(Git(self.config.repo_path), Layout(self.config.root))

    def _decide(self, action: Action, task: Task) -> tuple[Verdict, str]:
        verdict, text = person_action(action, task.status)
        if verdict is Verdict.REFUSE:
            raise TaskError(f"Cannot {action.value} task {task.id}: {text}.")
        return verdict, text

    def running(self, task_id: str) -> list[str]:
        """The phases (dev, verify, integrate) of the task's attempts recorded as running."""
        rows = self.db.query(
            "SELECT phase FROM pipeline_runs WHERE task_id = ? AND status = 'running' AND parent_id IS NULL "
            "ORDER BY id",
            (task_id,),
        )
        return [str(r[0]) for r in rows]

    def landing(self, task_id: str) -> str | None:
        """The candidate an integration in flight recorded for the task: from then on base may move
        to it at any moment (phases.integrate records it, under the write lock, before the swap)."""
        value = self.db.scalar(
            "SELECT after_sha FROM pipeline_runs WHERE task_id = ? AND phase = 'integrate' AND status = 'running' "
            "AND parent_id IS NULL AND after_sha IS NOT NULL ORDER BY id DESC LIMIT 1",
            (task_id,),
        )
        return None if value is None else str(value)

    def edit(self, task_id: str, changes: TaskChanges) -> Steered:
        """Change the given fields; refused for a done task, and as ``add`` refuses (cycles too)."""
        changes.check(task_id)
        with self.db.write():
            _, meaning = self._decide(Action.EDIT, self.store.get(task_id))
            task, names = self.store.update(task_id, changes)
            if names:
                self.store.comment(task_id, f"edited by a person: {', '.join(names)}", Author.SYSTEM)
        if not names:
            return Steered(task, f"{task_id}: nothing changed")
        return Steered(task, f"{task_id}: changed {', '.join(names)}; {meaning}")

    def cancel(self, task_id: str) -> Steered:
        """Cancel a task: it never starts, or its running agent or check is stopped by the runner,
        and nothing of it lands. Refused for a done task, and for one whose candidate base may be
        moving to right now (it has passed every check; it is done a moment later)."""
        with self.db.write():
            task = self.store.get(task_id)
            verdict, meaning = self._decide(Action.CANCEL, task)
            if verdict is Verdict.ALREADY:
                return Steered(task, f"{task_id}: {meaning}")
            candidate = self.landing(task_id)
            if candidate is not None:
                raise TaskError(
                    f"Cannot cancel task {task_id}: it is landing right now (its candidate {candidate[:12]} "
                    f"passed every check and {self.config.base} may already have moved to it; if the runner "
                    "was stopped at that moment, its next start settles it). Revert it on base if it must go."
                )
            self.store.set_status(task_id, TaskStatus.CANCELLED)
            self.store.comment(task_id, f"cancelled by a person (it was {task.status.value})", Author.SYSTEM)
        busy = self.running(task_id)
        if busy:
            # The runner stops it and removes its workspace once it has ended.
            meaning += f" (its {' and '.join(busy)} run is stopped by the runner, which then removes its workspace)"
        else:
            self._workspaces().release(task_id)
            meaning += "; its workspace is removed"
        return Steered(self.store.get(task_id), f"{task_id}: {task.status.value} -> cancelled: {meaning}")

    def retry(self, task_id: str) -> Steered:
        """Reopen a task that needs help or was cancelled, with a fresh retry budget (failures
        before now no longer count, and no backoff is owed)."""
        with self.db.write():
            task = self.store.get(task_id)
            _, meaning = self._decide(Action.RETRY, task)
            if self.running(task_id):
                raise TaskError(
                    f"Cannot retry task {task_id} yet: its cancelled run is still being stopped. Try again in a moment."
                )
            self.store.set_status(task_id, TaskStatus.OPEN, by_person=True)
            self.store.comment(task_id, f"retried by a person (it was {task.status.value})", Author.SYSTEM)
        return Steered(self.store.get(task_id), f"{task_id}: {task.status.value} -> open: {meaning}")

    def delete(self, task_id: str) -> Steered:
        """Remove a task that is not done and has no run going, with its attempts, workspace and
        the runner's ref for it. Refused while other tasks depend on it or have it as parent."""
        with self.db.write():
            task = self.store.get(task_id)
            self._decide(Action.DELETE, task)
            busy = self.running(task_id)
            if busy:
                raise TaskError(
                    f"Cannot delete task {task_id} yet: its {' and '.join(busy)} run is still being stopped. "
                    "Try again once `status` shows no active run of it."
                )
            dependants = self.store.dependants(task_id)
            if dependants:
                raise TaskError(
                    f"Cannot delete task {task_id}: {', '.join(dependants)} depend on it or have it as "
                    f"parent. Delete those first, or drop {task_id} from them with "
                    "`task edit ID --depends-on ...`."
                )
            attempts = self.store.delete(task_id)
        self._workspaces().release(task_id)
        return Steered(
            None,
            f"Deleted {task_id} ({task.status.value}, {attempts} attempt(s) forgotten; its workspace and "
            f"{task_ref(task_id)} removed)",
        )
