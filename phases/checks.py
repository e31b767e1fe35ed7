"""Running the check graph on one tree.

A phase starts as soon as every phase it needs has passed; independent phases run side by side,
each holding one of a limited number of slots shared by every check of the process (across
tasks). A pass on the same content (tree, phase, recipes, env, on) is reused instead of run,
unless a phase that needs it must run (in the same checkout, where it may use what its needs
left: a build it tests). The first required failure stops what depends on it and what has not
started; phases already running finish (their passes are kept for later) and are reported as such.

Only the thread that calls ``run_graph`` looks up and records results; phase threads only run
recipes, so a database connection never crosses threads.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from phases.outcomes import NOT_RUN_MARK, VerifyStatus
from phases.verify import RecipeRun, VerifyResult, run_recipes
from runner import graph
from runner.checkcache import CachedPass, CheckCache, cache_key
from runner.config import PhaseConfig, recipe_argv
from runner.state import Runs, RunStatus
from runner.templates import fill_argv, missing_values


class PhaseState(enum.StrEnum):
    """How one phase ended."""

    PASSED = "passed"
    CACHED = "cached"  # a pass of the same content was reused; nothing ran
    FAILED = "failed"
    SKIPPED = "skipped"  # a skip code ended its recipes after one passed
    UNCHECKED = "unchecked"  # nothing in it applied or passed (no {namespace}, a skip code first)
    NOT_RUN = "not_run"  # a need did not pass, or the attempt was already rejected
    FAULT = "fault"  # a recipe could not start: the machine's fault


PASSING = frozenset({PhaseState.PASSED, PhaseState.CACHED, PhaseState.SKIPPED})

@dataclass(frozen=True)
class PhaseOutcome:
    """One phase's result within one check of a tree."""

    name: str
    state: PhaseState
    summary: str = ""
    exit_code: int | None = None
    duration: float = 0.0
    recipes: tuple[str, ...] = ()  # as run, after substitution
    skipped: tuple[str, ...] = ()  # recipes that did not apply
    optional: bool = False
    cached: CachedPass | None = None
    row: int | None = None  # its pipeline_runs row, when recorded
    log_path: str | None = None
    rerun_of: int | None = None  # on a rerun after a flaky failure: this phase's row of the first run

    def describe(self) -> str:
        """One line: state, duration, exit code, reuse."""
        if self.state is PhaseState.CACHED and self.cached is not None:
            return f"{self.name}: passed ({self.cached.describe()})"
        if self.state is PhaseState.NOT_RUN:
            return f"{self.name}: {self.summary}"
        code = f", exit {self.exit_code}" if self.exit_code is not None else ""
        optional = " (optional)" if self.optional and self.state is PhaseState.FAILED else ""
        return f"{self.name}: {self.state.value}{optional} in {self.duration:.1f}s{code}"


class PhaseListener(Protocol):
    """Told of each phase as it starts and ends (the pipeline records rows; `check` prints)."""

    def started(self, name: str) -> int | None:
        """A phase begins (or is settled without running); returns its row id, if one is kept."""

    def ended(self, row: int | None, outcome: PhaseOutcome) -> None:
        """A phase has its outcome."""


class Silent:
    """A listener that records nothing."""

    def started(self, name: str) -> int | None:
        """Nothing is kept."""
        return None

    def ended(self, row: int | None, outcome: PhaseOutcome) -> None:
        """Nothing is kept."""


@dataclass
class GraphRun:
    """Everything one check of one tree needs."""

    phases: Mapping[str, PhaseConfig]  # the phases of this stage, in declaration order
    stage: str
    tree: str
    workdir: Callable[[], Path]  # the pristine checkout, made on first need (a full cache hit needs none)
    values: dict[str, str | None]
    log_dir: Path
    slots: threading.Semaphore
    cache: CheckCache | None = None  # None: nothing reused or kept (--no-cache)
    listener: PhaseListener = field(default_factory=Silent)
    # Set when the task was cancelled: recipes running are ended, phases not started do not start.
    cancel: threading.Event | None = None
    # Told of every phase that ran, passed or failed, by its content key (runner.flaky).
    outcomes: OutcomeRecorder | None = None
    # On a rerun after a flaky failure (runner.flaky): the first run's passes, by phase, that
    # stand in for running the phase again as a reused pass does (what a rerun phase needs runs
    # again in the fresh checkout all the same).
    carried: Mapping[str, CachedPass] = field(default_factory=dict)


class OutcomeRecorder(Protocol):
    """Counts each check that ran by its content key, passed or not."""

    def record(self, key: str, phase: str, passed: bool) -> None:
        """One run of the check ``key`` of ``phase``."""


