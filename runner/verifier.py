"""The verification executor: the commit an agent made, checked by the graph's verify phases in
worker threads beside the loop; the outcome recorded as the task's life says (runner.lifecycle).

Phases of every verification and integration share one limit of recipes at once (``slots``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from phases.checks import GraphRun, PhaseState, RowListener, empty_stage
from phases.outcomes import VerifyStatus
from phases.verify import VerifyResult, verify_task
from runner import killpoints
from runner.checkcache import CheckCache
from runner.checkoutcomes import CheckOutcomes
from runner.flaky import check_with_rerun
from runner.lifecycle import VERIFY_MOVES, Then
from runner.logs import logger
from runner.state import Database, Phase, RunRecord, Runs, RunStatus
from runner.tasks import Author, Task, TaskStatus
from runner.workspace import task_ref

if TYPE_CHECKING:
    from runner.scheduler import Pipeline


class Verifier:
    """Verifications of one pipeline, several at once."""

    def __init__(self, pipeline: Pipeline, *, use_cache: bool = True) -> None:
        self.p = pipeline
        self.use_cache = use_cache
        # Phase recipes running at once, across every verification and integration.
        self.slots = threading.BoundedSemaphore(pipeline.config.check_slots)
        self.pool = ThreadPoolExecutor(max_workers=max(1, pipeline.config.concurrency), thread_name_prefix="verify")
        self.verifying: dict[str, tuple[int, Future[VerifyResult]]] = {}
        # Set for a verification whose task a person moved (cancelled): its recipes are ended.
        self.cancels: dict[str, threading.Event] = {}

    def close(self) -> None:
        """Stop the workers (results not yet applied are redone on the next start)."""
        self.pool.shutdown(wait=False, cancel_futures=True)

    def check_values(self, task: Task, workspace: Path) -> dict[str, str | None]:
        """Substitution values for the recipes of one task's checks."""
        return {
            "namespace": task.namespace,
            "task_id": task.id,
            "workspace": str(workspace),
            "base": self.p.config.base,
            "patchset": str(task.patchset),
        }

    def check_stage(
        self, db: Database, stage: str, task: Task, parent: int, sha: str, workdir: Callable[[], Path],
        log_path: Path, cancel: threading.Event | None = None, slots: threading.Semaphore | None = None,
    ) -> VerifyResult:  # fmt: skip
        """Run the graph's phases for ``stage`` on ``sha`` (in the calling worker thread, with its
        own connection ``db``); each phase is a row under the attempt ``parent``. Setting
        ``cancel`` ends the recipes running and starts no more. ``slots`` bounds the recipes
        running at once (default: the limit shared by every verification)."""
        empty = empty_stage(stage, self.p.config.phases)
        if empty is not None:
            return empty
        runs = Runs(db, owner=self.p.runs.owner)
        tree = self.p.git.tree_of(sha) or sha
        runs.update(parent, tree=tree)
        workspace = self.p.layout.check(task.id, parent) if stage == "verify" else self.p.layout.integration_attempt(parent)
        outcomes = CheckOutcomes(db)
        graph = GraphRun(
            phases=self.p.config.stage_phases(stage), stage=stage, tree=tree, workdir=workdir,
            values=self.check_values(task, workspace), log_dir=log_path.with_suffix(""),
            slots=slots or self.slots, cache=CheckCache(db) if self.use_cache else None,
            listener=RowListener(runs, parent, task.id, task.patchset, tree, log_path), cancel=cancel,
            outcomes=outcomes,
        )  # fmt: skip
        # Rejected on checks that passed before on the same content: checked once more (runner.flaky).
        return check_with_rerun(
            graph, outcomes, log_path, task.id,
            lambda rerun_of: RowListener(runs, parent, task.id, task.patchset, tree, log_path, rerun_of=rerun_of),
        )  # fmt: skip

    def start_verify(self, task: Task, dev: RunRecord) -> None:
        """Start verification of the commit the dev attempt brought in, in a worker thread."""
        log_path = self.p.layout.task_log(task.id, f"verify-p{task.patchset}-{int(time.time() * 1000)}")
        # The sha under judgement is recorded: it, and only it, is what integrates if it passes.
        commit = dev.after_sha or self.p.git.rev(task_ref(task.id)) or ""
        row = self.p.runs.start(task.id, Phase.VERIFY, task.patchset, log_path=str(log_path), after_sha=commit)
        workspace = self.p.layout.check(task.id, row)
        self.p.runs.update(row, workspace=str(workspace))
        cancel = threading.Event()
        future = self.pool.submit(self.verify_worker, task, row, commit, log_path, cancel)
        future.add_done_callback(lambda _: self.p.wake.set())
        self.verifying[task.id] = (row, future)
        self.cancels[task.id] = cancel
        killpoints.reached("verify-started")

    def verify_worker(
        self, task: Task, row: int, commit: str, log_path: Path, cancel: threading.Event | None = None
    ) -> VerifyResult:
        """In a verify worker: the commit's shape and secrets, then the graph's verify phases on a
        pristine checkout of it (with the worker's own connection for the phases' rows)."""
        db = self.p.open_worker_db()
        try:

            def check(sha: str) -> VerifyResult:
                return self.check_stage(
                    db, "verify", task, row, sha, lambda: self.check_out_for_verify(task.id, sha, row), log_path,
                    cancel,
                )  # fmt: skip

            return verify_task(self.p.git, task.id, self.p.config.base, commit, check, self.p.secrets)
        finally:
            db.close()

    def check_out_for_verify(self, task_id: str, sha: str, row: int) -> Path:
        """In the verify worker: the pristine checkout of the commit under judgement."""
        path = self.p.workspaces.check_out(task_id, sha, row)
        killpoints.reached("verify-checked-out")
        return path

    def collect_verifies(self, wait: bool = False) -> bool:
        """Apply the results of finished verifications (all of them, waiting, with ``wait``).

        Each outcome and the status it implies are one transaction, applied only while the task is
        still in progress: a person's status change meanwhile stands.
        """
        acted = False
        for task_id, (row, future) in list(self.verifying.items()):
            if not wait and not future.done():
                continue
            del self.verifying[task_id]
            self.cancels.pop(task_id, None)
            acted = True
            try:
                result = future.result()
            except Exception as exc:  # a git or I/O failure in the worker is no fault of the task's
                result = VerifyResult(VerifyStatus.FAULT, f"verification could not run: {exc}")
            with self.p.db.write():
                status = self.p.store.status_of(task_id) or TaskStatus.CANCELLED
                if status is not TaskStatus.IN_PROGRESS:
                    self.p.runs.finish(row, RunStatus.CANCELLED, error=f"a person set the task to {status.value}")
                else:
                    self.apply_verification(task_id, row, result)
            if status is not TaskStatus.IN_PROGRESS:
                self.p.release_cancelled(task_id)
                continue
            if result.status is VerifyStatus.FAULT:
                self.p.faults.record("verify", f"verification of {task_id}: {result.summary}")
            else:
                self.p.faults.clear("verify")
            killpoints.reached("verified")
        return acted

    def stop_cancelled(self) -> None:
        """End the checks of verifications whose task a person moved meanwhile (cancelled, say):
        their outcome would be discarded anyway (see collect_verifies)."""
        for task_id, cancel in self.cancels.items():
            if cancel.is_set():
                continue
            if self.p.store.status_of(task_id) is not TaskStatus.IN_PROGRESS:
                logger.info("{}: a person moved the task; stopping its verification", task_id)
                cancel.set()

    def apply_verification(self, task_id: str, row: int, result: VerifyResult) -> None:
        """Record a verification's outcome and move the task as it implies (in the caller's transaction)."""
        move = VERIFY_MOVES[result.status]
        self.p.runs.finish(row, move.run, error=None if move.run is RunStatus.SUCCESS else result.summary)
        if move.then is Then.KEEP:
            return  # a fault: the verification is done again once it clears
        if result.status is VerifyStatus.FAIL:
            # The comment and the run keep the output's tail (the next prompt's feedback); the log
            # line and a needs-help reason take only the headline, so a failing test's traceback
            # is never mistaken in the runner's log for one of its own.
            headline = (result.summary.splitlines() or ["verification failed"])[0]
            logger.info("{}: verification failed: {}", task_id, headline)
            self.p.store.comment(task_id, f"Pipeline: verification failed:\n{result.summary}", Author.SYSTEM)
            self.p.settle(task_id, move, headline)
            return
        skipped = f"; skipped: {', '.join(result.skipped)}" if result.skipped else ""
        notes = {
            VerifyStatus.PASS: f"verification passed{skipped}{optional_failures(result)}",
            VerifyStatus.SKIP: f"verification skipped ({result.summary}), promoting",
        }
        if result.status is VerifyStatus.UNCHECKED:
            # The configuration checked nothing: not the task's fault, so no retry is spent, and
            # trying again would check nothing again. A person changes the config.
            notes[result.status] = (
                f"verification skipped, no check ran ({result.summary}); promoting because allow_unchecked is true"
                if self.p.config.allow_unchecked
                else "needs help: no check ran on it, so it was not promoted. Configure phases "
                "that apply to it (key 'phases') or set allow_unchecked: true, then "
                f"`pipeline-runner task set-status {task_id} open`. Why: {result.summary}"
            )
        self.p.settle(task_id, move, result.summary, notes[result.status])


def optional_failures(result: VerifyResult) -> str:
    """The optional phases that failed, for the task's comment (they reject nothing, but a person
    should see them)."""
    failed = [o for o in result.phases if o.optional and o.state is PhaseState.FAILED]
    if not failed:
        return ""
    return "; optional phase(s) failed: " + "; ".join(
        f"{o.name}: {(o.summary.splitlines() or [''])[0]}" for o in failed
    )
