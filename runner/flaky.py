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

from phases.checks import GraphRun, PhaseListener, PhaseOutcome, PhaseState, content_key, run_graph
from phases.outcomes import VerifyStatus
from phases.verify import VerifyResult
from runner.checkcache import CachedPass
from runner.checkoutcomes import CheckOutcomes
from runner.config import PhaseConfig
from runner.logs import logger
from runner.state import now_iso


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
