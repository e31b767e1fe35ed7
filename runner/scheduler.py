"""The loop. One cycle: integrate verified tasks, harvest agents and verify, then develop.

Everything the loop needs to continue lives in SQLite and git, not in memory: a later process
(the next cron `run --once`, or a restart after a crash) harvests the agents an earlier one started.
Verification runs in worker threads beside the loop; only the loop's thread touches the database.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

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
from runner import budget, killpoints, procs, recovery
from runner.ahead import Ahead
from runner.basesync import BaseSync
from runner.basewatch import BaseWatch
from runner.config import PipelineConfig
from runner.doctor import Verdict, check_placeholders
from runner.errors import PipelineError, ProcessError, StateError
from runner.faults import FaultBoard
from runner.fleet import INTEGRATOR, RENEWALS_PER_LEASE, Fleet, Member, Place, share_of_queue
from runner.git import Git
from runner.holdups import integration_bottleneck
from runner.ids import id_problem
from runner.integrator import Integrator
from runner.layout import Layout
from runner.lifecycle import (
    Gate,
    GateResult,
    Move,
    Step,
    TaskView,
    Then,
    allowed,
    backoff_delay,
    next_step,
    resolve,
)
from runner.lock import RunnerLock
from runner.logs import add_file_sink, logger
from runner.logs import load as load_logging
from runner.notify import Announcer, Notifier
from runner.preflight import ENVIRONMENT, RED_BASE, Preflight
from runner.redact import agent_secrets
from runner.state import (
    Database,
    Phase,
    RunRecord,
    Runs,
    RunStatus,
    last_of,
    latest_of,
    open_db,
    parse_iso,
    state_exists,
)
from runner.status import held, held_integration, limits_of, task_gate, waiting_to_land
from runner.summary import Invocation
from runner.tasks import Author, BuiltinTaskStore, Task, TaskStatus, TaskType, open_task_source
from runner.verifier import Verifier
from runner.waking import Exits, Waker
from runner.warm import WarmPool
from runner.workspace import Workspaces, task_ref

AGENT_ENVIRONMENT = "agent-environment"
# Retries a fault gets before a batch run (`--until-idle`) gives up waiting for it.
FAULT_PATIENCE = 3  # the cause of a dev fault reported by the agent itself
CHEAP_POLL_SECONDS = 0.02
# With pidfds an agent's exit wakes the loop at once; this slower look covers a supervisor whose
# pid was taken by another process.
PIDFD_RECHECK_SECONDS = 1.0
# How long a harvest waits for the commits of the agents that ended to be brought in, recording
# each as it arrives (recorded at once, their checks start at once); one that takes longer (a huge
# commit, a workspace made to hang git until agent.git_timeout) is recorded at a later cycle, and
# the loop goes on meanwhile.
BRING_IN_WAIT_SECONDS = 5.0


def _ts(value: str) -> float:
    return parse_iso(value).timestamp()


class Pipeline:
    """One pipeline: a config, its state, its repository."""

    def __init__(
        self,
        config: PipelineConfig,
        db: Database,
        *,
        dry_run: bool = False,
        use_cache: bool = True,
        notifier: Notifier | None = None,
        once: bool = False,
    ) -> None:
        self.config = config
        self.dry_run = dry_run
        self.once = once  # one cycle: base's checks are waited for rather than run beside the loop
        self.db = db
        self.store: BuiltinTaskStore = open_task_source(config.tasks.source, db)
        self.runs = Runs(db)
        # This runner among those sharing the state (runner.fleet); joined by `join` before the
        # first cycle, never by a dry run.
        self.fleet = Fleet(db, root=config.root, lease_seconds=config.lease)
        self.integrating = False  # whether this runner held the integration lease at its last look
        self.landed_on_taking: list[str] = []  # tasks found landed when it took the lease, this cycle
        self.next_sweep = 0.0  # when to look for workspaces of tasks other runners finished
        self.next_fleet_look = 0.0  # when to look at the other runners again (fleet_look)
        self.fleet_rank = 0  # this runner's place among the live runners, at the last look
        self.layout = Layout(config.root)
        self.git = Git(config.repo_path)
        # Released workspaces stay warm for the next tasks, one per agent slot (runner.warm).
        self.workspaces = Workspaces(
            self.git, self.layout, WarmPool(config.root, keep=config.concurrency), git_timeout=config.agent.git_timeout,
            marked=True,
        )
        self.backend: AgentBackend = make_backend(config.agent)
        self.template = prompt_template(config)
        # The secret values every agent is handed: a commit holding one never lands.
        self.secrets = agent_secrets(config.agent.env, os.environ)
        self.cancelling: set[int] = set()  # dev runs this process asked to stop
        self.faults = FaultBoard(
            self.layout.faults_file, lambda n: backoff_delay(config.interval, n), writable=not dry_run
        )
        self.watch = BaseWatch(
            self.git, config.base, self.layout, self.faults, self.store, self.runs, dry_run=dry_run
        )
        # With `remote:`, the local base mirrors the remote's and lands through it (runner.basesync).
        self.basesync = None if dry_run else BaseSync.of(config, self.git, self.faults, self.watch)
        if self.basesync is not None:
            self.watch.vouched = self.basesync.vouched
        self.wake = Waker()
        # The agents' supervisors, watched by pidfds: telling which ended costs one poll, not a
        # look at every one's /proc entry, each time the loop looks between two pieces of work.
        self.exits = Exits()
        self.next_wake: float | None = None
        # Task moves and faults become events (notifications, `run -q`), whoever makes them.
        self.notifier = notifier or Notifier([], base=config.base, root=config.root)
        self.announcer = Announcer(self.notifier, self.store, self.faults)
        # The executors: agents are started and harvested here; checks and landings run there.
        self.verifier = Verifier(self, use_cache=use_cache)
        self.integrator = Integrator(self)
        self.preflight = Preflight(
            config, self.faults, config.root / "base-green", self.watch.tip, self.wake.set,
            use_cache=use_cache, slots=self.verifier.slots,
        )  # fmt: skip
        self.ready_to_start = True  # this cycle's preflight: the environment is there and base is green
        # The workspaces of the next tasks, made while every slot is taken (runner.ahead); not for
        # one cycle (`run --once` would leave them made for nothing) or a dry run.
        self.ahead: Ahead[Prepared | ProcessError | OSError] = Ahead(
            self.prepare_workspace, self.give_back, config.concurrency
        )
        self.look_ahead = not (once or dry_run)
        if self.look_ahead:
            # What the first agents would otherwise wait for, one after another: the supervisors'
            # fork server and the logging library (~35 ms each).
            procs.FORK_SERVER.warm()
            load_logging()
        # The agents seen ended whose slots were filled (they wait for their harvest), and what
        # their last poll said.
        self.replaced: set[int] = set()
        self.polled: dict[int, AgentOutcome] = {}
        # Ended agents whose commits worker threads are bringing in, by run row (bring_in).
        self.bringing: dict[int, Bringing] = {}
        self.bringer = ThreadPoolExecutor(max_workers=max(1, min(config.concurrency, 8)), thread_name_prefix="bring-in")

    # -- helpers -------------------------------------------------------------------------------

    def note(self, task_id: str, message: str) -> None:
        """A system comment on the task, and a log line."""
        logger.info("{}: {}", task_id, " ".join(message.split())[:300])
        self.store.comment(task_id, f"Pipeline: {message}", Author.SYSTEM)

    def base_suspect(self) -> bool:
        """Whether base holds commits the runner did not land. The runner records each landing
        on the loop's thread right after it moves base, so its own commits are known here."""
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

    def fail(self, task_id: str, reason: str, *, new_patchset: bool = False) -> None:
        """Record a rejection: back to open, or to needs_help when a limit is reached."""
        self.settle(task_id, Move(RunStatus.FAILURE, Then.RETRY, new_patchset), reason)

    def settle(self, task_id: str, move: Move, reason: str, note: str | None = None) -> TaskStatus:
        """Move the task as an outcome's ``move`` says (in the caller's transaction); its new status.

        ``note`` is said on the task, except when a retry reaches a limit: then the limit is."""
        if move.new_patchset:
            self.store.bump_patchset(task_id)
        task = self.store.get(task_id)
        verdict = self.gate(task, include_backoff=False) if move.then is Then.RETRY else None
        limit = verdict is not None and verdict.gate in (Gate.RETRIES, Gate.COST)
        new = resolve(move.then, task.status, limit_reached=limit, allow_unchecked=self.config.allow_unchecked)
        if not allowed(task.status, new):
            raise PipelineError(f"{task_id}: the runner may not move a task from {task.status} to {new}")
        self.store.set_status(task_id, new)
        if limit and verdict is not None:
            self.note(task_id, f"needs help: {verdict.detail}. Last failure: {reason}")
        elif note:
            self.note(task_id, note)
        return new

    def gate(self, task: Task, *, include_backoff: bool = True) -> GateResult:
        """Retry limit (failures of any phase since a person last resumed it), cost cap, backoff."""
        return task_gate(self.runs, task, limits_of(self.config), time.time(), include_backoff=include_backoff)

    # -- the fleet -----------------------------------------------------------------------------

    def join(self) -> None:
        """Join the runners sharing the state: this runner's id marks the runs it starts, its lease
        is renewed from now on, and each write checks it still holds it (runner.fleet)."""
        if self.fleet.join() is Place.NEW:
            # Agents an earlier process here left when its work was taken over: theirs is others' now.
            orphans = self.fleet.orphans()
            for rec in orphans:
                handle = self.handle_of(rec)
                # Polled without a pid too: the supervisor's status file, or the run's marked
                # processes, still find (and a vanished supervisor's leftovers are ended).
                if self.backend.poll(handle).state is AgentState.RUNNING:
                    logger.warning("{}: stopping agent run {}: its task was taken over by another runner",
                                   rec.task_id, rec.agent_run_id)  # fmt: skip
                    self.backend.cancel(handle)
            # What they left in their workspaces (a commit made after the takeover) was never
            # recorded: a later attempt here would start from it, find nothing left to do and be
            # charged for it. The attempt starts afresh instead, as it would on another host. A task
            # verified since keeps its commit (the sweep of landed tasks removes it later).
            for task_id in dict.fromkeys(rec.task_id for rec in orphans):
                if (
                    self.layout.worktree(task_id).exists() and self.store.exists(task_id)
                    and self.store.get(task_id).status in (TaskStatus.OPEN, TaskStatus.IN_PROGRESS)
                ):  # fmt: skip
                    self.workspaces.release(task_id)
        self.runs.owner = self.fleet.id
        self.fleet.start_renewing(self.connect)

    def connect(self) -> Database:
        """Another connection to the state, as the loop's is opened (not fenced)."""
        return open_db(self.config.state_target, idle_wait=self.config.lease)

    def open_worker_db(self) -> Database:
        """A connection for a worker thread, its writes fenced as the loop's are."""
        db = self.connect()
        if self.fleet.id is not None:
            self.fleet.attach(db)
        return db

    def mine(self, task_id: str) -> bool:
        """Whether a task in progress is this runner's to act on: it made its last attempt (another
        runner sharing the state works on the others), or no runner did (a state from before
        runners shared it)."""
        return self.fleet.id is None or self.runs.owner_of(task_id) in (self.fleet.id, None)

    def owns(self, attempts: list[RunRecord]) -> bool:
        """``mine``, from the task's attempts (oldest first) as Runs.attempts_by_task read them."""
        return self.fleet.id is None or not attempts or attempts[-1].owner in (self.fleet.id, None)

    def fleet_look(self) -> bool:
        """Whether to look at the other runners this cycle (who died, who integrates, this
        runner's rank): now and then, not at each cycle, which would cost a few queries each on a
        busy loop; a lease lasts ``lease`` seconds, so a look every third of one is soon enough."""
        now = time.time()
        if self.fleet.id is None or now < self.next_fleet_look:
            return False
        self.next_fleet_look = now + self.config.lease / RENEWALS_PER_LEASE
        self.fleet_rank = self.fleet.rank()[0]
        return True

    def take_over(self) -> bool:
        """Take over the work of the runners whose leases expired (their hosts died): their
        attempts are cancelled, uncharged, and their tasks in progress open again."""
        acted = False
        for member in self.fleet.expired():

            def reopen(task_id: str, member: Member = member) -> None:
                self.store.set_status(task_id, TaskStatus.OPEN)
                self.note(task_id, f"back to open: runner {member.id} on {member.host}, which worked on it, "
                                   "stopped renewing its lease")  # fmt: skip

            acted |= self.fleet.take_over(member, reopen) is not None
        return acted

    def release_landed_elsewhere(self) -> None:
        """Remove the workspaces of tasks another runner finished (it landed or a person cancelled
        them there): the runner that lands a task releases only its own workspace."""
        if self.fleet.id is None or time.time() < self.next_sweep or not self.layout.worktrees.is_dir():
            return
        # Now and then, not each cycle: a workspace kept a little longer costs nothing.
        self.next_sweep = time.time() + self.config.lease / RENEWALS_PER_LEASE
        running = {r.task_id for r in self.runs.running()}
        for path in self.layout.worktrees.iterdir():
            task_id = path.name
            if id_problem(task_id) is not None or task_id in running or task_id in self.verifier.verifying:
                continue
            if self.integrator.in_flight(task_id) or not self.store.exists(task_id):
                continue
            if self.store.get(task_id).status in (TaskStatus.DONE, TaskStatus.CANCELLED):
                self.workspaces.release(task_id)

    def may_integrate(self, look: bool = True) -> bool:
        """Whether this runner integrates now: one runner at a time holds the integration lease.
        On taking it, the landings its last holder left half-recorded are finished first.
        Without ``look``, the answer of the last look (the lease is renewed by its own thread)."""
        if not look and self.fleet.id is not None:
            return self.integrating
        held = self.fleet.id is None or self.fleet.hold(INTEGRATOR)
        if held and not self.integrating and self.fleet.id is not None:
            # Its last holder may have pushed a candidate before it died: looked for on base as
            # the remote has it now, or not yet (a later look tries again, once a fault of the
            # remote has waited out its delay: the lease is not taken against it at every look).
            if self.basesync is not None and not self.basesync.sync():
                return False
            self.landed_on_taking = recovery.finish_landings(self)
        self.integrating = held
        return held

    # -- recovery ------------------------------------------------------------------------------

    def reconcile(self) -> None:
        """Bring SQLite, git and the processes back in line after a crash or kill (runner.recovery)."""
        recovery.reconcile(self)
        if self.workspaces.warm is not None:
            self.workspaces.warm.tidy()  # what a kill left half-parked

    # -- the cycle -----------------------------------------------------------------------------

    def cycle(self) -> bool:
        """One cycle; True if any task changed state (so another cycle should follow at once)."""
        self.next_wake = None
        self.fleet.check()  # taken over while it had nothing to write: it stops, as a write would
        self.faults.reload()  # `pipeline-runner resume`, from another process, clears faults there
        # A person's cancel, from another process, ends the checks of that task now.
        self.verifier.stop_cancelled()
        # Only the tasks a step can act on are read: a long history of done tasks costs nothing.
        verified = self.store.list_tasks(TaskStatus.VERIFIED, with_comments=False)
        self.ready_to_start = self.preflight_step()
        # Agents that ended are replaced before this cycle's integration work and again after it,
        # so that no slot stays empty while the loop thread lands tasks.
        look = not self.dry_run and self.fleet_look()
        acted = self.take_over() if look else False
        self.release_landed_elsewhere()
        acted |= self.refill()
        self.landed_on_taking = []
        if self.may_integrate(look):
            if self.landed_on_taking:  # done now, though verified when the cycle read them
                verified = [t for t in verified if t.id not in self.landed_on_taking]
            acted |= self.integrator.integrate_step(verified)
        elif self.basesync is not None:
            self.basesync.sync()  # base here follows what the integrating runner lands on the remote
        acted |= self.verifier.collect_verifies()
        acted |= self.refill()
        self.announcer.flush()
        return acted

    def refill(self) -> bool:
        """Start agents in the slots of the agents that ended, then record those (harvest), then
        fill what is still free: a slot is filled before the agent that left it is judged."""
        acted = self.refill_ended()
        acted |= self.harvest_step(self.polled)
        # After the harvest, so that the cost of the agents that just ended counts.
        budget.check(self.config.limits.max_daily_cost, self.runs, self.faults)
        return self.develop_step() | acted

    def between(self) -> bool:
        """Between two pieces of the loop's work (a landing, a candidate, a harvest): start agents
        in the slots of agents that ended since, without waiting for the rest of the cycle. Only
        where telling that an agent ended is cheap (a status file), and not in `run --once`, whose
        one cycle starts what it starts at its beginning (its end lands what is ready, nothing more)."""
        if self.once or not self.backend.poll_is_cheap:
            return False
        ended = self.ended_of(self.runs.running(Phase.DEV))
        # One whose slot was filled already waits only for its harvest.
        if ended <= self.replaced:
            return False
        return self.refill_ended()

    def refill_ended(self) -> bool:
        """Start agents in the slots of the agents that ended (recorded or not)."""
        polled = self.poll_agents()
        ended = [rec_id for rec_id, outcome in polled.items() if outcome.state is not AgentState.RUNNING]
        pending = sum(polled[rec_id].cost_cents for rec_id in ended)
        budget.check(self.config.limits.max_daily_cost, self.runs, self.faults, pending=pending)
        acted = self.develop_step(ended=len(ended))
        self.polled, self.replaced = polled, set(ended)
        return acted

    def poll_agents(self) -> dict[int, AgentOutcome]:
        """How each running dev agent of a task still in progress stands, by run row."""
        polled = {}
        running = self.runs.running(Phase.DEV)
        ended = self.ended_of(running)
        for rec in running:
            if self.store.status_of(rec.task_id) is TaskStatus.IN_PROGRESS:
                polled[rec.id] = self.outcome_of(rec, ended)
        return polled

    def ended_of(self, running: list[RunRecord]) -> set[int]:
        """The rows of ``running`` whose agents have ended. A supervisor's exit is its end (it
        writes its verdict, then exits); a run without a local supervisor is asked of the backend."""
        if not self.backend.poll_is_cheap:
            return {r.id for r in running if self.backend.finished(self.handle_of(r))}
        by_row = {r.id: r for r in running}
        # Whether a pid about to be watched is still the run's supervisor: after a restart it may
        # be another process's now, even one whose command line names the supervisor too (another
        # pipeline's, a fork server), so the run's status file is read as well, as ``finished``
        # does: a verdict there is its end.
        exited = self.exits.exited(
            {r.id: r.pid for r in running if r.pid}, lambda row: not self.backend.finished(self.handle_of(by_row[row]))
        )
        return {r.id for r in running if (r.id in exited if r.pid else self.backend.finished(self.handle_of(r)))}

    def outcome_of(self, rec: RunRecord, ended: set[int] | None = None) -> AgentOutcome:
        """How a running agent stands: running, without a look at its files, while its
        supervisor runs; the backend's poll once it has ended (or where no pidfd tells)."""
        if self.backend.poll_is_cheap and rec.pid:
            if ended is None:
                ended = self.ended_of([rec])
            if rec.id not in ended:
                return self.backend.poll_running(self.handle_of(rec))
        return self.backend.poll(self.handle_of(rec))

    def preflight_step(self) -> bool:
        """Whether agents may start and tasks integrate this cycle: what they need is installed and
        base's checks pass on its tip (runner.preflight). Only asked when there is work for them."""
        if self.dry_run:
            return ENVIRONMENT not in self.faults and RED_BASE not in self.faults
        if not self.store.ready() and not self.store.list_tasks(TaskStatus.VERIFIED, with_comments=False):
            return True
        if not self.preflight.environment_ok():
            return False
        green = self.preflight.base_green(wait=self.once)
        if not green:
            self.paused(RED_BASE)  # wake when its delay is up
        return green

    def finish_done(self, task_id: str, sha: str, *, recovered: bool = False, release: bool = True) -> None:
        """Mark a landed task done and remove its workspace and the runner's ref for it."""
        self.store.set_status(task_id, TaskStatus.DONE)
        suffix = " (recovered after a restart)" if recovered else ""
        self.note(task_id, f"integrated into {self.config.base} at {sha}{suffix}")
        if self.basesync is not None:
            self.basesync.retire(task_id)  # its published commit, removed from the remote at the next look
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

    def harvest_step(self, polled: dict[int, AgentOutcome] | None = None) -> bool:
        """Collect finished agents: a new commit goes to verify, anything else is a failure.
        ``polled``: outcomes this cycle already read (poll_agents), not read again.

        A run whose task a person moved (to open, done or needs help) is stopped, and its result,
        whatever it is, changes nothing: the person's decision stands.
        """
        acted = False
        polled = polled or {}
        for rec in self.runs.running(Phase.DEV):
            if rec.id in self.bringing:
                continue  # ended: recorded once its commit is in (a person's move is judged then)
            status = self.store.status_of(rec.task_id) or TaskStatus.CANCELLED  # deleted: stopped too
            if status is not TaskStatus.IN_PROGRESS:
                acted |= self.stop_dev(rec, status)
                continue
            outcome = polled.get(rec.id) or self.outcome_of(rec)
            if outcome.state is AgentState.RUNNING:
                continue
            self.start_bring_in(rec, outcome)
        acted |= self.record_brought()
        if acted and self.basesync is not None:
            self.basesync.publish_pending()  # the commits just brought in, in one push
        still = self.runs.running(Phase.DEV)
        self.exits.keep_only(r.id for r in still if r.pid)  # the pidfds of recorded runs closed
        running = {r.task_id for r in still}
        in_progress = self.store.list_tasks(TaskStatus.IN_PROGRESS, with_comments=False)
        # Their attempts in one query, not two for each at every cycle (read after the tasks, as
        # a task's own would be).
        attempts = self.runs.attempts_by_task(TaskStatus.IN_PROGRESS.value) if in_progress else {}
        for task in in_progress:
            if not self.owns(attempts.get(task.id, [])):
                continue
            latest = latest_of(attempts.get(task.id, []))
            if next_step(self.view(task, running=running, latest=latest)) is not Step.VERIFY:
                continue
            if self.paused("verify") or self.base_suspect():
                continue
            assert latest is not None
            self.verifier.start_verify(task, latest)
            acted = True
        return acted

    def view(
        self, task: Task, *, running: set[str], latest: RunRecord | None, ready: set[str] | None = None,
        blocked: set[str] | None = None,
    ) -> TaskView:  # fmt: skip
        """What ``next_step`` needs to know of ``task``. ``ready``: the ids of open tasks whose
        dependencies are done (when the task is open); ``blocked``: those of open tasks with a
        cancelled dependency."""
        in_flight = task.id in self.verifier.verifying or self.integrator.in_flight(task.id)
        return TaskView(
            status=task.status,
            gate=self.gate(task).gate if task.status is TaskStatus.OPEN else Gate.GO,
            dependencies_done=ready is None or task.id in ready,
            agent_running=task.id in running,
            checking=in_flight,
            latest=(latest.phase, latest.status) if latest is not None else None,
            held=task.status is TaskStatus.VERIFIED and held_integration(self.runs, task.id) is not None,
            blocked=blocked is not None and task.id in blocked,
        )

    def plan(self) -> list[str]:
        """What one cycle would do, a line per eligible task that is not done (a dry run)."""
        lines = [f"paused: {f.area}: {f.message.splitlines()[0]}" for f in self.faults.faults.values()]
        running = {r.task_id for r in self.runs.running(Phase.DEV)}
        ready = {t.id for t in self.store.ready()}
        blocked = self.store.blocked()
        blocked_ids = set(blocked)
        slots = self.config.concurrency - len(running)
        for status in (TaskStatus.VERIFIED, TaskStatus.IN_PROGRESS, TaskStatus.OPEN):
            for task in self.order([t for t in self.store.list_tasks(status, with_comments=False) if self.eligible(t)]):
                view = self.view(task, running=running, latest=self.runs.latest(task.id), ready=ready,
                                 blocked=blocked_ids)  # fmt: skip
                step = next_step(view)
                if step is Step.DEVELOP:
                    slots -= 1
                    if slots < 0:
                        lines.append(f"would leave {task.id} open: every agent slot is taken")
                        continue
                if step is Step.BLOCKED:
                    lines.append(
                        f"would leave {task.id} open: it depends on {', '.join(blocked[task.id])}, "
                        "cancelled; it waits for a person"
                    )
                    continue
                lines.append(self.planned(task, step))
        return lines

    def planned(self, task: Task, step: Step) -> str:
        """A dry run's line for ``step`` of ``task``."""
        if step is Step.DEVELOP:
            return f"would start a {self.config.agent.preset} agent for {task.id} (patchset {task.patchset})"
        if step in (Step.WAIT, Step.GIVE_UP):
            verdict = self.gate(task)
            if step is Step.GIVE_UP:
                return f"would move {task.id} to needs_help: {verdict.detail}"
            if verdict.gate is Gate.BACKOFF:
                return f"would wait with {task.id}: {verdict.detail}"
            return f"would wait with {task.id}: its dependencies are not done"
        return {
            Step.WATCH: f"would check the agent of {task.id}",
            Step.VERIFY: f"would verify {task.id}",
            Step.CHECKING: f"would wait for the checks of {task.id}",
            Step.REOPEN: f"would reopen {task.id}: no agent is alive and nothing is left to verify",
            Step.INTEGRATE: f"would integrate {task.id} into {self.config.base}",
            Step.HELD: f"would hold {task.id}: its integration waits for a person",
        }.get(step, f"nothing to do for {task.id}")

    def start_bring_in(self, rec: RunRecord, outcome: AgentOutcome) -> None:
        """Have an ended agent's commit brought in by a worker thread; the run is recorded once it
        is (record_brought). The fetch takes tens of milliseconds, and the agents that end meanwhile
        are replaced at once rather than after it; one an agent made hang (its workspace) holds
        nothing up but its own task, until the runner's git times out there."""
        # A run stopped on a cap after doing the work is judged by the work, as a success is.
        keeps_work = outcome.state is AgentState.SUCCEEDED or outcome.work_counts
        message = None
        if keeps_work and self.backend.runner_commits:
            message = left_work_message(self.store.get(rec.task_id), rec.agent_run_id)
        future = self.bringer.submit(self.bring, rec, keeps_work, message)
        future.add_done_callback(lambda _done: self.wake.set())  # the loop records it at once
        self.bringing[rec.id] = Bringing(rec, outcome, future, time.monotonic())

    def record_brought(self) -> bool:
        """Record the ended agents whose commits are in, waiting for those still being brought in
        up to BRING_IN_WAIT_SECONDS after their start (in `run --once`, whose one cycle records them
        all, as long as they take). While it waits, agents that end are replaced at once; one still
        not in after it is recorded at a later cycle, which does not wait for it again."""
        acted = False
        while self.bringing:
            for row, brought in list(self.bringing.items()):
                if brought.future.done():
                    del self.bringing[row]
                    self.record_dev(brought.rec, brought.outcome, brought.future.result())
                    self.between()
                    acted = True
            started = [b.started for b in self.bringing.values()]
            left = max(started, default=0.0) + BRING_IN_WAIT_SECONDS - time.monotonic()
            if not self.bringing or (left <= 0 and not self.once):
                break
            if self.once or not self.backend.poll_is_cheap:
                pending = [b.future for b in self.bringing.values()]
                wait(pending, timeout=None if self.once else left, return_when=FIRST_COMPLETED)
                continue
            # Agents that ended are replaced, then the wait ends with a bring-in done (its
            # callback) or the exit of an agent still running, replaced at the next turn.
            self.between()
            others = [r for r in self.runs.running(Phase.DEV) if r.id not in self.bringing]
            gone = self.ended_of(others)
            self.wake.wait(min(left, 1.0), [r.pid for r in others if r.pid and r.id not in gone])
        return acted

    def bring(self, rec: RunRecord, keeps_work: bool, message: str | None) -> str | ProcessError | None:
        """In a worker thread (git and the file system only, never the state): the agent's commit,
        made first of what it left uncommitted for an agent that cannot run git (``message``),
        brought into the runner's ref for the task."""
        if not keeps_work:
            return None
        try:
            if message is not None:
                sha = self.workspaces.commit_left_work(rec.task_id, rec.before_sha, self.config.base, message)
                if sha is not None:
                    logger.info("{}: committed the changes the agent left uncommitted as {}", rec.task_id, sha[:12])
            return self.workspaces.bring_in(rec.task_id)
        except ProcessError as exc:
            return exc

    def record_dev(self, rec: RunRecord, outcome: AgentOutcome, brought: str | ProcessError | None) -> None:
        """Judge what a finished agent committed and record it in one transaction. ``brought``: the
        commit brought in from its workspace (``bring``), None for none, or why it could not be.

        A failure of the agent's environment (auth, config, network) is not the task's: the run is
        recorded as cancelled, the task goes back to open uncharged, and new agents wait (a fault).
        """
        if isinstance(brought, ProcessError):
            outcome = AgentOutcome(
                AgentState.FAILED, f"could not bring in the agent's commit: {brought}", outcome.cost_cents, outcome.tokens
            )
            after = None
        else:
            after = brought
        killpoints.reached("brought-in")
        result = judge(outcome, after, rec.before_sha)
        if result.status is DevStatus.COMMITTED and self.backend.commits_per_edit:
            result = self.fold(rec.task_id, result)
        environment = outcome.environment and result.status is DevStatus.FAILED
        with self.db.write():
            status = self.store.status_of(rec.task_id) or TaskStatus.CANCELLED
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
        if result.status is DevStatus.COMMITTED and result.after_sha and self.basesync is not None:
            self.basesync.publish(rec.task_id, result.after_sha)  # where another host can integrate it
        if environment:
            # Marked, so that what clears faults of starting agents can tell this one apart.
            message = f"the {self.config.agent.preset} agent cannot work here: {result.error}"
            self.faults.record("dev", message, data={"cause": AGENT_ENVIRONMENT})
        else:
            self.faults.clear("dev")  # an agent ran here without a fault of its environment
        killpoints.reached("dev-recorded")

    def stop_dev(self, rec: RunRecord, status: TaskStatus) -> bool:
        """Stop the agent of a task a person moved; once it has ended, record the run as cancelled.

        True when the run was recorded (its workspace is free again)."""
        now = self.runs.get(rec.id)
        if now is None or now.status is not RunStatus.RUNNING:
            # Ended since the cycle read it: another runner took this one's work over while it
            # was frozen (its task moved for that, not by a person). Its agent is this runner's
            # next start's to stop, as the orphan of a takeover; nothing here is its to record.
            return False
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
        if status in (TaskStatus.DONE, TaskStatus.CANCELLED):
            self.workspaces.release(rec.task_id)
        return True

    def release_cancelled(self, task_id: str) -> None:
        """Remove the workspace of a cancelled (or deleted) task once no attempt of it runs: its
        work is dropped, and a retry starts again from base."""
        if self.store.status_of(task_id) not in (None, TaskStatus.CANCELLED):
            return
        if any(r.task_id == task_id for r in self.runs.running()):
            return
        self.workspaces.release(task_id)

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

    def develop_step(self, ended: int = 0) -> bool:
        """Start agents for open, eligible tasks whose dependencies are done, up to concurrency,
        and have the workspaces of the next ones made meanwhile. ``ended``: agents that exited and
        are not recorded yet; their slots are free."""
        running = self.runs.running(Phase.DEV)
        slots = self.config.concurrency - len(running) + ended
        # No agent starts on a base something else moved: its work would be judged against it.
        if not self.ready_to_start or self.paused("dev") or self.paused(budget.AREA) or self.base_suspect():
            return False
        # Each agent that runs frees a slot later: the workspaces of that many next tasks are made.
        ahead = min(self.config.concurrency, len(running) - ended + max(slots, 0)) if self.look_ahead else 0
        if slots <= 0 and not ahead:
            return False
        # Every slot taken and the next workspaces made for tasks still open: nothing to read (the
        # queue is read again when a slot frees; reading it every cycle costs on a large store).
        if slots <= 0 and len(self.ahead) >= ahead and all(self.still_open(t) for t in self.ahead.task_ids()):
            return False
        # Verified work piling up for the integrator only ties up workspaces: no agent adds to it.
        verified = self.store.list_tasks(TaskStatus.VERIFIED, with_comments=False)
        if integration_bottleneck(waiting_to_land(self.runs, verified, self.config.max_waiting), self.config.max_waiting):
            return False
        acted = False
        starting: list[Task] = []
        upcoming: list[str] = []
        # A task whose agent is still being stopped (a person reopened it) waits for its workspace.
        busy = {r.task_id for r in running}
        candidates = self.order([t for t in self.store.ready() if self.eligible(t) and t.id not in busy])
        if self.fleet.id is not None and len(candidates) > 1:
            candidates = share_of_queue(candidates, self.fleet_rank, self.config.concurrency)
        for task in candidates:
            if slots <= 0 and len(upcoming) >= ahead:
                break
            verdict = self.gate(task)
            if slots <= 0:
                if verdict.gate is Gate.GO:
                    upcoming.append(task.id)
                continue
            if verdict.gate is Gate.BACKOFF:
                logger.debug("{} in {}", task.id, verdict.detail)
                wake = time.time() + verdict.wait_seconds
                self.next_wake = wake if self.next_wake is None else min(self.next_wake, wake)
                continue
            if verdict.gate is not Gate.GO:
                self.store.set_status(task.id, TaskStatus.NEEDS_HELP)
                self.note(task.id, f"needs help: {verdict.detail}")
                acted = True
                continue
            slots -= 1
            starting.append(task)
        # Workspaces are made side by side off this thread (git and the file system only; this
        # thread alone writes SQLite), and each agent starts as soon as its own is ready: at once
        # for one made ahead. (Starting the agents' processes in worker threads while the next
        # task is claimed was measured: no gain, see the README's "Slot utilisation".)
        prepared = {self.ahead.take(task.id): task for task in starting}
        for done in as_completed(prepared):
            claim = self.claim(prepared[done], done.result())
            if claim is not None:
                self.record_start(claim, self.launch(claim))
            acted = True
        self.ahead.prepare(upcoming)
        return acted

    def prepare_workspace(self, task_id: str) -> Prepared | ProcessError | OSError:
        """The task's workspace and its task branch's commit, or the error that prevented them.
        Runs in worker threads: git and the file system only, never SQLite."""
        try:
            existed = self.layout.worktree(task_id).exists()
            path, before = self.workspaces.prepare(task_id, self.config.base)
            prepared = Prepared(path, before, made=not existed)
            killpoints.reached("workspace-made")
            return prepared
        except (ProcessError, OSError) as exc:
            return exc

    def still_open(self, task_id: str) -> bool:
        """Whether a task is still there and open (a person may have cancelled or deleted it)."""
        return self.store.status_of(task_id) is TaskStatus.OPEN

    def give_back(self, task_id: str, prepared: Prepared | ProcessError | OSError) -> None:
        """A workspace made ahead for a task that did not start: a new one goes back to the warm
        pool; the task's own, from an earlier attempt, stays for its next."""
        if not isinstance(prepared, Prepared) or not prepared.made:
            return
        if any(r.task_id == task_id for r in self.runs.running()):
            return
        self.workspaces.release(task_id)

    def claim(self, task: Task, prepared: Prepared | ProcessError | OSError) -> Claim | None:
        """Claim the task for an agent run and write down its workspace and prompt; None when it
        is not claimed (a person moved it) or its workspace could not be made (a fault)."""
        with self.db.write():
            # Not when a person moved, cancelled, deleted or gave it a new dependency since the
            # cycle read it.
            claimed = self.store.claimable(task.id)
            if claimed:
                # Read again, whole: the prompt gets the task as it is now (a person's edit since
                # the cycle read it, and a person's comments, which the cycle does not read).
                task = self.store.get(task.id)
                claimed = self.store.dependencies_done(task)
            if claimed:
                self.store.set_status(task.id, TaskStatus.IN_PROGRESS)
                row = self.runs.start(task.id, Phase.DEV, task.patchset)
                run_id = f"{task.id}-{row}"
                log_path = self.layout.task_log(task.id, run_id)
                self.runs.update(row, agent_run_id=run_id, log_path=str(log_path))
        if not claimed:
            self.release_cancelled(task.id)  # the workspace just prepared for it, if it is no more
            return None
        killpoints.reached("claimed")
        try:
            if not isinstance(prepared, Prepared):
                raise prepared
            workspace = prepared.path
            self.runs.update(row, workspace=str(workspace), before_sha=prepared.before)
            last = self.runs.last_failure(task.id)
            feedback = last.error_summary if last is not None else None
            prompt = build_prompt(
                self.template, task, base=self.config.base, workspace=workspace,
                recipes=recipe_texts(self.config), feedback=feedback,
            )  # fmt: skip
        except (ProcessError, OSError) as exc:
            self.start_failed(task.id, row, exc)
            return None
        return Claim(task, row, run_id, workspace, prompt, log_path)

    def launch(self, claim: Claim) -> AgentHandle | ProcessError | OSError:
        """Start the claimed run's agent: its handle, or why it could not start."""
        try:
            return start_agent(
                self.backend, self.config, claim.task, run_id=claim.run_id, workspace=claim.workspace,
                prompt=claim.prompt, prompt_file=self.layout.prompt(claim.run_id), log_path=claim.log_path,
                status_file=self.layout.status_file(claim.run_id),
            )  # fmt: skip
        except (ProcessError, OSError) as exc:
            return exc

    def record_start(self, claim: Claim, started: AgentHandle | ProcessError | OSError) -> None:
        """Record the started agent's pid; an agent that could not start is a fault, not the task's."""
        if not isinstance(started, AgentHandle):
            self.start_failed(claim.task.id, claim.row, started)
            return
        handle = started
        killpoints.reached("agent-spawned")
        # pid 0 marks "started" for backends without a local process (agentd).
        with self.db.write():
            self.runs.update(claim.row, pid=handle.pid or 0)
            self.note(claim.task.id, f"dev started (run={claim.run_id}, patchset {claim.task.patchset})")
        killpoints.reached("agent-recorded")
        current = self.faults.get("dev")
        # An agent that starts clears a fault of starting agents; a fault of the agent's
        # environment clears only once an agent ran without one, so its delay keeps growing.
        if current is not None and current.data.get("cause") != AGENT_ENVIRONMENT:
            self.faults.clear("dev")

    def start_failed(self, task_id: str, row: int, exc: Exception) -> None:
        """The claimed run never started. A workspace that cannot be made, or an agent that cannot
        be started, is a fault of the machine, not of the task: the attempt is cancelled, the task
        stays open, uncharged, and no agent starts until the fault clears (retried with a growing
        delay)."""
        error = f"could not start the agent: {exc}"
        with self.db.write():
            self.runs.finish(row, RunStatus.CANCELLED, error=error)
            self.store.set_status(task_id, TaskStatus.OPEN)
        self.faults.record("dev", error)

    def idle(self) -> bool:
        """Nothing is running and nothing can start: every eligible task is done, needs help,
        waits on one that does, or is verified with its integration held back for a person."""
        if self.verifier.verifying or self.integrator.busy or self.runs.running(Phase.DEV):
            return False
        # A held integration waits for a person (a dirty checkout of base), not for the loop.
        verified = self.store.list_tasks(TaskStatus.VERIFIED, with_comments=False)
        attempts = self.runs.attempts_by_task(TaskStatus.VERIFIED.value) if verified else {}
        verified = [t for t in verified if held(last_of(attempts.get(t.id, []), Phase.INTEGRATE)) is None]
        busy = [
            *self.store.list_tasks(TaskStatus.IN_PROGRESS, with_comments=False),
            *verified,
            *self.store.ready(),
        ]
        return not any(self.eligible(t) for t in busy)

    def stuck(self) -> bool:
        """Nothing is running and a fault has held work through several retries (or base moved
        outside the runner): a batch run (`--until-idle`) stops here rather than wait for hours."""
        if self.verifier.verifying or self.integrator.busy or self.runs.running(Phase.DEV):
            return False
        # Base moved outside the runner, base is red, a program is missing: only a person moves these.
        # The daily cost cap lifts at midnight only: a batch run does not wait for it.
        waits_for_a_person = ("base", RED_BASE, ENVIRONMENT, budget.AREA)
        return any(f.area in waits_for_a_person or f.count >= FAULT_PATIENCE for f in self.faults.faults.values())

    # -- waiting -------------------------------------------------------------------------------

    def sleep(self) -> None:
        """Wait for the next reason to run a cycle: a verify or an agent finishing, or the interval."""
        deadline = time.time() + self.config.interval
        if self.next_wake is not None:
            deadline = min(deadline, self.next_wake)
        # Not those whose commits are being brought in: their supervisors have exited (no reason to
        # wake again and again); the end of a bring-in wakes the loop (start_bring_in).
        running = [r for r in self.runs.running(Phase.DEV) if r.id not in self.bringing] if self.backend.poll_is_cheap else []
        handles = [self.handle_of(r) for r in running]
        pids = [h.pid for h in handles if h.pid]
        step = PIDFD_RECHECK_SECONDS if self.wake.watches_pids else CHEAP_POLL_SECONDS
        while True:
            left = deadline - time.time()
            if left <= 0:
                return
            if self.wake.wait(min(left, step), pids):
                return
            if self.ended_of(running):
                return

    def close(self) -> None:
        """Stop the verify workers (results not yet applied are redone on the next start), tell
        of the last moves, and let the notifications still queued run. A commit still being
        brought in is left for the next start (its run is still recorded as running): its git,
        which an agent may have made hang until agent.git_timeout, is ended rather than waited for."""
        self.workspaces.checkouts.stopping.set()
        self.ahead.close()
        self.bringer.shutdown(wait=True, cancel_futures=True)
        self.verifier.close()
        self.integrator.close()
        self.preflight.close()
        self.wake.close()
        self.exits.close()
        self.fleet.leave()
        try:
            self.announcer.flush()
        finally:
            self.db.close()
            self.notifier.close()


