"""Verify phase: deterministic. The commit's shape and secrets, then the recipes on a pristine checkout of it."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from phases.outcomes import VerifyStatus
from runner import procs
from runner.config import PhaseConfig, Recipe, recipe_argv
from runner.errors import GitError
from runner.git import Git
from runner.leaks import find_leaks, refusal
from runner.templates import fill_argv, missing_values, placeholders

if TYPE_CHECKING:
    from phases.checks import PhaseOutcome

FEEDBACK_TAIL_CHARS = 4000
# The summary of recipes ended because the task was cancelled (its outcome is then discarded).
STOPPED = "stopped: the task was cancelled"


@dataclass(frozen=True)
class VerifyResult:
    """The verdict, with the feedback for the next prompt, the skipped recipes, and how many passed."""

    status: VerifyStatus
    summary: str = ""
    skipped: list[str] = field(default_factory=list)
    passed: int = 0  # recipes (of one phase) or phases (of a graph) that ran, or were reused, and passed
    exit_code: int | None = None  # of the last recipe that ran
    # Per phase of the check graph, in the order they ended; empty for a single list of recipes.
    phases: tuple[PhaseOutcome, ...] = ()


def counts_as_passed(result: VerifyResult, *, allow_unchecked: bool) -> bool:
    """Whether ``result`` lets the commit go on (to integration, or onto base).

    A failure never does; a verification in which no check ran only with ``allow_unchecked``
    (the config's ``allow_unchecked`` key).
    """
    if result.status is VerifyStatus.UNCHECKED:
        return allow_unchecked
    return result.status in (VerifyStatus.PASS, VerifyStatus.SKIP)


# Values a task may lack: a recipe needing one is skipped for such a task. The others (task id,
# workspace, base, patchset) are always known.
OPTIONAL_VALUES = frozenset({"namespace"})


def coverage_problem(phases: Mapping[str, PhaseConfig]) -> str | None:
    """Why some tasks would get no check from the graph's required phases, or None when every task gets one."""
    recipes = [r for phase in phases.values() if not phase.optional for r in phase.run]
    if not recipes:
        return "no phases are configured, so no check would run on any task"
    needs = [placeholders(" ".join(recipe_argv(r))) & OPTIONAL_VALUES for r in recipes]
    if all(needs):
        names = ", ".join("{" + n + "}" for n in sorted(set().union(*needs)))
        return (
            f"every recipe of a required phase needs {names}, so no check would run on a task without one; "
            "add a recipe that applies to every task"
        )
    return None


@dataclass(frozen=True)
class RecipeRun:
    """Values for substitution and the limits of one recipe run."""

    values: dict[str, str | None]
    skip_exit_codes: Sequence[int]
    timeout: float
    env: Mapping[str, str] | None = None  # added to the runner's environment
    stop: threading.Event | None = None  # set: the task was cancelled, its recipes are ended


def run_recipes(recipes: Sequence[Recipe], cwd: Path, spec: RecipeRun, log_path: Path) -> VerifyResult:
    """Run each recipe in ``cwd``; the whole output goes to ``log_path``, its tail to the result.

    The result is UNCHECKED, not PASS, when no recipe ran and exited 0.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    skipped: list[str] = []
    passed = 0
    with open(log_path, "a", encoding="utf-8") as log:
        for recipe in recipes:
            template = recipe_argv(recipe)
            missing = missing_values(template, spec.values)
            text = " ".join(template)
            if missing:
                # A recipe about the task's namespace does not apply to a task without one.
                skipped.append(f"{text} (no {', '.join(sorted(missing))})")
                log.write(f"$ {text}\n(skipped: the task has no {', '.join(sorted(missing))})\n")
                continue
            argv = fill_argv(template, spec.values)
            if spec.stop is not None and spec.stop.is_set():
                log.write(f"$ {' '.join(argv)}\n(not run: the task was cancelled)\n")
                return VerifyResult(VerifyStatus.FAIL, STOPPED, skipped, passed)
            log.write(f"$ {' '.join(argv)}\n")
            log.flush()  # the recipe's own output is appended to the same file after this line
            # Streamed to the log (capped, masked), never held in memory; every process the recipe
            # starts ends with it, and with the runner if the runner dies.
            env = {**os.environ, **spec.env} if spec.env else None
            done = procs.run_logged(argv, cwd, log_path=log_path, timeout=spec.timeout, env=env, stop=spec.stop)
            if done.exit_code is None and not done.timed_out:
                log.write(f"{done.error}\n")
                return VerifyResult(
                    VerifyStatus.FAULT, f"`{' '.join(argv)}` could not run: {done.error}", skipped, passed
                )
            if done.timed_out:
                return VerifyResult(
                    VerifyStatus.FAIL,
                    f"`{' '.join(argv)}` timed out after {spec.timeout:g}s:\n{_tail(done.tail)}",
                    skipped,
                    passed,
                    done.exit_code,
                )
            log.write(f"(exit {done.exit_code})\n")
            if done.exit_code in spec.skip_exit_codes:
                summary = (
                    f"`{' '.join(argv)}` exited {done.exit_code} (a skip code): remaining recipes skipped"
                )
                if not passed:
                    return VerifyResult(
                        VerifyStatus.UNCHECKED, f"{summary}, before any check passed", skipped, passed,
                        done.exit_code,
                    )  # fmt: skip
                return VerifyResult(
                    VerifyStatus.SKIP, f"{summary} after {passed} passed", skipped, passed, done.exit_code
                )
            if done.exit_code != 0:
                return VerifyResult(
                    VerifyStatus.FAIL,
                    f"`{' '.join(argv)}` failed (exit {done.exit_code}):\n{_tail(done.tail)}",
                    skipped,
                    passed,
                    done.exit_code,
                )
            passed += 1
    if not recipes:
        return VerifyResult(VerifyStatus.UNCHECKED, "no recipes are configured", skipped, passed)
    if not passed:
        return VerifyResult(
            VerifyStatus.UNCHECKED, f"every recipe was skipped: {', '.join(skipped)}", skipped, passed
        )
    return VerifyResult(VerifyStatus.PASS, "all recipes passed", skipped, passed, 0)


def verify_task(
    git: Git,
    task_id: str,
    base: str,
    commit: str,
    check: Callable[[str], VerifyResult],
    secrets: Mapping[str, str] | None = None,
) -> VerifyResult:
    """``commit`` must be exactly one commit over base and carry none of the ``secrets`` the
    agent was handed; then ``check`` runs the graph's verify phases on exactly that commit, in a
    pristine checkout of it: nothing the agent left uncommitted in its workspace is seen."""
    try:
        count = git.count_commits(f"refs/heads/{base}", commit)
    except GitError as exc:
        return VerifyResult(VerifyStatus.FAIL, f"branch shape check failed: {exc}")
    if count != 1:
        return VerifyResult(
            VerifyStatus.FAIL,
            f"expected exactly 1 commit on {task_id} over {base}, found {count}; "
            "squash your work into one commit (amend it) on top of base",
        )
    leaks = find_leaks(git, f"{commit}^", commit, secrets or {})
    if leaks:
        return VerifyResult(
            VerifyStatus.FAIL, refusal(leaks, "remove it from the files and the message, then amend the commit")
        )
    return check(commit)


def _tail(output: str) -> str:
    output = output.strip()
    if len(output) <= FEEDBACK_TAIL_CHARS:
        return output
    return "...\n" + output[-FEEDBACK_TAIL_CHARS:]