def phase_argvs(phase: PhaseConfig, values: Mapping[str, str | None]) -> list[list[str]]:
    """The phase's recipes after substitution (those that apply to these values)."""
    argvs = []
    for recipe in phase.run:
        template = recipe_argv(recipe)
        if not missing_values(template, values):
            argvs.append(fill_argv(template, values))
    return argvs


def _lazy(make: Callable[[], Path]) -> Callable[[], Path]:
    lock = threading.Lock()
    made: list[Path] = []

    def get() -> Path:
        with lock:
            if not made:
                made.append(make())
            return made[0]

    return get


def _run_phase(
    name: str, phase: PhaseConfig, run: GraphRun, workdir: Callable[[], Path], stop: threading.Event,
    stopped_by: list[str],
) -> PhaseOutcome:  # fmt: skip
    """In a phase thread: wait for a slot, then run the phase's recipes in the checkout."""
    with run.slots:
        if stop.is_set():
            return PhaseOutcome(
                name, PhaseState.NOT_RUN, f"{NOT_RUN_MARK}the attempt was rejected by {stopped_by[0]}",
                optional=phase.optional,
            )  # fmt: skip
        started = time.monotonic()
        log_path = run.log_dir / f"{name}.log"
        try:
            cwd = workdir()
        except Exception as exc:  # a checkout that cannot be made is the machine's fault
            return PhaseOutcome(name, PhaseState.FAULT, f"the checkout could not be made: {exc}", optional=phase.optional)
        spec = RecipeRun(run.values, phase.skip_exit_codes, phase.timeout, phase.env, run.cancel)
        result = run_recipes(phase.run, cwd, spec, log_path)
        if result.status in (VerifyStatus.PASS, VerifyStatus.SKIP) and not cwd.is_dir():
            # The checkout was removed under the recipes: they passed on no files, not on the tree.
            result = VerifyResult(
                VerifyStatus.FAULT, f"the checkout {cwd} was removed while the phase ran", result.skipped,
            )
    state = {
        VerifyStatus.PASS: PhaseState.PASSED,
        VerifyStatus.SKIP: PhaseState.SKIPPED,
        VerifyStatus.UNCHECKED: PhaseState.UNCHECKED,
        VerifyStatus.FAIL: PhaseState.FAILED,
        VerifyStatus.FAULT: PhaseState.FAULT,
    }[result.status]
    return PhaseOutcome(
        name, state, result.summary, result.exit_code, time.monotonic() - started,
        tuple(" ".join(a) for a in phase_argvs(phase, run.values)), tuple(result.skipped),
        phase.optional, log_path=str(log_path),
    )  # fmt: skip


def content_key(run: GraphRun, name: str) -> str | None:
    """The content key of phase ``name``'s check in ``run`` (None when none of its recipes apply)."""
    phase = run.phases[name]
    argvs = phase_argvs(phase, run.values)
    return cache_key(run.tree, name, argvs, phase.env, phase.on) if argvs else None


def _reusable(run: GraphRun, needs: Mapping[str, list[str]]) -> tuple[dict[str, str], dict[str, CachedPass]]:
    """Each cached phase's content key, and the passes that will stand in for running a phase.

    A phase that must run (nothing to reuse, or ``cache: false``) runs in the checkout its needs
    ran in and may use what they left there (a build a test runs against), so what it needs,
    directly or not, is run there too rather than reused. A phase none of whose recipes apply runs
    nothing, and needs nothing left behind."""
    keys: dict[str, str] = {}
    hits: dict[str, CachedPass] = {}
    must_run: set[str] = set()
    for name, phase in run.phases.items():
        argvs = phase_argvs(phase, run.values)
        if not argvs:
            continue
        # Keyed even when not reused: flaky evidence is counted by the same key.
        keys[name] = cache_key(run.tree, name, argvs, phase.env, phase.on)
        if name in run.carried:
            hits[name] = run.carried[name]
            continue
        if run.cache is not None and phase.cache:
            hit = run.cache.lookup(keys[name])
            if hit is not None:
                hits[name] = hit
                continue
        must_run.add(name)
    for name in graph.closure(needs, must_run) - must_run:
        hits.pop(name, None)
    return keys, hits