@dataclass(frozen=True)
class Bringing:
    """An ended agent's run whose commit a worker thread is bringing in."""

    rec: RunRecord
    outcome: AgentOutcome
    future: Future[str | ProcessError | None]
    started: float  # time.monotonic()


@dataclass(frozen=True)
class Claim:
    """A task claimed for an agent run whose agent is being started."""

    task: Task
    row: int
    run_id: str
    workspace: Path
    prompt: str
    log_path: Path


@dataclass(frozen=True)
class Prepared:
    """A task's workspace, ready for its agent, and the commit its task branch holds there."""

    path: Path
    before: str | None
    made: bool = False  # made for this start, rather than the task's own from an earlier attempt


class Terminated(KeyboardInterrupt):
    """SIGTERM (`systemctl stop`, `kill`): stop as for Ctrl-C; for the daemon a clean end."""


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise Terminated

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
    if not config.phases and not config.allow_unchecked:
        raise PipelineError(
            "No phases are configured (key 'phases'), so no check would run and no task could "
            "land. Declare the commands that build and test the repository as phases (for example "
            "phases: {test: {run: [\"make test\"]}}), or set allow_unchecked: true to land tasks with no check."
        )
    problem = make_backend(config.agent).check()
    if problem:
        raise PipelineError(problem)
    # A misspelled placeholder would reach every command or prompt as it is. A missing program is
    # not refused here: it pauses the queue (runner.preflight) until it is installed.
    misspelled = [f for f in check_placeholders(config, prompt_template(config)) if f.verdict is Verdict.FAIL]
    if misspelled:
        raise PipelineError("; ".join(f"{f.message} ({f.fix})" for f in misspelled))


