"""Integrate phase: deterministic. Build a candidate (a task's change on base's tip, or on the
candidate below it), judge its checks, then compare-and-swap base to it (runner.integrator runs
the stack of candidates).

Base only ever moves forward to a commit that passed the integrate recipes; if someone moved it
meanwhile, the swap is refused and the candidate is built again on the new tip rather than
overwriting theirs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import tenacity

from phases.outcomes import IntegrateStatus, VerifyStatus
from phases.verify import VerifyResult, counts_as_passed
from runner import killpoints
from runner.errors import GitError
from runner.git import Git, PickStatus
from runner.leaks import find_leaks
from runner.leaks import refusal as leak_refusal
from runner.logs import logger
from runner.remote import PushResult, PushStatus

TRAILER = "Task-Id"
RECEIPTS = "refs/notes/pipeline"  # the notes ref every landed commit's receipt is kept under


@dataclass(frozen=True)
class IntegrateResult:
    """Verdict of one integration."""

    status: IntegrateStatus
    detail: str
    new_base: str | None = None  # base's tip after (or, on failure, at) the attempt
    lag: CheckoutLag | None = None  # base moved but its checkout could not follow


@dataclass(frozen=True)
class CheckoutLag:
    """A checkout of base that still shows ``shows`` after base moved on."""

    path: Path
    shows: str
    reason: str


def follow(git: Git, checkout: Path, old: str, new: str) -> None:
    """Bring base's checkout from ``old`` to ``new``, retrying briefly: a person's git command or
    an editor may hold its index for a moment. Raises GitError when it still cannot."""
    for attempt in tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(GitError),
        stop=tenacity.stop_after_attempt(4),
        wait=tenacity.wait_exponential(multiplier=0.1, max=1.0),
        reraise=True,
    ):
        with attempt:
            git.move_checkout(checkout, old, new)


def base_checkout(git: Git, base: str) -> Path | None:
    """The worktree (the main one included) that has base checked out, if any."""
    for tree in git.worktrees():
        if tree.branch == base:
            return tree.path
    return None


def _dirty_message(git: Git, base: str, checkout: Path | None) -> str | None:
    if checkout is None:
        return None
    dirty = git.dirty_paths(checkout)
    if not dirty:
        return None
    return (
        f"base branch {base!r} is checked out in {checkout} with uncommitted changes ({_first(dirty)}); "
        "integration would leave that checkout inconsistent, so base was not moved. Commit or "
        "stash those changes (or check out another branch there) and the task will be integrated."
    )


def _in_the_way_message(base: str, checkout: Path | None, added: list[str]) -> str | None:
    """Untracked files in base's checkout where the task adds the paths ``added``.

    Checked before base moves: afterwards, the checkout could not follow and would show the
    change reversed as if someone had made it there.
    """
    if checkout is None:
        return None
    blocked = []
    for rel in added:
        path = checkout / rel
        # A file where the commit needs a directory is in the way too.
        blockers = [path, *(p for p in path.parents if checkout in p.parents)]
        if any(os.path.lexists(b) and (b == path or not b.is_dir()) for b in blockers):
            blocked.append(rel)
    if not blocked:
        return None
    return (
        f"base branch {base!r} is checked out in {checkout}, where untracked files ({_first(blocked)}) "
        "are in the way of files this task adds; base was not moved. Move or delete them there and "
        "the task will be integrated."
    )


def _first(paths: list[str], count: int = 5) -> str:
    """A few paths for a message."""
    return ", ".join(paths[:count]) + (" ..." if len(paths) > count else "")


def candidate_for(git: Git, old: str, commit: str, task_id: str | None) -> tuple[IntegrateStatus, str]:
    """The commit that would land: ``commit``'s change on ``old``, computed in the repository
    without any checkout, carrying the task's ``Task-Id`` trailer. Returns (INTEGRATED, its sha),
    or (CONFLICT, git's account of the conflict), or (EMPTY, "")."""
    # Read first: the parent it reads with the message saves merge_onto a lookup of its own.
    info = git.commit_info(commit, TRAILER)
    merged = git.merge_onto(old, commit)
    if merged.status is PickStatus.STALE:
        return IntegrateStatus.STALE, merged.output
    if merged.status is PickStatus.CONFLICT:
        return IntegrateStatus.CONFLICT, merged.output.strip()[-3000:]
    if merged.status is PickStatus.EMPTY:
        return IntegrateStatus.EMPTY, ""
    assert merged.tree is not None
    message = info.message
    if task_id is not None and task_id not in info.trailer_values:
        # Base's history must say which task each commit came from, prompt followed or not.
        message = git.with_trailer(message, TRAILER, task_id)
    return IntegrateStatus.INTEGRATED, git.commit_tree(merged.tree, old, message, info.author)


@dataclass(frozen=True)
class Candidate:
    """A commit that would land: a task's change on ``parent`` (base's tip, or the candidate
    below it in the stack), computed without a checkout."""

    sha: str
    parent: str


def build(
    git: Git, base: str, parent: str, commit: str, *, task_id: str | None, secrets: Mapping[str, str] | None
) -> Candidate | IntegrateResult:
    """``commit``'s change on ``parent`` as a candidate, or why it cannot be one (a conflict, an
    empty change, a secret it would put on base)."""
    status, sha = candidate_for(git, parent, commit, task_id)
    if status is IntegrateStatus.STALE:
        return IntegrateResult(
            IntegrateStatus.STALE,
            f"{base} was rewritten (reset or force-pushed) under the task's commit: {sha}; developed again on "
            f"its new tip ({parent[:12]}), not charged",
            parent,
        )
    if status is IntegrateStatus.CONFLICT:
        return IntegrateResult(
            IntegrateStatus.CONFLICT, f"applying {commit[:12]} onto {base} ({parent[:12]}) conflicts:\n{sha}", parent
        )
    if status is IntegrateStatus.EMPTY:
        return IntegrateResult(IntegrateStatus.EMPTY, f"the commit changes nothing on {base} ({parent[:12]})", parent)
    leaks = find_leaks(git, parent, sha, secrets or {})
    if leaks:
        return IntegrateResult(IntegrateStatus.CHECKS_FAILED, leak_refusal(leaks), parent)
    return Candidate(sha, parent)


def refusal(git: Git, base: str, checkout: Path | None, tip: str, candidate: str) -> IntegrateResult | None:
    """Why base's checkout cannot follow base from ``tip`` to ``candidate`` (uncommitted changes,
    untracked files where the candidate adds files), or None."""
    if checkout is None:
        return None
    message = _dirty_message(git, base, checkout) or _in_the_way_message(
        base, checkout, git.added_paths(tip, candidate)
    )
    return IntegrateResult(IntegrateStatus.REFUSED, message) if message else None


def judge_checks(
    checked: VerifyResult, base: str, parent: str, *, allow_unchecked: bool
) -> IntegrateResult | None:
    """What the candidate's checks say: None when it may land, otherwise the outcome."""
    if checked.status is VerifyStatus.FAULT:
        return IntegrateResult(IntegrateStatus.FAULT, f"checks could not run: {checked.summary}", parent)
    if checked.status is VerifyStatus.FAIL:
        return IntegrateResult(
            IntegrateStatus.CHECKS_FAILED,
            f"checks failed on {base} ({parent[:12]}) with the change applied: {checked.summary}",
            parent,
        )
    # No phase at integration is the config's choice (a pass); phases that all skipped
    # checked nothing.
    if not counts_as_passed(checked, allow_unchecked=allow_unchecked):
        return IntegrateResult(IntegrateStatus.UNCHECKED, checked.summary, parent)
    return None


def land_chain(
    git: Git,
    base: str,
    chain: Sequence[Candidate],
    checkout: Path | None,
    *,
    before_swap: Callable[[str], str | None] = lambda sha: None,
    receipt: Callable[[str], str] | None = None,
    push: Callable[[str, str], PushResult] | None = None,
) -> list[IntegrateResult] | None:
    """Move ``base`` from the bottom candidate's parent to the top of ``chain`` (each candidate
    built on the one below it, each one's checks passed) in one compare-and-swap, every candidate's
    receipt attached first; base's checkout follows. Base then holds each candidate, each checked
    on exactly its own tree, and one push moves a remote's base over all of them.

    Returns the outcome of a prefix of the chain, bottom first: every one INTEGRATED (those above
    were not landed: ``before_swap`` stopped the next one, or the checkout is in the way of its
    files; they are looked at again), or a single outcome for the bottom one that did not land.
    None when base is no longer at the bottom's parent (a lost race: nothing was changed).
    ``before_swap`` is told each candidate before base moves and may return a reason to stop
    instead. ``push`` (old, new), when base lives on a remote too, moves the remote's base first:
    the local base follows only once it was pushed."""
    assert chain and all(upper.parent == lower.sha for lower, upper in pairwise(chain))
    old = chain[0].parent
    refused = refusal(git, base, checkout, old, chain[-1].sha)
    if refused and len(chain) > 1:
        chain = chain[:1]  # the bottom alone may still land: the files in the way are another's
        refused = refusal(git, base, checkout, old, chain[0].sha)
    if refused:
        return [refused]
    # Each candidate is recorded before its receipt is attached, so that a receipt left by a kill
    # before the swap names a recorded candidate, which recovery finds and removes.
    for index, candidate in enumerate(chain):
        stop = before_swap(candidate.sha)
        if stop and index == 0:
            return [IntegrateResult(IntegrateStatus.STOPPED, stop)]
        if stop:
            chain = chain[:index]  # the stopped one and what is built on it are looked at again
            break
    top = chain[-1].sha
    notes_before = git.rev(RECEIPTS) if push is not None else None
    if receipt is not None:
        for candidate in chain:
            git.add_note(RECEIPTS, candidate.sha, receipt(candidate.sha))
        killpoints.reached("receipt-attached")
    pushed = False
    try:
        if push is not None:
            outcome = push(old, top)
            if outcome.status is not PushStatus.PUSHED:
                if receipt is not None:
                    # The receipts go back to what they were rather than gaining a removal: a push
                    # that went through unheard (a timeout) keeps its receipts on the remote.
                    if notes_before is None:
                        git.delete_ref(RECEIPTS)
                    else:
                        git.update_ref(RECEIPTS, notes_before)
                if outcome.status is PushStatus.MOVED:
                    return None
                return [
                    IntegrateResult(
                        IntegrateStatus.FAULT, f"{base} could not be moved on the remote ({outcome.status.value}): "
                        f"{outcome.detail}", old,
                    )
                ]  # fmt: skip
            pushed = True
            killpoints.reached("pushed")
        swapped = git.compare_and_swap(base, top, old)
    except BaseException:
        if receipt is not None and not pushed and git.branch_sha(base) != top:
            for candidate in chain:
                git.remove_note(RECEIPTS, candidate.sha)  # these candidates did not land
        raise
    landed = [IntegrateResult(IntegrateStatus.INTEGRATED, c.sha, c.sha) for c in chain]
    if not swapped and pushed:
        # Landed on the remote, which is where base lives: a local commit made on base meanwhile
        # is told apart by the next look at the remote, which does not take it for the runner's.
        logger.warning("{} landed on the remote's {}, but {} here moved meanwhile", top[:12], base, base)
        return landed
    if not swapped:
        if receipt is not None:
            for candidate in chain:
                git.remove_note(RECEIPTS, candidate.sha)  # these candidates never landed
        return None
    killpoints.reached("swapped")
    if checkout is not None:
        try:
            follow(git, checkout, old, top)
        except GitError as exc:
            # Base has moved (correctly); only that checkout's files lag behind.
            logger.warning("base moved, but updating its checkout {} failed: {}", checkout, exc)
            landed[-1] = IntegrateResult(
                IntegrateStatus.INTEGRATED, top, top, CheckoutLag(checkout, old, str(exc).strip()[-500:])
            )
    return landed