def run_graph(run: GraphRun) -> VerifyResult:
    """Check one tree with the phases of one stage; the verdict and every phase's outcome."""
    needs = {name: [n for n in phase.needs if n in run.phases] for name, phase in run.phases.items()}
    results: dict[str, PhaseOutcome] = {}
    order: list[str] = []  # the order outcomes were settled in
    running: dict[Future[PhaseOutcome], tuple[str, int | None, str | None]] = {}
    stop = threading.Event()
    stopped_by: list[str] = []
    workdir = _lazy(run.workdir)
    keys, hits = _reusable(run, needs)

    def settle(name: str, outcome: PhaseOutcome, row: int | None) -> None:
        outcome = replace(outcome, row=row)
        results[name] = outcome
        order.append(name)
        run.listener.ended(row, outcome)
        if outcome.state is PhaseState.FAILED and not outcome.optional and not stopped_by:
            stopped_by.append(name)
            stop.set()

    with ThreadPoolExecutor(max_workers=max(1, len(run.phases)), thread_name_prefix="phase") as pool:
        while len(results) < len(run.phases):
            for name in graph.ready(needs, results, {*results, *(n for n, _, _ in running.values())}):
                phase = run.phases[name]
                blocked = [n for n in needs[name] if results[n].state not in PASSING]
                failed_need = next((n for n in blocked if results[n].state is PhaseState.FAILED), None)
                if failed_need is not None and not phase.optional and not stopped_by:
                    # A required check that cannot run because an optional one it needs failed
                    # was not passed: the attempt is rejected, never landed without it.
                    why = (
                        f"required phase {name} cannot run: it needs {failed_need}, which failed "
                        f"(optional, but {name} needs it):\n{results[failed_need].summary}"
                    )
                    settle(name, PhaseOutcome(name, PhaseState.FAILED, why, optional=False), run.listener.started(name))
                    continue
                if blocked or stopped_by:
                    why = (
                        f"{NOT_RUN_MARK}needs {blocked[0]} ({results[blocked[0]].state.value})"
                        if blocked
                        else f"{NOT_RUN_MARK}the attempt was rejected by {stopped_by[0]}"
                    )
                    settle(name, PhaseOutcome(name, PhaseState.NOT_RUN, why, optional=phase.optional), run.listener.started(name))
                    continue
                hit = hits.get(name)
                if hit is not None:
                    outcome = PhaseOutcome(
                        name, PhaseState.CACHED, hit.describe(), hit.exit_code, 0.0,
                        tuple(" ".join(a) for a in phase_argvs(phase, run.values)), optional=phase.optional,
                        cached=hit,
                    )  # fmt: skip
                    settle(name, outcome, run.listener.started(name))
                    continue
                row = run.listener.started(name)
                future = pool.submit(_run_phase, name, phase, run, workdir, stop, stopped_by)
                running[future] = (name, row, keys.get(name))
            if not running:
                if len(results) < len(run.phases) and not graph.ready(needs, results, results):
                    raise RuntimeError("the phase graph cannot make progress (a cycle?)")
                continue
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                name, row, key = running.pop(future)
                outcome = future.result()
                passed = outcome.state is PhaseState.PASSED
                if passed and key is not None and run.cache is not None and run.phases[name].cache:
                    run.cache.store(key, phase=name, tree=run.tree, run_id=row, duration=outcome.duration)
                # A check the task's cancellation ended failed for that, not for its content:
                # counted, it would pass for flaky evidence.
                cancelled = run.cancel is not None and run.cancel.is_set()
                if key is not None and run.outcomes is not None and not cancelled and outcome.state in (PhaseState.PASSED, PhaseState.FAILED):
                    run.outcomes.record(key, name, passed)
                settle(name, outcome, row)
    return verdict([results[n] for n in order], run.stage, stopped_by[0] if stopped_by else None)


