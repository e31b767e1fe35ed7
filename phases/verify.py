"""Verify phase: deterministic. The branch shape, then the configured recipes in the worktree."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runner import procs
from runner.config import Recipe, recipe_argv
from runner.errors import GitError, ProcessError
from runner.git import Git
from runner.leaks import find_leaks, refusal
from runner.redact import redact
from runner.templates import fill_argv, missing_values

FEEDBACK_TAIL_CHARS = 4000


class VerifyStatus(enum.StrEnum):
    """How verification ended."""

    PASS = "pass"
    SKIP = "skip"  # a recipe said the rest does not apply (one of skip_exit_codes)
    FAIL = "fail"


@dataclass(frozen=True)
class VerifyResult:
    """The verdict, with the feedback for the next prompt and the skipped recipes."""

    status: VerifyStatus
    summary: str = ""
    skipped: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RecipeRun:
    """Values for substitution and the limits of one recipe run."""

    values: dict[str, str | None]
    skip_exit_codes: Sequence[int]
    timeout: float


def run_recipes(recipes: Sequence[Recipe], cwd: Path, spec: RecipeRun, log_path: Path) -> VerifyResult:
    """Run each recipe in ``cwd``; the whole output goes to ``log_path``, its tail to the result."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    skipped: list[str] = []
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
            log.write(f"$ {' '.join(argv)}\n")
            log.flush()
            try:
                done = procs.run(argv, cwd=cwd, check=False, timeout=spec.timeout)
            except ProcessError as exc:
                log.write(f"{exc}\n")
                return VerifyResult(VerifyStatus.FAIL, f"`{' '.join(argv)}` could not run: {exc}", skipped)
            log.write(redact(done.output))
            if done.timed_out:
                return VerifyResult(
                    VerifyStatus.FAIL,
                    f"`{' '.join(argv)}` timed out after {spec.timeout:g}s:\n{_tail(done.output)}",
                    skipped,
                )
            log.write(f"(exit {done.exit_code})\n")
            if done.exit_code in spec.skip_exit_codes:
                return VerifyResult(
                    VerifyStatus.SKIP,
                    f"`{' '.join(argv)}` exited {done.exit_code}: remaining recipes skipped",
                    skipped,
                )
            if done.exit_code != 0:
                return VerifyResult(
                    VerifyStatus.FAIL,
                    f"`{' '.join(argv)}` failed (exit {done.exit_code}):\n{_tail(done.output)}",
                    skipped,
                )
    return VerifyResult(VerifyStatus.PASS, "all recipes passed", skipped)


def verify_task(
    git: Git,
    check_out: Callable[[str], Path],
    task_id: str,
    base: str,
    commit: str,
    recipes: Sequence[Recipe],
    spec: RecipeRun,
    log_path: Path,
    secrets: Mapping[str, str] | None = None,
) -> VerifyResult:
    """``commit`` must be exactly one commit over base and carry none of the ``secrets`` the
    agent was handed; then the recipes must pass on a pristine checkout of exactly that commit
    (made by ``check_out``): nothing the agent left uncommitted in its workspace is seen."""
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
    return run_recipes(recipes, check_out(commit), spec, log_path)


def _tail(output: str) -> str:
    output = output.strip()
    if len(output) <= FEEDBACK_TAIL_CHARS:
        return output
    return "...\n" + output[-FEEDBACK_TAIL_CHARS:]
