"""The loop. One cycle: integrate verified tasks, harvest agents and verify, then develop.

Everything the loop needs to continue lives in SQLite and git, not in memory: a later process
(the next cron `run --once`, or a restart after a crash) harvests the agents an earlier one started.
Verification runs in worker threads beside the loop; only the loop's thread touches the database.
"""

from __future__ import annotations

import enum
import os
import shutil
import signal
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import tenacity
from loguru import logger

from phases.agents import AgentBackend, AgentHandle, AgentOutcome, AgentState
from phases.backends import make_backend
from phases.dev import (
    DevResult,
    DevStatus,
    build_prompt,
    fold_commits,
    judge,
    left_work_message,
    prompt_template,
    recipe_texts,
    start_agent,
)
from phases.integrate import (
    IntegrateResult,
    IntegrateStatus,
    integrate,
)
from phases.verify import RecipeRun, VerifyResult, VerifyStatus, counts_as_passed, verify_task
from runner import killpoints
from runner.basewatch import BaseWatch
from runner.config import PipelineConfig
from runner.errors import PipelineError, ProcessError
from runner.faults import FaultBoard
from runner.git import Git
from runner.lock import RunnerLock
from runner.logs import add_file_sink
from runner.redact import agent_secrets
from runner.state import Database, Phase, RunRecord, Runs, RunStatus, open_db, parse_iso
from runner.status import held_integration
from runner.tasks import Author, BuiltinTaskStore, Task, TaskStatus, TaskType, open_task_source
from runner.waking import Waker
from runner.workspace import TASK_REFS, Layout, Workspaces, task_ref

BACKOFF_CAP_SECONDS = 600.0
AGENT_ENVIRONMENT = "agent-environment"
# Retries a fault gets before a batch run (`--until-idle`) gives up waiting for it.
FAULT_PATIENCE = 3  # the cause of a dev fault reported by the agent itself
CHEAP_POLL_SECONDS = 0.02
# With pidfds an agent's exit wakes the loop at once; this slower look covers a supervisor whose
# pid was taken by another process.
PIDFD_RECHECK_SECONDS = 1.0


class Gate(enum.StrEnum):
    """Whether an open task may start an attempt now."""

    GO = "go"
    RETRIES = "retries"
    COST = "cost"
    BACKOFF = "backoff"


@dataclass(frozen=True)
class GateResult:
    """The gate and, for a backoff, how long is left."""

    gate: Gate
    detail: str = ""
    wait_seconds: float = 0.0


def backoff_delay(interval: float, failures: int) -> float:
    """Seconds to wait after ``failures`` failed attempts: interval * 2^failures, capped at 600."""
    wait = tenacity.wait_exponential(multiplier=interval, max=BACKOFF_CAP_SECONDS)
    state = tenacity.RetryCallState(None, None, (), {})  # type: ignore[arg-type]
    state.attempt_number = failures + 1
    return float(wait(state))


def _ts(value: str) -> float:
    return parse_iso(value).timestamp()


