"""Flaky checks, told apart from real failures.

Every check that runs is counted by its content key (the tree it checked, the phase, its recipes
after substitution, its environment and ``on``: runner.checkcache.cache_key), passed or failed. A
failure of a check whose very content passed before is flaky evidence: the files and the commands
are the same, so something outside them (time, the network, a race in the tests) decided. Such a
failure is checked once more, on a fresh checkout, before anything is rejected (runner.verifier);
only if the rerun fails too is it the task's. `status` lists the phases that have both passed and
failed on one content, with their counts.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from loguru import logger

from phases.checks import GraphRun, PhaseListener, PhaseOutcome, PhaseState, content_key, run_graph
from phases.verify import VerifyResult, VerifyStatus
from runner.checkcache import CachedPass
from runner.config import PhaseConfig
from runner.state import Database, now_iso

# Phases listed by `status`, most recent first: a few lines.
SHOWN = 5


@dataclass(frozen=True)
class FlakyPhase:
    """A phase that both passed and failed on the same content, summed over its contents."""

    phase: str
    passes: int
    fails: int
    reruns: int  # failures checked once more
    cleared: int  # reruns that passed (the task was not charged)
    last_at: str

    def describe(self) -> str:
        """One line for `status`."""
        return (
            f"{self.phase}: {self.passes} passed, {self.fails} failed on the same content; "
            f"{self.cleared} of {self.reruns} reruns cleared (last {self.last_at[:19].replace('T', ' ')} UTC)"
        )


class CheckOutcomes:
    """The ``check_outcomes`` table of the state database: passes and failures per content key."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def record(self, key: str, phase: str, passed: bool) -> None:
        """Count one run of the check ``key`` of ``phase``."""
        column = "passes" if passed else "fails"
        with self.db.write() as conn:
            conn.execute(
                f"INSERT INTO check_outcomes (key, phase, {column}, last_at) VALUES (?, ?, 1, ?) "
                f"ON CONFLICT(key) DO UPDATE SET {column} = {column} + 1, last_at = excluded.last_at",
                (key, phase, now_iso()),
            )

    def passed_before(self, key: str) -> bool:
        """Whether the check ``key`` has passed at least once: counted here, or kept as a reusable
        pass (``check_results``, which `pipeline-runner check` also fills)."""
        return bool(
            self.db.query("SELECT 1 FROM check_outcomes WHERE key = ? AND passes > 0", (key,))
            or self.db.query("SELECT 1 FROM check_results WHERE key = ?", (key,))
        )

    def rerun(self, key: str, cleared: bool) -> None:
        """Count a rerun of the check ``key`` after a flaky failure, and whether it passed."""
        with self.db.write() as conn:
            conn.execute(
                "UPDATE check_outcomes SET reruns = reruns + 1, cleared = cleared + ? WHERE key = ?",
                (int(cleared), key),
            )

    def flaky(self, limit: int = SHOWN) -> list[FlakyPhase]:
        """The phases that passed and failed on one content, most recently run first."""
        rows = self.db.query(
            "SELECT phase, SUM(passes), SUM(fails), SUM(reruns), SUM(cleared), MAX(last_at) FROM "
            "(SELECT * FROM check_outcomes WHERE passes > 0 AND fails > 0 ORDER BY last_at DESC LIMIT 1000) "
            "GROUP BY phase ORDER BY MAX(last_at) DESC LIMIT ?",
            (limit,),
        )
        return [FlakyPhase(str(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4]), str(r[5])) for r in rows]


class Rerun(enum.StrEnum):
    """Whether a rejected check of one attempt is run once more before the task is charged."""

    RERUN = "rerun"  # every check that rejected it passed before on the very same content
    NOT_REJECTED = "not_rejected"  # it passed, or stopped on a fault that is no task's
    CANCELLED = "cancelled"  # the task was cancelled: nothing more runs
    NO_EVIDENCE = "no_evidence"  # a check that rejected it never passed on this content
    SPENT = "spent"  # this attempt had its one rerun already


@dataclass(frozen=True)
class Culprit:
    """A check that rejected an attempt, its content key (None: no recipe applied) and whether
    that very check passed before."""

    phase: str
    key: str | None
    passed_before: bool


