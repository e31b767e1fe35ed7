"""The integration executor: one verified task at a time, in a worker thread beside the loop.

It computes the candidate, has the graph's integrate phases check it, attaches the receipt, and
moves base with a compare-and-swap (phases.integrate); then it records the outcome as the task's
life says (runner.lifecycle).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger

from phases.integrate import IntegrateResult, IntegrateStatus, integrate
from phases.verify import VerifyResult
from runner import killpoints, receipts
from runner.lifecycle import INTEGRATE_MOVES, Then
from runner.state import Phase, Runs, RunStatus, open_db
from runner.tasks import Task, TaskStatus, open_task_source

if TYPE_CHECKING:
    from runner.scheduler import Pipeline


class Integrator:
    """Integrations of one pipeline, one at a time."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.p = pipeline
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="integrate")
        self.integrating: tuple[str, int, Future[IntegrateResult]] | None = None
        self.cancel = threading.Event()  # set: a person moved the task integrating; its checks end
        self.integrate_paused_until = 0.0

    def close(self) -> None:
        """Stop the worker (an integration not recorded is found again on the next start)."""
        self.pool.shutdown(wait=False, cancel_futures=True)

    def integrate_step(self, verified: list[Task]) -> bool:
        """Apply a finished integration, then start the next, most urgent one.

        Integrations run one at a time in a worker thread, beside the loop, so that agents that
        finish meanwhile are harvested and their slots refilled without waiting for it.
        """
        if self.collect_integration():
            return True  # `verified` predates that outcome; the next cycle, at once, starts another
        if self.integrating is not None or time.time() < self.integrate_paused_until:
            return False
        if self.p.base_suspect() or self.p.watch.ref_locked():
            return False
        if self.p.watch.checkout_lagging():
            self.p.paused("checkout")
            return False
        if self.p.paused("integrate"):
            return False
        for task in self.p.order([t for t in verified if self.p.eligible(t)]):
            self.start_integration(task)
            return True
        return False

    def start_integration(self, task: Task) -> None:
        """Record the attempt and hand it to the integration worker."""
        commit = self.verified_sha(task.id)
        if commit is None:
            row = self.p.runs.start(task.id, Phase.INTEGRATE, task.patchset)
            reason = f"the commit that passed verification of {task.id} is not recorded; developing again"
            self.p.runs.finish(row, RunStatus.FAILURE, error=reason)
            self.p.note(task.id, reason)
            self.p.fail(task.id, reason, new_patchset=True)
            return
        log_path = self.p.layout.task_log(task.id, f"integrate-p{task.patchset}-{int(time.time() * 1000)}")
        row = self.p.runs.start(
            task.id, Phase.INTEGRATE, task.patchset, before_sha=commit,
            log_path=str(log_path),
        )  # fmt: skip
        self.p.runs.update(row, workspace=str(self.p.layout.integration_attempt(row)))
        self.cancel = threading.Event()
        future = self.pool.submit(self.integrate_worker, row, task, commit, log_path, self.cancel)
        future.add_done_callback(lambda _: self.p.wake.set())
        self.integrating = (task.id, row, future)
        killpoints.reached("integrate-started")

    def verified_sha(self, task_id: str) -> str | None:
        """The commit that passed the task's last verification, if it is still in the repository."""
        rec = self.p.runs.last_attempt(task_id, Phase.VERIFY)
        # A skip that promoted the task (allow_unchecked, or a skip code after a pass) counts too.
        if rec is None or rec.status not in (RunStatus.SUCCESS, RunStatus.SKIPPED) or rec.after_sha is None:
            return None
        return self.p.git.rev(rec.after_sha)

    def stop_cancelled(self) -> None:
        """End the checks of the integration in flight if a person moved its task meanwhile: it
        would not land anyway (before_swap refuses), so its recipes need not run to their end."""
        if self.integrating is None or self.cancel.is_set():
            return
        task_id = self.integrating[0]
        if not self.p.store.exists(task_id) or self.p.store.get(task_id).status is not TaskStatus.VERIFIED:
            logger.info("{}: a person moved the task; stopping its integration", task_id)
            self.cancel.set()

    def integrate_worker(
        self, row: int, task: Task, commit: str, log_path: Path, cancel: threading.Event | None = None
    ) -> IntegrateResult:
        """In the worker thread: cherry-pick, check, swap base; clean up after a success.

        The candidate sha is written to the run's row (through the thread's own connection)
        before base moves, so that a crash right after the swap is recognised on restart.
        """
        db = open_db(self.p.config.state_db)
        try:
            runs = Runs(db)
            store = open_task_source(self.p.config.tasks.source, db)

            def before_swap(sha: str) -> str | None:
                # Read and written under one lock: a person's status change lands before or after.
                with db.write():
                    status = store.get(task.id).status
                    if status is not TaskStatus.VERIFIED:
                        return f"a person set the task to {status.value} during integration; base was not moved"
                    runs.update(row, after_sha=sha)
                killpoints.reached("before-swap")
                return None

            def check(sha: str) -> VerifyResult:
                return self.p.verifier.check_stage(
                    db, "integrate", task, row, sha, lambda: self.p.workspaces.check_out_candidate(sha, row), log_path,
                    cancel,
                )  # fmt: skip

            def receipt(sha: str, checked: VerifyResult) -> str:
                return receipts.render(self.receipt_data(runs, task, sha, checked))

            result = integrate(
                self.p.git,
                check,
                self.p.config.base,
                commit,
                before_swap=before_swap,
                receipt=receipt,
                task_id=task.id,
                secrets=self.p.secrets,
                allow_unchecked=self.p.config.allow_unchecked,
            )
        finally:
            db.close()
        if result.status is IntegrateStatus.INTEGRATED:
            self.p.workspaces.release(task.id)
        return result

    def receipt_data(self, runs: Runs, task: Task, sha: str, checked: VerifyResult) -> dict[str, Any]:
        """What the receipt on the candidate ``sha`` says: the task, its agent run and cost, and
        each phase that passed for it, at verify on the task's commit and at integration on ``sha``."""
        dev = runs.last_attempt(task.id, Phase.DEV)
        verify = runs.last_attempt(task.id, Phase.VERIFY)
        stages = []
        if verify is not None:
            records = runs.checks([verify.id])[verify.id]
            stages.append({"stage": "verify", "commit": verify.after_sha, "tree": verify.tree,
                           "phases": receipts.record_entries(records)})  # fmt: skip
        stages.append({"stage": "integrate", "commit": sha, "tree": self.p.git.tree_of(sha),
                       "phases": receipts.phase_entries(checked.phases)})  # fmt: skip
        return {
            "task": task.id,
            "title": task.title,
            "patchset": task.patchset,
            "base": self.p.config.base,
            "agent_run": dev.agent_run_id if dev is not None else None,
            "cost_cents": runs.total_cost(task.id),
            "tree": self.p.git.tree_of(sha),
            "landed_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "checks": stages,
        }

    def collect_integration(self, wait: bool = False) -> bool:
        """Record the outcome of the integration in flight, if it has finished (or, waiting, once it has)."""
        if self.integrating is None:
            return False
        task_id, row, future = self.integrating
        if not wait and not future.done():
            return False
        self.integrating = None
        try:
            result = future.result()
        except Exception as exc:  # a git or I/O failure in the worker is no fault of the task's
            self.p.runs.finish(row, RunStatus.CANCELLED, error=f"integration failed: {exc}")
            self.p.faults.record("integrate", f"integration of {task_id} failed: {exc}")
            return True
        move = INTEGRATE_MOVES[result.status]
        status = self.p.store.get(task_id).status
        if result.status is not IntegrateStatus.INTEGRATED and status is not TaskStatus.VERIFIED:
            # A person moved (cancelled) the task meanwhile: whatever its checks said, stopped or
            # not, is neither the task's failure nor a fault of the machine.
            self.p.runs.finish(row, RunStatus.CANCELLED, error=f"a person set the task to {status.value} during integration")
            logger.info("integration of {} stopped: a person set it to {}", task_id, status.value)
            self.p.release_cancelled(task_id)
            return True
        if result.status is IntegrateStatus.INTEGRATED:
            with self.p.db.write():
                self.p.runs.finish(row, move.run, after_sha=result.detail)
                self.p.finish_done(task_id, result.detail, release=False)
            self.p.preflight.landed(result.detail)
            killpoints.reached("integrated")
            if result.lag is not None:
                self.p.watch.checkout_lags(result.lag)
            self.p.workspaces.release(task_id)
            self.p.faults.clear("integrate")
            return True
        if move.then is Then.KEEP:
            self.p.runs.finish(row, move.run, error=result.detail)
            if result.status is IntegrateStatus.FAULT:
                self.p.faults.record("integrate", f"integration of {task_id}: {result.detail}")
            elif result.status is IntegrateStatus.STOPPED:
                logger.info("integration of {} stopped: {}", task_id, result.detail)
                self.p.release_cancelled(task_id)
            else:
                logger.error("integration of {} refused: {}", task_id, result.detail)
                # Whatever refused it (a dirty checkout) needs a person; try again after an interval.
                self.integrate_paused_until = time.time() + self.p.config.interval
            return True
        label = {
            IntegrateStatus.CONFLICT: "integration conflict, redeveloping on the new base",
            IntegrateStatus.CHECKS_FAILED: "post-integration checks failed, redeveloping on the new base",
            IntegrateStatus.EMPTY: "the commit is empty on the new base, redeveloping",
            IntegrateStatus.UNCHECKED: "needs help: no integrate check ran on it, so base was not moved. "
            "Configure phases that apply at integration or set allow_unchecked: true, then "
            f"`pipeline-runner task set-status {task_id} open`. Why",
        }[result.status]
        moved = self.p.store.get(task_id).status is not TaskStatus.VERIFIED
        if result.new_base and move.new_patchset and not moved:
            self.p.workspaces.reset_onto(task_id, result.new_base, self.p.config.base)
        with self.p.db.write():
            self.p.runs.finish(row, move.run, error=result.detail)
            # A person who moved the task meanwhile decided; the outcome changes nothing then.
            if self.p.store.get(task_id).status is TaskStatus.VERIFIED:
                self.p.settle(task_id, move, result.detail, f"{label}: {result.detail}")
        return True
