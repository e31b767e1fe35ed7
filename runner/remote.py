"""The git remote where runners on several hosts meet: task commits cross through it, base moves on it.

A task's commit is published under ``refs/pipeline/tasks/ID`` on the remote, a namespace no
person's branch lives in, so that another host can integrate it. Base moves on the remote only by
one push that is a compare-and-swap twice over: base must still be at the sha this runner built
on (``--force-with-lease=refs/heads/BASE:OLD``) and the receipts (the git notes every landed commit
carries) must still be where this runner read them; with ``--atomic`` both refs move or neither
does. A person's push to base in between fails the push as MOVED: it is never overwritten, exactly
as the local compare-and-swap of ``runner.git`` never overwrites a person's commit.

Expected outcomes are result values; a remote that cannot be reached, or that refuses for a
reason of its own (a hook, a protected branch), is not a task's fault and says so.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass

from runner.errors import GitError
from runner.git import Git
from runner.procs import ProcResult
from runner.workspace import TASK_REFS, task_ref

# Where this runner keeps what it last read of the remote; the runner's own namespace.
REMOTE_REFS = "refs/pipeline/remote/"
# How long one exchange with the remote may take before it counts as unreachable.
REMOTE_TIMEOUT_SECONDS = 120.0
# Why a ref was rejected, in `git push --porcelain` (see git-push(1), OUTPUT): a lease that no
# longer holds, or a push that is not a fast-forward of what the remote has.
_MOVED = re.compile(r"\((stale info|fetch first|non-fast-forward|atomic push failed)\)")


class PushStatus(enum.StrEnum):
    """How a push to the remote ended."""

    PUSHED = "pushed"
    MOVED = "moved"  # a ref was not where this runner expected it (a person pushed): nothing moved
    REJECTED = "rejected"  # the remote refused (a hook, a protected ref): nothing moved; not a task's fault
    UNREACHABLE = "unreachable"  # no answer, or no such remote: nothing moved; not a task's fault


@dataclass(frozen=True)
class PushResult:
    """A push's outcome, with git's own words for anything but success."""

    status: PushStatus
    detail: str = ""

    @property
    def ok(self) -> bool:
        """True when every ref moved."""
        return self.status is PushStatus.PUSHED


class Remote:
    """One named remote of the person's repository (``remote:`` in the config)."""

    def __init__(self, git: Git, name: str) -> None:
        self.git = git
        self.name = name

    def problem(self) -> str | None:
        """Why this remote cannot be used, or None: it must be configured in the repository."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.name):
            return f"remote {self.name!r} is not a remote name"
        done = self.git.run("remote", "get-url", self.name, check=False)
        if not done.ok:
            return f"the repository has no remote {self.name!r} (git remote add {self.name} URL)"
        return None

    def tracking(self, ref: str) -> str:
        """The local ref that holds what this runner last read of the remote's ``ref``."""
        return REMOTE_REFS + ref.removeprefix("refs/")

    def fetch(self, ref: str, *more: str) -> str | None:
        """Read the remote's ``ref`` (a full name), and ``more`` in the same exchange, into their
        tracking refs; the sha of ``ref``, or None when the remote has no such ref (then nothing is
        fetched). Raises GitError when the remote cannot be reached."""
        refs = (ref, *more)
        done = self._ask(
            "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-recurse-submodules", "--no-auto-gc",
            self.name, *[f"+{name}:{self.tracking(name)}" for name in refs],
        )  # fmt: skip
        if not done.ok:
            if "couldn't find remote ref" in done.output and not more:
                self.git.delete_ref(self.tracking(ref))
                return None
            raise GitError(["git", "fetch", self.name, *refs], done.exit_code, done.output)
        return self.git.rev(self.tracking(ref))

    def fetch_published(self) -> None:
        """Read every task commit published on the remote, in one exchange, into their tracking refs
        (those the remote no longer has go). Raises GitError when the remote cannot be reached."""
        pattern = f"{TASK_REFS}*"
        done = self._ask(
            "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-recurse-submodules", "--no-auto-gc",
            "--prune", self.name, f"+{pattern}:{self.tracking(pattern)}",
        )  # fmt: skip
        if not done.ok:
            raise GitError(["git", "fetch", self.name, pattern], done.exit_code, done.output)

    def read(self, *refs: str) -> dict[str, str]:
        """Where the remote's ``refs`` (full names) point now, in one exchange that fetches no
        object; a ref the remote lacks is left out. Raises GitError when it cannot be reached."""
        done = self._ask("ls-remote", "--quiet", self.name, *refs)
        if not done.ok:
            raise GitError(["git", "ls-remote", self.name], done.exit_code, done.output)
        found = {}
        for line in done.output.splitlines():
            sha, _, ref = line.partition("\t")
            if ref in refs:  # ls-remote matches patterns by their tail: only the exact names count
                found[ref] = sha.strip()
        return found

    def publish(self, task_id: str, sha: str) -> PushResult:
        """Put a task's commit where other hosts find it: ``refs/pipeline/tasks/ID`` on the remote
        (replacing an earlier patchset's). The id is checked before it reaches git."""
        return self.publish_all({task_id: sha})

    def publish_all(self, commits: Mapping[str, str]) -> PushResult:
        """Publish several tasks' commits (task id -> sha) in one push; PUSHED when all went."""
        return self._push(*[f"+{sha}:{task_ref(task_id)}" for task_id, sha in commits.items()])

    def unpublish(self, task_ids: list[str]) -> PushResult:
        """Remove the published commits of tasks that landed, in one push (not atomic: one already
        gone does not keep the others)."""
        return self._push(*[f":{task_ref(task_id)}" for task_id in task_ids])

    def fetch_task(self, task_id: str) -> str | None:
        """A task's commit as published on the remote, into its tracking ref; None when unpublished."""
        return self.fetch(task_ref(task_id))

    def move_base(
        self, base: str, old: str, new: str, *, notes_ref: str | None = None, notes_old: str | None = None
    ) -> PushResult:
        """Move the remote's base from ``old`` to ``new`` and, in the same atomic push, its
        ``notes_ref`` from ``notes_old`` (None: it must not exist there yet) to this repository's
        ``notes_ref``. MOVED, with nothing changed, when either was elsewhere on the remote."""
        head = f"refs/heads/{base}"
        args = ["--atomic", f"--force-with-lease={head}:{old}"]
        refspecs = [f"{new}:{head}"]
        if notes_ref is not None:
            args.append(f"--force-with-lease={notes_ref}:{notes_old or ''}")
            refspecs.append(f"{notes_ref}:{notes_ref}")
        return self._push(*args, *refspecs)

    def _ask(self, command: str, *args: str) -> ProcResult:
        """``git COMMAND ARGS`` with the remote, given at most REMOTE_TIMEOUT_SECONDS; a GitError
        when it ran out of time, its result otherwise (failed or not)."""
        done = self.git.run(command, *args, check=False, timeout=REMOTE_TIMEOUT_SECONDS, remote=True)
        if done.timed_out:
            raise GitError(["git", command, self.name], None, done.output, f"{self.name} timed out after {REMOTE_TIMEOUT_SECONDS:g}s")
        return done

    def _push(self, *args: str) -> PushResult:
        done = self.git.run(
            "push", "--porcelain", "--no-verify", "--quiet", self.name, *args,
            check=False, timeout=REMOTE_TIMEOUT_SECONDS, remote=True,
        )  # fmt: skip
        if done.timed_out:  # ended: all or nothing was pushed (atomic); the remote, read again, tells
            return PushResult(PushStatus.UNREACHABLE, f"{self.name} timed out after {REMOTE_TIMEOUT_SECONDS:g}s")
        rejected = [line for line in done.output.splitlines() if line.startswith("!")]
        if done.ok and not rejected:
            return PushResult(PushStatus.PUSHED)
        # What a hook of the remote said is its reason, and the person's to read.
        said = [line.strip() for line in done.output.splitlines() if line.startswith("remote: ") and line[8:].strip()]
        detail = "\n".join([*said[-10:], *rejected]) or done.output.strip()[-2000:]
        if not rejected:
            return PushResult(PushStatus.UNREACHABLE, detail)
        if all(_MOVED.search(line) and "[remote rejected]" not in line for line in rejected):
            return PushResult(PushStatus.MOVED, detail)
        return PushResult(PushStatus.REJECTED, detail)