class Pipeline:
    """One pipeline: a config, its state, its repository."""

    def __init__(self, config: PipelineConfig, db: Database, *, dry_run: bool = False) -> None:
        self.config = config
        self.dry_run = dry_run
        self.db = db
        self.store: BuiltinTaskStore = open_task_source(config.tasks.source, db)
        self.runs = Runs(db)
        self.layout = Layout(config.root)
        self.git = Git(config.repo_path)
        self.workspaces = Workspaces(self.git, self.layout)
        self.backend: AgentBackend = make_backend(config.agent)
        self.template = prompt_template(config)
        # The secret values every agent is handed: a commit holding one never lands.
        self.secrets = agent_secrets(config.agent.env, os.environ)
        self.executor = ThreadPoolExecutor(
            max_workers=max(1, config.concurrency), thread_name_prefix="verify"
        )
        self.verifying: dict[str, tuple[int, Future[VerifyResult]]] = {}
        self.cancelling: set[int] = set()  # dev runs this process asked to stop
        self.faults = FaultBoard(
            self.layout.faults_file, lambda n: backoff_delay(config.interval, n), writable=not dry_run
        )
        self.watch = BaseWatch(
            self.git, config.base, self.layout, self.faults, self.store, self.runs, dry_run=dry_run
        )
        self.integrator = ThreadPoolExecutor(max_workers=1, thread_name_prefix="integrate")
        self.integrating: tuple[str, int, Future[IntegrateResult]] | None = None
        self.integrate_paused_until = 0.0
        self.wake = Waker()
        self.next_wake: float | None = None

    # -- helpers -------------------------------------------------------------------------------

    def say(self, message: str) -> None:
        """What a dry run would do, on stdout."""
        print(f"DRY RUN: {message}", flush=True)

    def note(self, task_id: str, message: str) -> None:
        """A system comment on the task, and a log line."""
        logger.info("{}: {}", task_id, " ".join(message.split())[:300])
        self.store.comment(task_id, f"Pipeline: {message}", Author.SYSTEM)

    def base_suspect(self) -> bool:
        """Whether base holds commits the runner did not land. Not looked at while an integration
        is in flight: base has moved then, by the runner's own hand, before the bookkeeping."""
        if self.integrating is not None:
            return "base" in self.faults
        return self.watch.moved_outside()

    def paused(self, area: str) -> bool:
        """Whether ``area`` waits out a fault's delay now (the loop wakes when it is up)."""
        retry_at = self.faults.retry_at(area)
        if retry_at is None:
            return False
        self.next_wake = retry_at if self.next_wake is None else min(self.next_wake, retry_at)
        return True

    def eligible(self, task: Task) -> bool:
        """Work tasks matching --parent / --task-id."""
        if task.type is not TaskType.WORK:
            return False
        if self.config.task_id is not None and task.id != self.config.task_id:
            return False
        return not (self.config.parent is not None and task.parent != self.config.parent)

    @staticmethod
    def order(tasks: list[Task]) -> list[Task]:
        """Highest priority (P0) first, then oldest."""
        return sorted(tasks, key=lambda t: (t.priority, t.created_at, t.id))

    def recipe_run(self, task: Task, workspace: Path, timeout: int) -> RecipeRun:
        """Substitution values and limits for the recipes of one task."""
        return RecipeRun(
            values={
                "namespace": task.namespace,
                "task_id": task.id,
                "workspace": str(workspace),
                "base": self.config.base,
                "patchset": str(task.patchset),
            },
            skip_exit_codes=self.config.phases.verify.skip_exit_codes,
            timeout=timeout,
        )

    def fail(self, task_id: str, reason: str, *, new_patchset: bool = False) -> None:
        """Record a rejection: back to open, or to needs_help when a limit is reached."""
        if new_patchset:
            self.store.bump_patchset(task_id)
        task = self.store.get(task_id)
        verdict = self.gate(task, include_backoff=False)
        if verdict.gate in (Gate.RETRIES, Gate.COST):
            self.store.set_status(task_id, TaskStatus.NEEDS_HELP)
            self.note(task_id, f"needs help: {verdict.detail}. Last failure: {reason}")
            return
        self.store.set_status(task_id, TaskStatus.OPEN)

    def gate(self, task: Task, *, include_backoff: bool = True) -> GateResult:
        """Retry limit (failures of any phase since a person last resumed it), cost cap, backoff."""
        limits = self.config.limits
        failures, last_failure = self.runs.failures_since(task.id, task.resumed_at)
        if limits.max_retries and failures >= limits.max_retries:
            return GateResult(
                Gate.RETRIES, f"{failures} failed attempts reached limits.max_retries={limits.max_retries}"
            )
        if limits.max_task_cost:
            spent = self.runs.total_cost(task.id)
            if spent >= limits.max_task_cost:
                return GateResult(
                    Gate.COST, f"spent {spent:g} cents, reaching limits.max_task_cost={limits.max_task_cost}"
                )
        if include_backoff and failures and last_failure:
            delay = backoff_delay(self.config.interval, failures)
            remaining = _ts(last_failure) + delay - time.time()
            if remaining > 0:
                return GateResult(Gate.BACKOFF, f"backoff {remaining:.1f}s", remaining)
        return GateResult(Gate.GO)

    def awaiting_verify(self, task_id: str) -> RunRecord | None:
        """The dev attempt waiting for verification, if the task's latest attempt is one."""
        latest = self.runs.latest(task_id)
        if latest is not None and latest.phase is Phase.DEV and latest.status is RunStatus.SUCCESS:
            return latest
        return None

    # -- recovery ------------------------------------------------------------------------------

    def reconcile(self) -> None:
        """Bring SQLite, git and the processes back in line after a crash or kill.

        Runs under the runner lock, so no other runner is acting; agents may still be.
        """
        for rec in self.runs.running(Phase.INTEGRATE):
            self.watch.drop_own_locks(_ts(rec.started_at))
        base_sha = self.git.branch_sha(self.config.base)
        # A task whose candidate is on base has landed, whatever its row says (a kill between the
        # swap and the bookkeeping): it is never developed or integrated again.
        for rec in self.runs.landing_candidates():
            if base_sha and self.git.is_ancestor(str(rec.after_sha), base_sha):
                self.watch.repair_after_restart(f"{rec.after_sha}^", base_sha)
                with self.db.write():
                    self.runs.finish(rec.id, RunStatus.SUCCESS)
                    self.finish_done(rec.task_id, str(rec.after_sha), recovered=True, release=False)
                self.workspaces.release(rec.task_id)
        for rec in self.runs.running(Phase.INTEGRATE):
            self.runs.finish(rec.id, RunStatus.CANCELLED, error="runner stopped during integration")
        # Only the runner writes its own refs: a lock there is one a killed fetch of ours left.
        for lock in (self.watch.git_dir / TASK_REFS).glob("**/*.lock"):
            lock.unlink(missing_ok=True)
        for rec in self.runs.running(Phase.DEV):
            if rec.pid is None:
                # Stopped between claiming the task and recording its agent's pid: the agent may
                # have started all the same. Adopt it, so no second agent joins it in its workspace.
                pid = self.backend.find_started(self.handle_of(rec))
                if pid is not None:
                    self.runs.update(rec.id, pid=pid)
                    logger.info("{}: adopted agent run {} (pid {}) after a restart", rec.task_id, rec.agent_run_id, pid)
                else:
                    self.runs.finish(rec.id, RunStatus.CANCELLED, error="runner stopped before the agent started")
        for rec in self.runs.running(Phase.VERIFY):
            self.runs.finish(rec.id, RunStatus.CANCELLED, error="runner stopped during verification")
        # The integration checkout is rebuilt at each integration; one an older version made is a
        # linked worktree, which must be unregistered too.
        self.git.remove_worktree(self.layout.integration)
        running_dev = {r.task_id for r in self.runs.running(Phase.DEV)}
        for task in self.store.list_tasks(status=TaskStatus.IN_PROGRESS):
            if task.id not in running_dev and self.awaiting_verify(task.id) is None:
                self.store.set_status(task.id, TaskStatus.OPEN)
                self.note(task.id, "recovered an in-progress task with no live agent; back to open")
        for task_id in self.workspaces.existing():
            if task_id not in running_dev:
                # A git command of ours killed in this worktree leaves its locks behind.
                self.workspaces.drop_stale_locks(task_id)
        # What the runner keeps for tasks that are done (a kill between landing and cleaning up):
        # read once, not one git call per task of a long history.
        refs = self.git.out("for-each-ref", "--format=%(refname)", TASK_REFS).splitlines()
        kept = set(self.workspaces.existing()) | {r.removeprefix(TASK_REFS) for r in refs}
        for task_id in sorted(kept - running_dev):
            if self.store.exists(task_id) and self.store.get(task_id).status is TaskStatus.DONE:
                self.workspaces.release(task_id)
        self.git.prune_worktrees()

    # -- the cycle -----------------------------------------------------------------------------

    def cycle(self) -> bool:
        """One cycle; True if any task changed state (so another cycle should follow at once)."""
        self.next_wake = None
        self.faults.reload()  # `pipeline-runner resume`, from another process, clears faults there
        # Only the tasks a step can act on are read: a long history of done tasks costs nothing.
        verified = self.store.list_tasks(TaskStatus.VERIFIED, with_comments=False)
        acted = self.integrate_step(verified)
        acted |= self.harvest_step()
        acted |= self.collect_verifies()
        acted |= self.develop_step()
        return acted

    def integrate_step(self, verified: list[Task]) -> bool:
        """Apply a finished integration, then start the next, most urgent one.

        Integrations run one at a time in a worker thread, beside the loop, so that agents that
        finish meanwhile are harvested and their slots refilled without waiting for it.
        """
        if self.collect_integration():
            return True  # `verified` predates that outcome; the next cycle, at once, starts another
        if self.integrating is not None or time.time() < self.integrate_paused_until:
            return False
        if self.base_suspect() or self.watch.ref_locked():
            return False
        if self.watch.checkout_lagging():
            self.paused("checkout")
            return False
        if self.paused("integrate"):
            return False
        for task in self.order([t for t in verified if self.eligible(t)]):
            if self.dry_run:
                self.say(f"would integrate {task.id} into {self.config.base}")
                continue
            self.start_integration(task)
            return True
        return False

    def start_integration(self, task: Task) -> None:
        """Record the attempt and hand it to the integration worker."""
        commit = self.verified_sha(task.id)
        if commit is None:
            row = self.runs.start(task.id, Phase.INTEGRATE, task.patchset)
            reason = f"the commit that passed verification of {task.id} is not recorded; developing again"
            self.runs.finish(row, RunStatus.FAILURE, error=reason)
            self.note(task.id, reason)
            self.fail(task.id, reason, new_patchset=True)
            return
        log_path = self.layout.task_log(task.id, f"integrate-p{task.patchset}-{int(time.time() * 1000)}")
        row = self.runs.start(
            task.id, Phase.INTEGRATE, task.patchset, before_sha=commit,
            log_path=str(log_path),
        )  # fmt: skip
        self.runs.update(row, workspace=str(self.layout.integration_attempt(row)))
        future = self.integrator.submit(self.integrate_worker, row, task, commit, log_path)
        future.add_done_callback(lambda _: self.wake.set())
        self.integrating = (task.id, row, future)
        killpoints.reached("integrate-started")

    def verified_sha(self, task_id: str) -> str | None:
        """The commit that passed the task's last verification, if it is still in the repository."""
        rec = self.runs.last_attempt(task_id, Phase.VERIFY)
        # A skip that promoted the task (allow_unchecked, or a skip code after a pass) counts too.
        if rec is None or rec.status not in (RunStatus.SUCCESS, RunStatus.SKIPPED) or rec.after_sha is None:
            return None
        return self.git.rev(rec.after_sha)

    def integrate_worker(self, row: int, task: Task, commit: str, log_path: Path) -> IntegrateResult:
        """In the worker thread: cherry-pick, check, swap base; clean up after a success.

        The candidate sha is written to the run's row (through the thread's own connection)
        before base moves, so that a crash right after the swap is recognised on restart.
        """
        phases = self.config.phases
        recipes = phases.integrate.run if phases.integrate.run is not None else phases.verify.run
        timeout = phases.integrate.timeout or phases.verify.timeout
        db = open_db(self.config.state_db)
        try:
            runs = Runs(db)
            store = open_task_source(self.config.tasks.source, db)

            def before_swap(sha: str) -> str | None:
                # Read and written under one lock: a person's status change lands before or after.
                with db.write():
                    status = store.get(task.id).status
                    if status is not TaskStatus.VERIFIED:
                        return f"a person set the task to {status.value} during integration; base was not moved"
                    runs.update(row, after_sha=sha)
                killpoints.reached("before-swap")
                return None

            result = integrate(
                self.git,
                lambda sha: self.workspaces.check_out_candidate(sha, row),
                self.config.base,
                commit,
                recipes,
                self.recipe_run(task, self.layout.integration_attempt(row), timeout),
                log_path,
                before_swap=before_swap,
                task_id=task.id,
                secrets=self.secrets,
                allow_unchecked=self.config.allow_unchecked,
            )
        finally:
            db.close()
        if result.status is IntegrateStatus.INTEGRATED:
            self.workspaces.release(task.id)
        return result

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
            self.runs.finish(row, RunStatus.CANCELLED, error=f"integration failed: {exc}")
            self.faults.record("integrate", f"integration of {task_id} failed: {exc}")
            return True
        if result.status is IntegrateStatus.INTEGRATED:
            with self.db.write():
                self.runs.finish(row, RunStatus.SUCCESS, after_sha=result.detail)
                self.finish_done(task_id, result.detail, release=False)
            killpoints.reached("integrated")
            if result.lag is not None:
                self.watch.checkout_lags(result.lag)
            self.workspaces.release(task_id)
            self.faults.clear("integrate")
        elif result.status is IntegrateStatus.FAULT:
            self.runs.finish(row, RunStatus.CANCELLED, error=result.detail)
            self.faults.record("integrate", f"integration of {task_id}: {result.detail}")
        elif result.status is IntegrateStatus.UNCHECKED:
            with self.db.write():
                self.runs.finish(row, RunStatus.SKIPPED, error=result.detail)
                if self.store.get(task_id).status is TaskStatus.VERIFIED:
                    self.store.set_status(task_id, TaskStatus.NEEDS_HELP)
                    self.note(
                        task_id,
                        "needs help: no integrate check ran on it, so base was not moved. Configure "
                        "phases.integrate.run recipes that apply or set allow_unchecked: true, then "
                        f"`pipeline-runner task set-status {task_id} open`. Why: {result.detail}",
                    )
        elif result.status is IntegrateStatus.STOPPED:
            self.runs.finish(row, RunStatus.CANCELLED, error=result.detail)
            logger.info("integration of {} stopped: {}", task_id, result.detail)
        elif result.status is IntegrateStatus.REFUSED:
            self.runs.finish(row, RunStatus.CANCELLED, error=result.detail)
            logger.error("integration of {} refused: {}", task_id, result.detail)
            # Whatever refused it (a dirty checkout) needs a person; try again after an interval.
            self.integrate_paused_until = time.time() + self.config.interval
        else:
            label = {
                IntegrateStatus.CONFLICT: "integration conflict, redeveloping on the new base",
                IntegrateStatus.CHECKS_FAILED: "post-integration checks failed, redeveloping on the new base",
                IntegrateStatus.EMPTY: "the commit is empty on the new base, redeveloping",
            }[result.status]
            moved = self.store.get(task_id).status is not TaskStatus.VERIFIED
            if result.new_base and not moved:
                self.workspaces.reset_onto(task_id, result.new_base, self.config.base)
            with self.db.write():
                self.runs.finish(row, RunStatus.FAILURE, error=result.detail)
                self.note(task_id, f"{label}: {result.detail}")
                if self.store.get(task_id).status is TaskStatus.VERIFIED:
                    self.fail(task_id, result.detail, new_patchset=True)
        return True

    def finish_done(self, task_id: str, sha: str, *, recovered: bool = False, release: bool = True) -> None:
        """Mark a landed task done and remove its workspace and the runner's ref for it."""
        self.store.set_status(task_id, TaskStatus.DONE)
        suffix = " (recovered after a restart)" if recovered else ""
        self.note(task_id, f"integrated into {self.config.base} at {sha}{suffix}")
        if release:
            self.workspaces.release(task_id)

    def handle_of(self, rec: RunRecord) -> AgentHandle:
        """Rebuild an agent handle from its row."""
        run_id = rec.agent_run_id or f"{rec.task_id}-{rec.id}"
        return AgentHandle(
            run_id=run_id,
            pid=rec.pid,
            log_path=Path(rec.log_path or self.layout.task_log(rec.task_id, run_id)),
            status_file=self.layout.status_file(run_id),
            started_at=_ts(rec.started_at),
        )

    def harvest_step(self) -> bool:
        """Collect finished agents: a new commit goes to verify, anything else is a failure.

        A run whose task a person moved (to open, done or needs help) is stopped, and its result,
        whatever it is, changes nothing: the person's decision stands.
        """
        acted = False
        for rec in self.runs.running(Phase.DEV):
            if self.dry_run:
                self.say(f"would check agent run {rec.agent_run_id} of {rec.task_id}")
                continue
            status = self.store.get(rec.task_id).status
            if status is not TaskStatus.IN_PROGRESS:
                acted |= self.stop_dev(rec, status)
                continue
            outcome = self.backend.poll(self.handle_of(rec))
            if outcome.state is AgentState.RUNNING:
                continue
            acted = True
            self.record_dev(rec, outcome)
        for task in self.store.list_tasks(TaskStatus.IN_PROGRESS, with_comments=False):
            if task.id in self.verifying:
                continue
            dev = self.awaiting_verify(task.id)
            if dev is None or self.paused("verify") or self.base_suspect():
                continue
            if self.dry_run:
                self.say(f"would verify {task.id}")
                continue
            self.start_verify(task, dev)
            acted = True
        return acted

    def record_dev(self, rec: RunRecord, outcome: AgentOutcome) -> None:
        """Bring in what a finished agent committed, judge it, and record it in one transaction.

        A failure of the agent's environment (auth, config, network) is not the task's: the run is
        recorded as cancelled, the task goes back to open uncharged, and new agents wait (a fault).
        """
        # A run stopped on a cap after doing the work is judged by the work, as a success is.
        keeps_work = outcome.state is AgentState.SUCCEEDED or outcome.work_counts
        try:
            if keeps_work and self.backend.runner_commits:
                self.commit_left_work(rec)
            after = self.workspaces.bring_in(rec.task_id) if keeps_work else None
        except ProcessError as exc:
            outcome = AgentOutcome(
                AgentState.FAILED, f"could not bring in the agent's commit: {exc}", outcome.cost_cents, outcome.tokens
            )
            after = None
        killpoints.reached("brought-in")
        result = judge(outcome, after, rec.before_sha)
        if result.status is DevStatus.COMMITTED and self.backend.commits_per_edit:
            result = self.fold(rec.task_id, result)
        environment = outcome.environment and result.status is DevStatus.FAILED
        with self.db.write():
            status = self.store.get(rec.task_id).status
            if status is not TaskStatus.IN_PROGRESS:
                self.runs.finish(
                    rec.id, RunStatus.CANCELLED, cost_cents=result.cost_cents, tokens=result.tokens,
                    error=f"a person set the task to {status.value}; the agent's result was not used",
                )  # fmt: skip
                return
            if environment:
                error = result.error or "the agent's environment failed"
                self.runs.finish(
                    rec.id, RunStatus.CANCELLED, cost_cents=result.cost_cents, tokens=result.tokens,
                    error=f"not charged to the task: {error}",
                )  # fmt: skip
                self.store.set_status(rec.task_id, TaskStatus.OPEN)
                self.note(rec.task_id, f"dev stopped by a fault of the environment, not charged (run={rec.agent_run_id}): {error}")
            elif result.status is DevStatus.COMMITTED:
                self.runs.finish(
                    rec.id, RunStatus.SUCCESS, cost_cents=result.cost_cents,
                    after_sha=result.after_sha, tokens=result.tokens,
                )  # fmt: skip
                self.note(rec.task_id, f"dev completed (run={rec.agent_run_id}, cost={result.cost_cents:g}c)")
            else:
                error = result.error or "agent failed"
                self.runs.finish(
                    rec.id, RunStatus.FAILURE, cost_cents=result.cost_cents, error=error, tokens=result.tokens
                )
                self.note(rec.task_id, f"dev failed (run={rec.agent_run_id}): {error}")
                self.fail(rec.task_id, error)
        if environment:
            # Marked, so that what clears faults of starting agents can tell this one apart.
            message = f"the {self.config.agent.preset} agent cannot work here: {result.error}"
            self.faults.record("dev", message, data={"cause": AGENT_ENVIRONMENT})
        else:
            self.faults.clear("dev")  # an agent ran here without a fault of its environment
        killpoints.reached("dev-recorded")

    def commit_left_work(self, rec: RunRecord) -> None:
        """Commit what the agent left uncommitted in its workspace, for an agent that cannot run git.

        Made again harmlessly after a kill: once the commit exists the branch has moved and
        nothing more is committed.
        """
        task = self.store.get(rec.task_id)
        sha = self.workspaces.commit_left_work(
            rec.task_id, rec.before_sha, self.config.base, left_work_message(task, rec.agent_run_id)
        )
        if sha is not None:
            logger.info("{}: committed the changes the agent left uncommitted as {}", rec.task_id, sha[:12])

    def stop_dev(self, rec: RunRecord, status: TaskStatus) -> bool:
        """Stop the agent of a task a person moved; once it has ended, record the run as cancelled.

        True when the run was recorded (its workspace is free again)."""
        handle = self.handle_of(rec)
        outcome = self.backend.poll(handle)
        if outcome.state is AgentState.RUNNING:
            if rec.id not in self.cancelling:
                logger.info("{}: a person set the task to {}; stopping its agent", rec.task_id, status.value)
                self.backend.cancel(handle)
                self.cancelling.add(rec.id)
            return False
        self.cancelling.discard(rec.id)
        with self.db.write():
            self.runs.finish(
                rec.id, RunStatus.CANCELLED, cost_cents=outcome.cost_cents, tokens=outcome.tokens,
                error=f"stopped: a person set the task to {status.value}",
            )  # fmt: skip
            self.note(rec.task_id, f"agent run {rec.agent_run_id} stopped: a person set the task to {status.value}")
        if status is TaskStatus.DONE:
            self.workspaces.release(rec.task_id)
        return True

    def fold(self, task_id: str, result: DevResult) -> DevResult:
        """Fold the commits of an agent that commits each edit into one; a git failure fails the run."""
        try:
            folded = fold_commits(self.git, self.store.get(task_id), self.config.base, task_ref(task_id))
        except ProcessError as exc:
            return replace(
                result, status=DevStatus.FAILED, error=f"could not fold the agent's commits: {exc}"
            )
        if folded is None:
            return result
        logger.info("{}: folded the agent's commits into {}", task_id, folded[:12])
        return replace(result, after_sha=folded)

    def start_verify(self, task: Task, dev: RunRecord) -> None:
        """Start verification of the commit the dev attempt brought in, in a worker thread."""
        log_path = self.layout.task_log(task.id, f"verify-p{task.patchset}-{int(time.time() * 1000)}")
        # The sha under judgement is recorded: it, and only it, is what integrates if it passes.
        commit = dev.after_sha or self.git.rev(task_ref(task.id)) or ""
        row = self.runs.start(task.id, Phase.VERIFY, task.patchset, log_path=str(log_path), after_sha=commit)
        workspace = self.layout.check(task.id, row)
        self.runs.update(row, workspace=str(workspace))
        verify = self.config.phases.verify
        future = self.executor.submit(
            verify_task, self.git, lambda sha: self.check_out_for_verify(task.id, sha, row), task.id,
            self.config.base, commit, list(verify.run), self.recipe_run(task, workspace, verify.timeout),
            log_path, self.secrets,
        )  # fmt: skip
        future.add_done_callback(lambda _: self.wake.set())
        self.verifying[task.id] = (row, future)
        killpoints.reached("verify-started")

    def check_out_for_verify(self, task_id: str, sha: str, row: int) -> Path:
        """In the verify worker: the pristine checkout of the commit under judgement."""
        path = self.workspaces.check_out(task_id, sha, row)
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
            acted = True
            try:
                result = future.result()
            except Exception as exc:  # a git or I/O failure in the worker is no fault of the task's
                result = VerifyResult(VerifyStatus.FAULT, f"verification could not run: {exc}")
            with self.db.write():
                status = self.store.get(task_id).status
                if status is not TaskStatus.IN_PROGRESS:
                    self.runs.finish(row, RunStatus.CANCELLED, error=f"a person set the task to {status.value}")
                    continue
                self.apply_verification(task_id, row, result)
            if result.status is VerifyStatus.FAULT:
                self.faults.record("verify", f"verification of {task_id}: {result.summary}")
            else:
                self.faults.clear("verify")
            killpoints.reached("verified")
        return acted

    def apply_verification(self, task_id: str, row: int, result: VerifyResult) -> None:
        """Record a verification's outcome and move the task as it implies (in the caller's transaction)."""
        if result.status is VerifyStatus.FAULT:
            # Not the commit's fault: the verification is done again once the fault clears.
            self.runs.finish(row, RunStatus.CANCELLED, error=result.summary)
            return
        if result.status is VerifyStatus.FAIL:
            self.runs.finish(row, RunStatus.FAILURE, error=result.summary)
            # The comment and the run keep the output's tail (the next prompt's feedback); the log
            # line and a needs-help reason take only the headline, so a failing test's traceback
            # is never mistaken in the runner's log for one of its own.
            headline = (result.summary.splitlines() or ["verification failed"])[0]
            logger.info("{}: verification failed: {}", task_id, headline)
            self.store.comment(task_id, f"Pipeline: verification failed:\n{result.summary}", Author.SYSTEM)
            self.fail(task_id, headline, new_patchset=True)
            return
        if result.status is VerifyStatus.PASS:
            self.runs.finish(row, RunStatus.SUCCESS)
            self.store.set_status(task_id, TaskStatus.VERIFIED)
            skipped = f"; skipped: {', '.join(result.skipped)}" if result.skipped else ""
            self.note(task_id, f"verification passed{skipped}")
            return
        # A skip is recorded as one, never as a success.
        self.runs.finish(row, RunStatus.SKIPPED, error=result.summary)
        if not counts_as_passed(result, allow_unchecked=self.config.allow_unchecked):
            # The configuration checked nothing: not the task's fault, so no retry is spent, and
            # trying again would check nothing again. A person changes the config.
            self.store.set_status(task_id, TaskStatus.NEEDS_HELP)
            self.note(
                task_id,
                "needs help: no check ran on it, so it was not promoted. Configure verify recipes "
                "that apply to it (phases.verify.run) or set allow_unchecked: true, then "
                f"`pipeline-runner task set-status {task_id} open`. Why: {result.summary}",
            )
        elif result.status is VerifyStatus.UNCHECKED:
            self.store.set_status(task_id, TaskStatus.VERIFIED)
            self.note(
                task_id,
                f"verification skipped, no check ran ({result.summary}); promoting because "
                "allow_unchecked is true",
            )
        else:
            self.store.set_status(task_id, TaskStatus.VERIFIED)
            self.note(task_id, f"verification skipped ({result.summary}), promoting")

    def develop_step(self) -> bool:
        """Start agents for open, eligible tasks whose dependencies are done, up to concurrency."""
        running = self.runs.running(Phase.DEV)
        slots = self.config.concurrency - len(running)
        # No agent starts on a base something else moved: its work would be judged against it.
        if slots <= 0 or self.paused("dev") or self.base_suspect():
            return False
        acted = False
        starting: list[Task] = []
        # A task whose agent is still being stopped (a person reopened it) waits for its workspace.
        busy = {r.task_id for r in running}
        candidates = [t for t in self.store.ready() if self.eligible(t) and t.id not in busy]
        for task in self.order(candidates):
            if slots <= 0:
                break
            verdict = self.gate(task)
            if verdict.gate is Gate.BACKOFF:
                logger.debug("{} in {}", task.id, verdict.detail)
                wake = time.time() + verdict.wait_seconds
                self.next_wake = wake if self.next_wake is None else min(self.next_wake, wake)
                continue
            if verdict.gate is not Gate.GO:
                if self.dry_run:
                    self.say(f"would move {task.id} to needs_help: {verdict.detail}")
                    continue
                self.store.set_status(task.id, TaskStatus.NEEDS_HELP)
                self.note(task.id, f"needs help: {verdict.detail}")
                acted = True
                continue
            slots -= 1
            if self.dry_run:
                self.say(
                    f"would start a {self.config.agent.preset} agent for {task.id} (patchset {task.patchset})"
                )
                continue
            starting.append(task)
        for task in starting:
            self.start_dev(task, self.prepare_workspace(task))
            acted = True
        return acted

    def prepare_workspace(self, task: Task) -> Path | ProcessError | OSError:
        """The task's workspace, or the error that prevented it."""
        try:
            return self.workspaces.acquire(task.id, self.config.base)
        except (ProcessError, OSError) as exc:
            return exc

    def start_dev(self, task: Task, workspace: Path | ProcessError | OSError) -> None:
        """Claim the task, write its prompt, and start its agent in its prepared workspace.

        A workspace that cannot be made, or an agent that cannot be started, is a fault of the
        machine, not of the task: the attempt is cancelled, the task stays open, uncharged, and
        no agent starts until the fault clears (retried with a growing delay)."""
        with self.db.write():
            if self.store.get(task.id).status is not TaskStatus.OPEN:
                return  # a person moved it since the cycle read it
            self.store.set_status(task.id, TaskStatus.IN_PROGRESS)
            row = self.runs.start(task.id, Phase.DEV, task.patchset)
            run_id = f"{task.id}-{row}"
            log_path = self.layout.task_log(task.id, run_id)
            self.runs.update(row, agent_run_id=run_id, log_path=str(log_path))
        killpoints.reached("claimed")
        try:
            if not isinstance(workspace, Path):
                raise workspace
            before = self.workspaces.checkouts.git_of(workspace).branch_sha(task.id)
            self.runs.update(row, workspace=str(workspace), before_sha=before)
            last = self.runs.last_failure(task.id)
            feedback = last.error_summary if last is not None else None
            prompt = build_prompt(
                self.template, task, base=self.config.base, workspace=workspace,
                recipes=recipe_texts(self.config), feedback=feedback,
            )  # fmt: skip
            handle = start_agent(
                self.backend, self.config, task, run_id=run_id, workspace=workspace, prompt=prompt,
                prompt_file=self.layout.prompt(run_id), log_path=log_path,
                status_file=self.layout.status_file(run_id),
            )  # fmt: skip
        except (ProcessError, OSError) as exc:
            error = f"could not start the agent: {exc}"
            with self.db.write():
                self.runs.finish(row, RunStatus.CANCELLED, error=error)
                self.store.set_status(task.id, TaskStatus.OPEN)
            self.faults.record("dev", error)
            return
        killpoints.reached("agent-spawned")
        # pid 0 marks "started" for backends without a local process (agentd).
        with self.db.write():
            self.runs.update(row, pid=handle.pid or 0)
            self.note(task.id, f"dev started (run={run_id}, patchset {task.patchset})")
        killpoints.reached("agent-recorded")
        current = self.faults.get("dev")
        # An agent that starts clears a fault of starting agents; a fault of the agent's
        # environment clears only once an agent ran without one, so its delay keeps growing.
        if current is not None and current.data.get("cause") != AGENT_ENVIRONMENT:
            self.faults.clear("dev")

    def idle(self) -> bool:
        """Nothing is running and nothing can start: every eligible task is done, needs help,
        waits on one that does, or is verified with its integration held back for a person."""
        if self.verifying or self.integrating is not None or self.runs.running(Phase.DEV):
            return False
        # A held integration waits for a person (a dirty checkout of base), not for the loop.
        verified = [
            t
            for t in self.store.list_tasks(TaskStatus.VERIFIED, with_comments=False)
            if held_integration(self.runs, t.id) is None
        ]
        busy = [
            *self.store.list_tasks(TaskStatus.IN_PROGRESS, with_comments=False),
            *verified,
            *self.store.ready(),
        ]
        return not any(self.eligible(t) for t in busy)

    def stuck(self) -> bool:
        """Nothing is running and a fault has held work through several retries (or base moved
        outside the runner): a batch run (`--until-idle`) stops here rather than wait for hours."""
        if self.verifying or self.integrating is not None or self.runs.running(Phase.DEV):
            return False
        return any(f.area == "base" or f.count >= FAULT_PATIENCE for f in self.faults.faults.values())

    # -- waiting -------------------------------------------------------------------------------

    def sleep(self) -> None:
        """Wait for the next reason to run a cycle: a verify or an agent finishing, or the interval."""
        deadline = time.time() + self.config.interval
        if self.next_wake is not None:
            deadline = min(deadline, self.next_wake)
        running = self.runs.running(Phase.DEV) if self.backend.poll_is_cheap else []
        handles = [self.handle_of(r) for r in running]
        pids = [h.pid for h in handles if h.pid]
        step = PIDFD_RECHECK_SECONDS if self.wake.watches_pids else CHEAP_POLL_SECONDS
        while True:
            left = deadline - time.time()
            if left <= 0:
                return
            if self.wake.wait(min(left, step), pids):
                return
            if any(self.backend.finished(h) for h in handles):
                return

    def close(self) -> None:
        """Stop the verify workers (results not yet applied are redone on the next start)."""
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.integrator.shutdown(wait=False, cancel_futures=True)
        self.wake.close()
        self.db.close()


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def preflight(config: PipelineConfig) -> None:
    """Refuse to start with a problem that would fail every task the same way."""
    if not (config.repo_path / ".git").exists():
        raise PipelineError(f"{config.repo_path} is not a git repository (key 'repo').")
    if Git(config.repo_path).branch_sha(config.base) is None:
        raise PipelineError(
            f"Base branch {config.base!r} does not exist in {config.repo_path}. Create it or set "
            "'base' in the config (or --base)."
        )
    if not config.phases.verify.run and not config.allow_unchecked:
        raise PipelineError(
            "No verify recipes are configured (key 'phases.verify.run'), so no check would run "
            "and no task could land. Set phases.verify.run to the commands that build and test "
            "the repository, or set allow_unchecked: true to land tasks with no check."
        )
    backend = make_backend(config.agent)
    problem = backend.check()
    if problem:
        raise PipelineError(problem)
    executable = backend.executable_name()
    # Only a bare program name can be checked here; a path may be relative to the task worktree.
    bare = executable and "/" not in executable and "{" not in executable
    if bare and shutil.which(executable or "") is None:
        raise PipelineError(
            f"Agent executable {executable!r} (preset {config.agent.preset!r}) was not found on PATH. "
            "Install it, or choose another agent.preset in the config."
        )