def verdict(outcomes: list[PhaseOutcome], stage: str, failed: str | None) -> VerifyResult:
    """The stage's verdict from its phases' outcomes (pure)."""
    by_name = {o.name: o for o in outcomes}
    report = tuple(outcomes)
    skipped = [s for o in outcomes for s in o.skipped]
    passed = sum(1 for o in outcomes if o.state in PASSING)
    if failed is not None:
        first = by_name[failed]
        lines = [f"phase {failed} failed: {first.summary}"]
        stopped = [o.name for o in outcomes if o.state is PhaseState.NOT_RUN]
        if stopped:
            lines.append(f"not run: {', '.join(stopped)} ({'; '.join(by_name[n].summary for n in stopped)})")
        finished = [
            f"{o.name} ({o.state.value})"
            for o in outcomes
            if o.name != failed and o.state not in (PhaseState.NOT_RUN, PhaseState.CACHED)
        ]
        if finished:
            lines.append(f"finished, already running or done: {', '.join(finished)}")
        return VerifyResult(VerifyStatus.FAIL, "\n".join(lines), skipped, passed, first.exit_code, report)
    required = [o for o in outcomes if not o.optional] or outcomes
    faults = [o for o in required if o.state is PhaseState.FAULT]
    if faults:
        return VerifyResult(
            VerifyStatus.FAULT, f"phase {faults[0].name}: {faults[0].summary}", skipped, passed, None, report
        )
    notes = [f"optional phase {o.name} failed: {o.summary.splitlines()[0] if o.summary else ''}"
             for o in outcomes if o.optional and o.state is PhaseState.FAILED]  # fmt: skip
    if all(o.state in (PhaseState.PASSED, PhaseState.CACHED) for o in required):
        summary = "; ".join([f"{stage}: {len(required)} phase(s) passed", *notes])
        return VerifyResult(VerifyStatus.PASS, summary, skipped, passed, 0, report)
    short = [f"phase {o.name}: {o.summary}" for o in required if o.state not in (PhaseState.PASSED, PhaseState.CACHED)]
    if not any(o.state in PASSING for o in required):
        return VerifyResult(
            VerifyStatus.UNCHECKED, f"no phase checked anything: {'; '.join(short)}", skipped, passed, None, report
        )
    return VerifyResult(
        VerifyStatus.SKIP, "; ".join([f"some phases did not check: {'; '.join(short)}", *notes]),
        skipped, passed, 0, report,
    )  # fmt: skip


def empty_stage(stage: str, phases: Mapping[str, PhaseConfig]) -> VerifyResult | None:
    """The verdict of a stage that has no phase to run, or None when it has some.

    At verify, nothing to run is a pass only when the candidate is checked at integration; at
    integration, no phase there is the config's choice not to check again."""
    if any(stage in p.on for p in phases.values()):
        return None
    if stage == "verify":
        if any("integrate" in p.on for p in phases.values()):
            return VerifyResult(VerifyStatus.PASS, "no phase runs at verify; the candidate is checked at integration")
        return VerifyResult(VerifyStatus.UNCHECKED, "no phases are configured")
    return VerifyResult(VerifyStatus.PASS, "no phase runs at integration")



_ROW_STATUS = {
    PhaseState.PASSED: RunStatus.SUCCESS,
    PhaseState.CACHED: RunStatus.SUCCESS,
    PhaseState.FAILED: RunStatus.FAILURE,
    PhaseState.SKIPPED: RunStatus.SKIPPED,
    PhaseState.UNCHECKED: RunStatus.SKIPPED,
    PhaseState.NOT_RUN: RunStatus.CANCELLED,
    PhaseState.FAULT: RunStatus.CANCELLED,
}


class RowListener:
    """Records each phase as a pipeline_runs row under the attempt ``parent`` (status shows them
    live), and a line per phase in the attempt's own log."""

    def __init__(
        self, runs: Runs, parent: int, task_id: str, patchset: int, tree: str, log_path: Path,
        rerun_of: Mapping[str, int] | None = None,
    ) -> None:  # fmt: skip
        self.runs = runs
        # On a rerun: each phase's row of the first run, which its new row is marked a rerun of.
        self.rerun_of = dict(rerun_of or {})
        self.parent = parent
        self.task_id = task_id
        self.patchset = patchset
        self.tree = tree
        self.log_path = log_path

    def _log(self, line: str) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(line + "\n")

    def started(self, name: str) -> int | None:
        """A row for the phase, running."""
        first = self.rerun_of.get(name)
        self._log(f"[{name}] started" + (f" (rerun of run {first})" if first is not None else ""))
        marks = {"rerun_of": first} if first is not None else {}
        return self.runs.start_check(self.parent, self.task_id, name, self.patchset, tree=self.tree, **marks)

    def ended(self, row: int | None, outcome: PhaseOutcome) -> None:
        """The row finished with the phase's outcome."""
        where = f" (log: {outcome.log_path})" if outcome.log_path else ""
        self._log(f"[{outcome.name}] {outcome.describe()}{where}")
        if outcome.state in (PhaseState.FAILED, PhaseState.FAULT):
            # The attempt's own log shows why, without opening the phase's.
            self._log(outcome.summary)
        if row is None:
            return
        passed = outcome.state in (PhaseState.PASSED, PhaseState.CACHED)
        self.runs.finish(
            row, _ROW_STATUS[outcome.state], error=None if passed else outcome.summary or outcome.state.value,
            exit_code=outcome.exit_code, duration=round(outcome.duration, 3), log_path=outcome.log_path,
            cached_from=outcome.cached.source_row if outcome.cached is not None else None,
        )  # fmt: skip
