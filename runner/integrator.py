"""The integration executor: a stack of candidates, checked side by side, landed in order.

Verified tasks are stacked in queue order, the way a merge queue with dependent pipelines gates
changes: candidate 1 is base's tip plus task 1, candidate 2 is candidate 1 plus task 2, and so on
up to ``integrate.window``. Each candidate is computed in the repository without a checkout
(phases.integrate.build) and checked in its own pristine checkout by a worker thread; the loop's
thread alone moves base, with a compare-and-swap, to the bottom candidate once it passed, then to
the next. A candidate that fails is judged only once everything below it has landed: its task is
rejected then, and the candidates above it, built on it, are built again without it. A person's
push to base rebuilds the whole stack on the new tip. So every commit base gets passed the
integrate phases on exactly its own tree (phases.integrate), and each outcome moves its task as
the task's life says (runner.lifecycle).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phases.integrate import (
    Candidate,
    IntegrateResult,
    base_checkout,
    build,
    judge_checks,
    land_chain,
    refusal,
)
from phases.outcomes import IntegrateStatus
from phases.verify import VerifyResult
from runner import killpoints, receipts, recovery
from runner.basesync import AREA
from runner.lifecycle import INTEGRATE_MOVES, Move, Then
from runner.logs import logger
from runner.state import Phase, Runs, RunStatus
from runner.status import REBUILT
from runner.tasks import Task, TaskStatus
from runner.workspace import remove_tree

if TYPE_CHECKING:
    from runner.scheduler import Pipeline


@dataclass
class Slot:
    """One candidate of the stack and the check running on it."""

    task: Task
    row: int
    candidate: Candidate
    log_path: Path
    cancel: threading.Event
    future: Future[VerifyResult]


class Integrator:
    """The integration stack of one pipeline."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.p = pipeline
        self.window = pipeline.config.integrate_window
        # Recipes of the candidates run at once up to the window, beside the verifications' own
        # limit, so landing never waits behind the checks of new work.
        self.slots = threading.BoundedSemaphore(self.window)
        # Twice the window: the checks of dropped candidates end their recipes, but may still hold
        # a worker for a moment.
        self.pool = ThreadPoolExecutor(max_workers=2 * self.window, thread_name_prefix="integrate")
        self.stack: list[Slot] = []
        # Tasks whose change did not apply on a candidate that may yet not land, with that
        # candidate: tried again when what is below them has changed.
        self.skipped: dict[str, str] = {}
        self.integrate_paused_until = 0.0

    def close(self) -> None:
        """Stop the workers (integrations not recorded are found again on the next start)."""
        for slot in self.stack:
            slot.cancel.set()
        self.pool.shutdown(wait=False, cancel_futures=True)

    @property
    def busy(self) -> bool:
        """Whether a candidate is being checked or waits to land."""
        return bool(self.stack)

    def in_flight(self, task_id: str) -> bool:
        """Whether ``task_id`` has a candidate in the stack."""
        return any(slot.task.id == task_id for slot in self.stack)

    # -- the cycle's step ------------------------------------------------------------------------

    def integrate_step(self, verified: list[Task]) -> bool:
        """Land the candidates at the bottom of the stack that passed, reject one that failed,
        then fill the stack up to the window with the next verified tasks in queue order. Nothing
        new is stacked while the cycle's preflight holds work (a red base, a missing program): its
        checks would fail for base's fault and be charged to the task. With base on a remote, the
        local base is brought to the remote's first (runner.basesync)."""
        acted = self.sync_base()
        acted |= self.collect_integration()
        if self.p.basesync is not None and not self.p.basesync.in_step:
            # A push found base moved on the remote: candidates are built on its new tip.
            acted |= self.sync_base()
        if not self.p.ready_to_start or not self.may_move() or time.time() < self.integrate_paused_until:
            return acted
        if acted:  # `verified` predates these outcomes
            verified = self.p.store.list_tasks(TaskStatus.VERIFIED, with_comments=False)
        return self.fill(verified) or acted

    def sync_base(self) -> bool:
        """With base on a remote, bring the local base to the remote's; a candidate of ours found
        there (pushed before a kill, before it was recorded) marks its task done. True when
        that happened."""
        if self.p.basesync is None or not self.p.basesync.sync() or not self.p.basesync.moved:
            return False
        tip = self.p.watch.tip()
        if tip is not None and self.p.basesync.vouched(tip):
            self.p.preflight.landed(tip)  # landed by a runner elsewhere: its checks passed on its tree
        return bool(recovery.finish_landings(self.p))

    def may_move(self) -> bool:
        """Whether base may be moved now (no fault holds it; its ref is not locked)."""
        if self.p.base_suspect() or self.p.watch.ref_locked():
            return False
        if self.p.basesync is not None and not self.p.basesync.in_step:
            self.p.paused(AREA)  # wake when its delay is up
            return False  # the remote could not be read, or base here is not its mirror (a fault)
        if self.p.watch.checkout_lagging():
            self.p.paused("checkout")
            return False
        return not self.p.paused("integrate")

    def collect_integration(self) -> bool:
        """Apply what the finished checks at the bottom of the stack say, in order."""
        acted = self.drop_moved()
        if not self.stack:
            return acted
        tip = self.p.watch.tip()
        if tip is None:
            # A person deleted base: nothing can land, and that is no task's doing. A fault says so
            # (the run ends asking for attention rather than reporting nothing to do).
            reason = f"{self.p.config.base} was deleted outside the runner; nothing lands until it is back"
            self.drop(0, reason)
            self.p.faults.record("integrate", reason)
            return True
        if tip != self.stack[0].candidate.parent:
            # A person pushed to base: every candidate is built on a tip that is gone.
            logger.info("{} moved to {}; building the integration stack again on it", self.p.config.base, str(tip)[:12])
            self.drop(0, f"{self.p.config.base} moved to {str(tip)[:12]} outside the runner; built again on it")
            return True
        while self.stack and self.stack[0].future.done():
            if not self.may_move():
                break
            self.finish_bottom()
            acted = True
            self.p.between()
        return acted

    def drain(self) -> None:
        """Land (or reject) everything the stack can take now, waiting for its checks: the end of a
        `run --once`, so that one invocation lands every task whose integration is ready."""
        while True:
            verified = self.p.store.list_tasks(TaskStatus.VERIFIED, with_comments=False)
            acted = self.integrate_step(verified)
            if not self.stack:
                if not acted:
                    return
                continue
            bottom = self.stack[0]
            if not bottom.future.done():
                wait([bottom.future])
            elif not acted:
                return  # its result waits on a fault (a lock, a person's push held): not now

    # -- the stack -------------------------------------------------------------------------------

    def fill(self, verified: list[Task]) -> bool:
        """Stack the next verified tasks, in queue order, on the top candidate (or base's tip)."""
        if len(self.stack) >= self.window:
            return False
        tip = self.p.watch.tip()
        if tip is None:
            return False
        stacked = {slot.task.id for slot in self.stack}
        acted = False
        for task in self.p.order([t for t in verified if self.p.eligible(t) and t.id not in stacked]):
            if len(self.stack) >= self.window:
                break
            self.p.between()
            parent = self.stack[-1].candidate.sha if self.stack else tip
            if self.stack and self.skipped.get(task.id) == parent:
                continue  # at the bottom, on base's tip itself, a conflict is the task's own
            commit = self.verified_sha(task.id)
            if commit is None and self.p.basesync is not None and not self.p.basesync.reachable:
                break  # the remote that may hold it could not be asked: no task's fault
            if commit is None:
                # Not the task's failure: its commit is gone (the host that verified it died before
                # it could publish it, say). Developed again, uncharged, as on a rewritten base.
                row = self.p.runs.start(task.id, Phase.INTEGRATE, task.patchset)
                reason = (
                    f"the commit that passed verification of {task.id} is not recorded here or on the remote; "
                    "developing again (not charged)"
                )
                with self.p.db.write():
                    self.p.runs.finish(row, RunStatus.CANCELLED, error=reason)
                    self.p.settle(task.id, Move(RunStatus.CANCELLED, Then.REDEVELOP, new_patchset=True), reason, reason)
                acted = True
                continue
            built = build(
                self.p.git, self.p.config.base, parent, commit, task_id=task.id, secrets=self.p.secrets
            )
            if isinstance(built, IntegrateResult) and self.stack and built.status in (
                IntegrateStatus.CONFLICT, IntegrateStatus.EMPTY,
            ):  # fmt: skip
                # Judged against a candidate that may not land: tried again once what is below
                # it has landed or been dropped.
                self.skipped[task.id] = parent
                continue
            self.skipped.pop(task.id, None)
            acted = True
            if not isinstance(built, IntegrateResult) and not self.stack:
                # Refused before the recipes, which may take long, and again before the swap.
                checkout = base_checkout(self.p.git, self.p.config.base)
                built = refusal(self.p.git, self.p.config.base, checkout, tip, built.sha) or built
            if isinstance(built, IntegrateResult):
                row = self.p.runs.start(task.id, Phase.INTEGRATE, task.patchset, before_sha=commit)
                self.record(task, row, built, tip)
                if built.status is IntegrateStatus.REFUSED:
                    break
                continue
            self.push(task, commit, built)
        return acted

    def push(self, task: Task, commit: str, candidate: Candidate) -> None:
        """Record the attempt and start the check of its candidate in a worker."""
        log_path = self.p.layout.task_log(task.id, f"integrate-p{task.patchset}-{int(time.time() * 1000)}")
        row = self.p.runs.start(
            task.id, Phase.INTEGRATE, task.patchset, before_sha=commit, log_path=str(log_path),
        )  # fmt: skip
        self.p.runs.update(row, workspace=str(self.p.layout.integration_attempt(row)))
        log_path.parent.mkdir(parents=True, exist_ok=True)
        below = [slot.task.id for slot in self.stack]
        with log_path.open("a", encoding="utf-8") as log:
            log.write(
                f"candidate {candidate.sha}: {task.id} ({commit[:12]}) on "
                + (f"the candidate of {below[-1]} ({candidate.parent[:12]}), stacked on {', '.join(below)}\n"
                   if below else f"{self.p.config.base} ({candidate.parent[:12]})\n")
            )  # fmt: skip
        cancel = threading.Event()
        future = self.pool.submit(self.check_worker, task, row, candidate.sha, log_path, cancel)
        future.add_done_callback(lambda _: self.p.wake.set())
        self.stack.append(Slot(task, row, candidate, log_path, cancel, future))
        killpoints.reached("integrate-started")

    def check_worker(
        self, task: Task, row: int, sha: str, log_path: Path, cancel: threading.Event
    ) -> VerifyResult:
        """In a worker: the graph's integrate phases on a pristine checkout of the candidate, with
        the worker's own connection for the phases' rows; the checkout is removed after."""
        db = self.p.open_worker_db()
        try:
            return self.p.verifier.check_stage(
                db, "integrate", task, row, sha, lambda: self.p.workspaces.check_out_candidate(sha, row), log_path,
                cancel, slots=self.slots,
            )  # fmt: skip
        finally:
            db.close()
            remove_tree(self.p.layout.integration_attempt(row))

    def drop(self, start: int, reason: str) -> None:
        """Drop the candidates from ``start`` up (they are built on something that will not land):
        their checks end, their rows are closed uncharged, and they are built again next cycle."""
        for slot in self.stack[start:]:
            slot.cancel.set()
            self.p.runs.finish(slot.row, RunStatus.CANCELLED, error=REBUILT + reason)
            logger.info("{}: candidate {} dropped: {}", slot.task.id, slot.candidate.sha[:12], reason)
        del self.stack[start:]

    def drop_moved(self) -> bool:
        """Take out of the stack the tasks a person moved (cancelled, reopened) meanwhile; what was
        stacked on them is built again."""
        for index, slot in enumerate(self.stack):
            task_id = slot.task.id
            now = self.p.store.status_of(task_id)
            if now is TaskStatus.VERIFIED:
                continue
            status = "deleted" if now is None else now.value
            logger.info("{}: a person set the task to {}; stopping its integration", task_id, status)
            slot.cancel.set()
            self.p.runs.finish(slot.row, RunStatus.CANCELLED, error=f"a person set the task to {status} during integration")
            del self.stack[index]
            self.drop(index, f"{task_id}, below it, was taken out of the stack by a person")
            self.p.release_cancelled(task_id)
            return True
        return False

    def finish_bottom(self) -> None:
        """The bottom candidate's check has ended: land it if it passed, with the candidates above
        it whose checks passed too (one move of base, one push), otherwise reject its task
        (everything below it has landed, so the failure is its own) and drop what is above it."""
        slot = self.stack[0]
        base = self.p.config.base
        try:
            checked = slot.future.result()
        except Exception as exc:  # a git or I/O failure in the worker is no fault of the task's
            del self.stack[0]
            self.p.runs.finish(slot.row, RunStatus.CANCELLED, error=f"integration failed: {exc}")
            self.p.faults.record("integrate", f"integration of {slot.task.id} failed: {exc}")
            self.drop(0, f"the integration of {slot.task.id}, below it, failed")
            return
        result = judge_checks(checked, base, slot.candidate.parent, allow_unchecked=self.p.config.allow_unchecked)
        if result is not None:
            del self.stack[0]
            self.drop(0, f"{slot.task.id}, below it, did not land ({result.status.value})")
            self.record(slot.task, slot.row, result, slot.candidate.parent)
            return
        passed = {slot.candidate.sha: (slot, checked), **self.passed_above()}
        results = land_chain(
            self.p.git, base, [slot.candidate for slot, _ in passed.values()], base_checkout(self.p.git, base),
            before_swap=lambda sha: self.before_swap(passed[sha][0].task.id, passed[sha][0].row, sha),
            receipt=lambda sha: receipts.render(self.receipt_data(self.p.runs, passed[sha][0].task, sha, passed[sha][1])),
            push=self.p.basesync.push if self.p.basesync is not None else None,
        )  # fmt: skip
        if results is None:
            self.drop(0, f"{base} moved before it could land; built again on the new tip")
            return
        for outcome in results:
            slot = self.stack.pop(0)
            if outcome.status is not IntegrateStatus.INTEGRATED:
                self.drop(0, f"{slot.task.id}, below it, did not land ({outcome.status.value})")
            self.record(slot.task, slot.row, outcome, slot.candidate.parent)

    def passed_above(self) -> dict[str, tuple[Slot, VerifyResult]]:
        """The candidates right above the bottom one whose checks have passed, in order, up to the
        first that has not (yet): they land with it."""
        passed: dict[str, tuple[Slot, VerifyResult]] = {}
        for slot in self.stack[1:]:
            if not slot.future.done() or slot.future.cancelled() or slot.future.exception() is not None:
                break
            checked = slot.future.result()
            if judge_checks(checked, self.p.config.base, slot.candidate.parent,
                            allow_unchecked=self.p.config.allow_unchecked) is not None:  # fmt: skip
                break
            passed[slot.candidate.sha] = (slot, checked)
        return passed

    def before_swap(self, task_id: str, row: int, sha: str) -> str | None:
        """Right before base moves: the task is still to land (a person's change lands before or
        after, under one lock), and the candidate is recorded, so a kill after the swap is
        recognised on restart."""
        with self.p.db.write():
            status = self.p.store.status_of(task_id) or TaskStatus.CANCELLED
            if status is not TaskStatus.VERIFIED:
                return f"a person set the task to {status.value} during integration; base was not moved"
            self.p.runs.update(row, after_sha=sha)
        killpoints.reached("before-swap")
        return None

    def verified_sha(self, task_id: str) -> str | None:
        """The commit that passed the task's last verification, if it is still in the repository."""
        rec = self.p.runs.last_attempt(task_id, Phase.VERIFY)
        # A skip that promoted the task (allow_unchecked, or a skip code after a pass) counts too.
        if rec is None or rec.status not in (RunStatus.SUCCESS, RunStatus.SKIPPED) or rec.after_sha is None:
            return None
        sha = self.p.git.rev(rec.after_sha)
        if sha is None and self.p.basesync is not None:
            sha = self.p.basesync.fetch_commit(task_id, rec.after_sha)  # verified on another host
        return sha

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
        tree = self.p.git.tree_of(sha)
        stages.append({"stage": "integrate", "commit": sha, "tree": tree,
                       "phases": receipts.phase_entries(checked.phases)})  # fmt: skip
        return {
            "task": task.id,
            "title": task.title,
            "patchset": task.patchset,
            "base": self.p.config.base,
            "agent_run": dev.agent_run_id if dev is not None else None,
            "cost_cents": runs.total_cost(task.id),
            "tree": tree,
            "landed_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "checks": stages,
        }

    # -- outcomes --------------------------------------------------------------------------------

    def record(self, task: Task, row: int, result: IntegrateResult, tip: str) -> None:
        """Record the outcome of one candidate as the task's life says. ``tip``: base's tip the
        candidate was judged on (a rejected task is developed again from there)."""
        task_id = task.id
        move = INTEGRATE_MOVES[result.status]
        status = self.p.store.status_of(task_id) or TaskStatus.CANCELLED
        if result.status is not IntegrateStatus.INTEGRATED and status is not TaskStatus.VERIFIED:
            # A person moved (cancelled) the task meanwhile: whatever its checks said, stopped or
            # not, is neither the task's failure nor a fault of the machine.
            self.p.runs.finish(row, RunStatus.CANCELLED, error=f"a person set the task to {status.value} during integration")
            logger.info("integration of {} stopped: a person set it to {}", task_id, status.value)
            self.p.release_cancelled(task_id)
            return
        if result.status is IntegrateStatus.INTEGRATED:
            # Its workspace goes first: once the task shows done, nothing of it is left (a kill
            # in between is finished by recovery, which finds the candidate on base).
            self.p.workspaces.release(task_id)
            with self.p.db.write():
                self.p.runs.finish(row, move.run, after_sha=result.detail)
                self.p.finish_done(task_id, result.detail, release=False)
            self.p.preflight.landed(result.detail)
            self.p.watch.moved_by_runner(tip, result.detail)
            killpoints.reached("integrated")
            if result.lag is not None:
                self.p.watch.checkout_lags(result.lag)
            self.p.faults.clear("integrate")
            return
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
            return
        label = {
            IntegrateStatus.CONFLICT: "integration conflict, redeveloping on the new base",
            IntegrateStatus.CHECKS_FAILED: "post-integration checks failed, redeveloping on the new base",
            IntegrateStatus.EMPTY: "the commit is empty on the new base, redeveloping",
            IntegrateStatus.STALE: "base was rewritten under it, redeveloping on the new base (not charged)",
            IntegrateStatus.UNCHECKED: "needs help: no integrate check ran on it, so base was not moved. "
            "Configure phases that apply at integration or set allow_unchecked: true, then "
            f"`pipeline-runner task set-status {task_id} open`. Why",
        }[result.status]
        if move.new_patchset:
            self.p.workspaces.reset_onto(task_id, tip, self.p.config.base)
        with self.p.db.write():
            self.p.runs.finish(row, move.run, error=result.detail)
            self.p.settle(task_id, move, result.detail, f"{label}: {result.detail}")