def run_loop(config: PipelineConfig, *, once: bool, dry_run: bool, until_idle: bool = False) -> int:
    """`run`: cycles until interrupted, one cycle with ``once``, or until nothing is left to do
    with ``until_idle``. Returns the exit code."""
    preflight(config)
    layout = Layout(config.root)
    if dry_run:
        if not config.state_db.exists():
            print(f"DRY RUN: no pipeline state at {config.state_db}; there is nothing to do.")
            return 0
        pipeline = Pipeline(config, open_db(config.state_db, readonly=True), dry_run=True)
        try:
            pipeline.cycle()
        finally:
            pipeline.close()
        return 0
    layout.ensure()
    add_file_sink(config.root)
    lock = RunnerLock(layout.lock_file)
    if not lock.acquire():
        print(f"Another pipeline-runner (pid {lock.holder()}) is active on {config.root}; exiting.")
        return 0
    with lock, _sigterm_as_interrupt():
        pipeline = Pipeline(config, open_db(config.state_db), dry_run=False)
        try:
            logger.info(
                "pipeline starting: repo={} base={} root={} concurrency={} at {}",
                config.repo_path, config.base, config.root, config.concurrency, datetime.now(UTC).isoformat(),
            )  # fmt: skip
            pipeline.reconcile()
            while True:
                acted = pipeline.cycle()
                if once:
                    pipeline.collect_verifies(wait=True)
                    pipeline.collect_integration(wait=True)
                    break
                if not acted:
                    if until_idle and pipeline.idle():
                        logger.info("nothing left to do; exiting")
                        break
                    if until_idle and pipeline.stuck():
                        logger.info("nothing can move until a fault clears; exiting")
                        break
                    pipeline.sleep()
        finally:
            pipeline.close()
    return 0