def run_loop(
    config: PipelineConfig,
    *,
    once: bool,
    dry_run: bool,
    until_idle: bool = False,
    use_cache: bool = True,
    quiet: bool = False,
    invocation: Invocation | None = None,
) -> int:
    """`run`: cycles until interrupted, one cycle with ``once``, or until nothing is left to do
    with ``until_idle``. Returns the exit code. ``quiet`` prints the events a person must act on
    (and nothing else) on stdout; ``invocation`` gets what this run did, for its summary.

    SIGTERM ends the daemon like Ctrl-C (agents keep running, checks in flight are redone by the
    next start) but as a success, as a service manager's stop is; a batch run it interrupts."""
    invocation = invocation if invocation is not None else Invocation()
    try:
        return _run_loop(config, once, dry_run, until_idle, use_cache, quiet, invocation)
    except Terminated:
        if once or until_idle:
            raise
        logger.info("stopped by SIGTERM")
        return 0


def _echo(line: str) -> None:
    print(line, flush=True)


def _run_loop(
    config: PipelineConfig,
    once: bool,
    dry_run: bool,
    until_idle: bool,
    use_cache: bool,
    quiet: bool,
    invocation: Invocation,
) -> int:
    preflight(config)
    layout = Layout(config.root)
    if dry_run:
        if not state_exists(config.state_target):
            print(f"DRY RUN: no pipeline state at {config.state_db}; there is nothing to do.")
            return 0
        pipeline = Pipeline(config, open_db(config.state_target, readonly=True), dry_run=True)
        try:
            for line in pipeline.plan():
                print(f"DRY RUN: {line}", flush=True)
        finally:
            pipeline.close()
        return 0
    layout.ensure()
    add_file_sink(config.root)
    lock = RunnerLock(layout.lock_file)
    if not lock.acquire():
        # A log line, not output: from cron every overlap would be mailed (and nothing happened).
        logger.info("Another pipeline-runner (pid {}) is active on {}; exiting.", lock.holder(), config.root)
        return 0
    invocation.acted = True
    with lock, _sigterm_as_interrupt():
        notifier = Notifier(
            config.notify, base=config.base, root=config.root, cwd=config.repo_path, echo=_echo if quiet else None
        )
        pipeline = Pipeline(
            config, open_db(config.state_target, idle_wait=config.lease), dry_run=False, use_cache=use_cache, notifier=notifier, once=once
        )
        try:
            logger.info(
                "pipeline starting: repo={} base={} root={} concurrency={} at {}",
                config.repo_path, config.base, config.root, config.concurrency, datetime.now(UTC).isoformat(),
            )  # fmt: skip
            if not once:
                # A daemon is woken by `task add` at once instead of at its next interval.
                pipeline.wake.listen(layout.nudge_file)
            pipeline.join()
            pipeline.reconcile()
            pipeline.announcer.flush()
            while True:
                acted = pipeline.cycle()
                if once:
                    pipeline.verifier.collect_verifies(wait=True)
                    # Everything whose integration is ready lands within this one invocation.
                    if pipeline.integrating:
                        pipeline.integrator.drain()
                    break
                if not acted:
                    if until_idle and pipeline.idle():
                        logger.info("nothing left to do; exiting")
                        break
                    if until_idle and pipeline.stuck():
                        logger.info("nothing can move until a fault clears; exiting")
                        break
                    pipeline.sleep()
        except StateError as exc:
            told = pipeline.fleet.explain(exc, pipeline.connect)
            if told is exc:
                raise
            raise told from exc
        finally:
            pipeline.close()
            invocation.needs_help = list(pipeline.announcer.needs_help)
    return 0