def decide_rerun(
    status: VerifyStatus, *, cancelled: bool, reruns: int, culprits: Sequence[Culprit]
) -> tuple[Rerun, str]:
    """Whether to run a rejected attempt's checks once more (pure), and why in one line.

    Only a failure (not a fault, which is never the task's) of checks that all passed before on
    the same content is evidence enough; one rerun per attempt, so that a check that alternates
    forever costs one extra run, not a loop."""
    if status is not VerifyStatus.FAIL:
        return Rerun.NOT_REJECTED, f"the checks ended {status.value}"
    if cancelled:
        return Rerun.CANCELLED, "the task was cancelled"
    if reruns >= 1:
        return Rerun.SPENT, "this attempt was checked once more already"
    unseen = [c.phase for c in culprits if c.key is None or not c.passed_before]
    if not culprits or unseen:
        return Rerun.NO_EVIDENCE, f"never passed on this content: {', '.join(unseen) or '(no failed phase)'}"
    return Rerun.RERUN, f"passed before on this very content: {', '.join(c.phase for c in culprits)}"


def culprits(outcomes: Sequence[PhaseOutcome], phases: Mapping[str, PhaseConfig]) -> list[str]:
    """The phases whose failure rejected an attempt (pure): each required phase that failed, or,
    for one that could not run because an optional phase it needs failed, that phase."""
    state = {o.name: o.state for o in outcomes}
    found: list[str] = []
    for o in outcomes:
        if o.state is not PhaseState.FAILED or o.optional:
            continue
        needs = phases[o.name].needs if o.name in phases else []
        failed_needs = [n for n in needs if state.get(n) is PhaseState.FAILED]
        for name in failed_needs or [o.name]:
            if name not in found:
                found.append(name)
    return found


def carried_passes(first: VerifyResult) -> dict[str, CachedPass]:
    """The phases that ran and passed in a first run, as passes a rerun reuses instead of running
    them again (pure): the rerun repeats only what failed or did not run."""
    return {
        o.name: CachedPass(o.row, o.duration, o.exit_code or 0, now_iso())
        for o in first.phases
        if o.state in (PhaseState.PASSED, PhaseState.SKIPPED) and o.row is not None
    }


def check_with_rerun(
    graph: GraphRun, outcomes: CheckOutcomes, log_path: Path, task_id: str,
    rerun_listener: Callable[[Mapping[str, int]], PhaseListener],
) -> VerifyResult:  # fmt: skip
    """Run ``graph``'s checks; if they are rejected by checks that each passed before on the very
    same content, run them once more (decide_rerun rules) on a fresh checkout before the task is
    charged. The rerun's phases are recorded by ``rerun_listener(rows)``, ``rows`` being the
    first run's row of each phase, which a rerun row names; what passed is not run again."""
    result = run_graph(graph)
    reruns = 0
    while True:
        blamed = [
            Culprit(name, key, key is not None and outcomes.passed_before(key))
            for name in culprits(result.phases, graph.phases)
            for key in [content_key(graph, name)]
        ]
        cancelled = graph.cancel is not None and graph.cancel.is_set()
        decision, _ = decide_rerun(result.status, cancelled=cancelled, reruns=reruns, culprits=blamed)
        if decision is not Rerun.RERUN:
            return result
        named = ", ".join(c.phase for c in blamed)
        _log(log_path, f"[{named}] failed, but passed before on this very content (flaky?): checking once more")
        logger.info("{}: {} failed on a tree where it passed before (flaky?); checking once more", task_id, named)
        rows = {o.name: o.row for o in result.phases if o.row is not None}
        again = run_graph(replace(
            graph, log_dir=graph.log_dir.with_name(f"{graph.log_dir.name}-rerun-{reruns + 1}"),
            carried=carried_passes(result), listener=rerun_listener(rows),
        ))  # fmt: skip
        reruns += 1
        cleared = again.status in (VerifyStatus.PASS, VerifyStatus.SKIP)
        for culprit in blamed:
            if culprit.key is not None:
                outcomes.rerun(culprit.key, cleared)
        _log(log_path, f"[{named}] passed on the rerun: a flaky failure, not charged" if cleared
             else f"[{named}] the rerun ended {again.status.value} too: the task's failure")  # fmt: skip
        result = replace(again, phases=tuple(replace(o, rerun_of=rows.get(o.name)) for o in again.phases))
        if cleared:
            result = replace(result, summary=f"{result.summary}; flaky: {named} failed once, then passed on a rerun")


def _log(log_path: Path, line: str) -> None:
    """A line in the attempt's own log."""
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(line + "\n")
