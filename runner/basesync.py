"""Base as a mirror of the remote's (``remote:`` in the config): where runners on several hosts meet.

Every cycle, before any candidate is built, the runner reads the remote's base and its receipts
(the notes ref) and brings the local base forward to the remote's with the local compare-and-swap,
its checkout along, as a move of base outside the runner is followed today. The commits another
host landed carry their receipts on the remote, which is the proof that a runner landed them
(runner.basewatch does not hold them as a person's). A task's commit is published to the remote
once it is brought in, so another host can integrate it; a candidate lands by being pushed to the
remote's base first (runner.remote: an atomic compare-and-swap of base and receipts), and only
then does the local base follow.

What is no task's fault pauses integration as a fault (area ``remote``), never charged, retried
with a growing delay: a remote that cannot be reached, a remote base that is not a descendant of
the local one (force-pushed), a local base with commits the remote lacks, a remote without base.
"""

from __future__ import annotations

import enum
from pathlib import Path

from phases.integrate import RECEIPTS, CheckoutLag, base_checkout, follow
from runner import receipts
from runner.basewatch import BaseWatch
from runner.config import LoadedConfig, PipelineConfig
from runner.errors import GitError
from runner.faults import FaultBoard
from runner.git import Git
from runner.logs import logger
from runner.remote import PushResult, PushStatus, Remote
from runner.workspace import task_ref

AREA = "remote"  # the fault that holds integration while base cannot be read from or moved on the remote


class Mirror(enum.StrEnum):
    """How the local base stands against the remote's, and so what a look at the remote does."""

    SAME = "same"  # nothing to do
    FAST_FORWARD = "fast-forward"  # the remote's base contains the local one: the local follows
    AHEAD = "ahead"  # the local base holds commits the remote lacks: a fault until pushed or reset
    REWRITTEN = "rewritten"  # the remote's base does not contain the local one (force-pushed): a fault
    MISSING = "missing"  # the remote has no base branch: a fault


def mirror(local: str | None, remote: str | None, *, local_in_remote: bool, remote_in_local: bool) -> Mirror:
    """What the local base must do to mirror the remote's (pure). ``local_in_remote``: the local
    tip is an ancestor of the remote's; ``remote_in_local``: the other way round."""
    if remote is None:
        return Mirror.MISSING
    if local == remote:
        return Mirror.SAME
    if local is None or local_in_remote:
        return Mirror.FAST_FORWARD
    if remote_in_local:
        return Mirror.AHEAD
    return Mirror.REWRITTEN


def remote_problem(loaded: LoadedConfig) -> str | None:
    """Why the configured ``remote`` cannot be used, naming the key and where it was set; None
    when there is none or it is one of the repository's remotes. Whether it answers is not asked
    here: an unreachable remote is a fault of the moment, not of the config."""
    name = loaded.config.remote
    if name is None:
        return None
    problem = Remote(Git(loaded.config.repo_path), name).problem()
    if problem is None:
        return None
    return f"{loaded.origin_of('remote').describe()}: key 'remote': {problem}"


class BaseSync:
    """The local base and receipts kept in line with one remote's."""

    def __init__(self, git: Git, base: str, remote: Remote, faults: FaultBoard, watch: BaseWatch) -> None:
        self.git = git
        self.base = base
        self.remote = remote
        self.faults = faults
        self.watch = watch
        self.in_step = False  # the last look found the remote reachable and the local base its mirror
        self.moved = False  # the last look brought the local base forward
        self.reachable = True
        self.notes_seen: str | None = None  # the remote's receipts as last read: the push's lease on them
        self.unpublished: dict[str, str] = {}  # task -> commit, published at the next look that can
        self.retired: set[str] = set()  # landed tasks whose published commit is removed at the next look
        # What each tracking ref (of base and of the receipts) holds, as this process last wrote or
        # read it: the runner alone writes them, so a look where nothing moved asks git nothing.
        self.tracked: dict[str, str | None] = {}

    @classmethod
    def of(cls, config: PipelineConfig, git: Git, faults: FaultBoard, watch: BaseWatch) -> BaseSync | None:
        """The sync for ``config``'s remote, or None without one (base is local only)."""
        if config.remote is None:
            return None
        return cls(git, config.base, Remote(git, config.remote), faults, watch)

    # -- reading the remote ----------------------------------------------------------------------

    def sync(self, *, now: bool = False) -> bool:
        """Read the remote's base and receipts and bring the local ones forward to them. True when
        the local base is the remote's now (integration may go on); otherwise a fault says why.
        While the fault waits out its delay, the remote is not asked again, unless ``now`` (at
        start). ``moved`` says whether this look brought the local base forward."""
        self.in_step = False
        self.moved = False
        if self.faults.retry_at(AREA) is not None and not now:
            return False
        try:
            theirs, self.notes_seen = self.read_remote()
        except GitError as exc:
            self.reachable = False
            self.faults.record(AREA, f"the remote {self.remote.name!r} cannot be read: {_last_line(exc)}; "
                               f"nothing lands on {self.base} until it answers (retried)")  # fmt: skip
            return False
        self.reachable = True
        try:
            self.take_receipts(self.notes_seen)
        except GitError as exc:  # a merge of receipts a killed git command left half done, say
            self.faults.record(AREA, f"the receipts of {self.remote.name!r} could not be merged here: {_last_line(exc)}")
            return False
        local = self.git.branch_sha(self.base)
        differs = local is not None and theirs is not None and local != theirs
        state = mirror(
            local, theirs,
            local_in_remote=differs and self.git.is_ancestor(str(local), str(theirs)),
            remote_in_local=differs and self.git.is_ancestor(str(theirs), str(local)),
        )  # fmt: skip
        if state is Mirror.FAST_FORWARD:
            assert theirs is not None
            if not self.fast_forward(local, theirs):
                return False
            self.moved = True
        elif state is not Mirror.SAME:
            self.faults.record(AREA, self.explain(state, local, theirs))
            return False
        self.faults.clear(AREA)
        self.publish_pending()
        self.in_step = True
        return True

    def read_remote(self) -> tuple[str | None, str | None]:
        """The remote's base and receipts now, each fetched only when it is not here yet (a cycle
        where nothing moved costs one exchange and no object). Raises GitError when unreachable."""
        head = f"refs/heads/{self.base}"
        now: dict[str, str | None] = dict(self.remote.read(head, RECEIPTS))
        moved = []
        for ref in (head, RECEIPTS):
            if ref not in self.tracked:
                self.tracked[ref] = self.git.rev(self.remote.tracking(ref))
            if now.get(ref) is None and self.tracked[ref] is not None:
                self.git.delete_ref(self.remote.tracking(ref))
            elif now.get(ref) is not None and self.tracked[ref] != now[ref]:
                moved.append(ref)
        if moved:  # fetched together: what they hold by now, which may be newer still
            now[moved[0]] = self.remote.fetch(*moved)
            now.update({ref: self.git.rev(self.remote.tracking(ref)) for ref in moved[1:]})
        self.tracked.update({ref: now.get(ref) for ref in (head, RECEIPTS)})
        return now.get(head), now.get(RECEIPTS)

    def explain(self, state: Mirror, local: str | None, theirs: str | None) -> str:
        """The fault's message for a base that cannot mirror the remote's, with what to do."""
        name, base = self.remote.name, self.base
        if state is Mirror.MISSING:
            return f"the remote {name!r} has no branch {base!r}; push it there (git push {name} {base})"
        assert local is not None and theirs is not None
        if state is Mirror.AHEAD:
            return (
                f"{base} here ({local[:12]}) holds commits that {name}'s {base} ({theirs[:12]}) lacks; nothing "
                f"lands until they are pushed (git push {name} {base}) or {base} is reset to {name}'s"
            )
        return (
            f"{name}'s {base} ({theirs[:12]}) does not contain {base} here ({local[:12]}): it was rewritten "
            f"there (force-pushed), or commits were made here while it moved on. Nothing lands until a person "
            f"decides: keep the commits made here by rebasing them onto it (git fetch {name}, then git rebase "
            f"{name}/{base} in {base}'s checkout, then git push {name} {base}), or drop them (git branch -f {base} "
            f"{name}/{base}, or git reset --hard {name}/{base} in its checkout)"
        )

    def fast_forward(self, local: str | None, theirs: str) -> bool:
        """Move the local base to the remote's (compare-and-swap) and bring its checkout along.
        False when the local base moved meanwhile or its ref is locked (looked at again next cycle)."""
        checkout = base_checkout(self.git, self.base)
        try:
            if not self.git.update_ref(f"refs/heads/{self.base}", theirs, local or ""):
                return False
        except GitError as exc:
            logger.info("could not bring {} forward to the remote's yet: {}", self.base, _last_line(exc))
            return False
        logger.info("{} brought forward to {}'s at {}", self.base, self.remote.name, theirs[:12])
        if checkout is not None and local is not None:
            try:
                follow(self.git, checkout, local, theirs)
            except GitError as exc:
                self.watch.checkout_lags(CheckoutLag(Path(checkout), local, str(exc).strip()[-500:]))
        return True

    def take_receipts(self, theirs: str | None) -> None:
        """Make the local receipts hold the remote's: fast-forwarded to them, or merged with them
        when this repository holds receipts the remote does not (pushed with the next landing).
        The remote's receipt wins for a commit both have: the remote is where base lives."""
        if theirs is None:
            return
        ours = self.git.rev(RECEIPTS)
        if ours == theirs or (ours is not None and self.git.is_ancestor(theirs, ours)):
            return
        if ours is None or self.git.is_ancestor(ours, theirs):
            self.git.update_ref(RECEIPTS, theirs, ours or "")
            return
        self.git.run("notes", f"--ref={RECEIPTS}", "merge", "--quiet", "--strategy=theirs", self.remote.tracking(RECEIPTS))

    def vouched(self, sha: str, task_id: str | None = None) -> bool:
        """Whether ``sha`` carries a runner's receipt (for ``task_id``, when given), read from the
        remote with the base that holds it: landed by a runner, on this host or another, after
        its checks passed on its tree."""
        data = receipts.parse(self.git.note(RECEIPTS, sha) or "")
        return data is not None and (task_id is None or data.get("task") == task_id)

    # -- writing to it ---------------------------------------------------------------------------

    def publish(self, task_id: str, sha: str) -> None:
        """Put a task's commit brought in from its workspace on the remote, where another host can
        integrate it: with the others of the same harvest, at its end (publish_pending), before
        any of them can pass verification. One that cannot go then goes at the next look that
        reaches the remote."""
        self.unpublished[task_id] = sha

    def retire(self, task_id: str) -> None:
        """The task landed: its published commit is removed from the remote at the next look (not
        now: this is called inside the state's write transaction, which no network wait may hold)."""
        self.unpublished.pop(task_id, None)
        self.retired.add(task_id)

    def publish_pending(self) -> None:
        """Publish the task commits that could not go earlier, and remove those of tasks that
        landed (once: one that cannot be removed is left, as a ref no person sees)."""
        if self.retired:
            gone, self.retired = sorted(self.retired), set()
            result = self.remote.unpublish(gone)
            if not result.ok:
                logger.info("published commits of {} not removed from {}: {}", ", ".join(gone[:5]),
                            self.remote.name, _last_line(result.detail))  # fmt: skip
            # What this host read of them (to integrate a commit verified elsewhere) goes too: kept,
            # those refs would pile up and keep their commits from git's garbage collection.
            self.git.delete_refs([self.remote.tracking(task_ref(t)) for t in gone])
        if not self.unpublished:
            return
        going = dict(self.unpublished)
        result = self.remote.publish_all(going)
        went = going if result.ok else {}
        if not result.ok and result.status is not PushStatus.UNREACHABLE and len(going) > 1:
            # One commit the remote refuses (a hook, push protection) must not keep the others off
            # it: each is tried alone, and those that went leave the queue.
            went = {task_id: sha for task_id, sha in going.items() if self.remote.publish(task_id, sha).ok}
        if went != going:
            logger.warning("commits of {} not published to {} yet ({}): {}",
                           ", ".join(sorted(set(going) - set(went))[:5]), self.remote.name,
                           result.status.value, _last_line(result.detail))  # fmt: skip
        for task_id, sha in went.items():
            if self.unpublished.get(task_id) == sha:
                del self.unpublished[task_id]

    def fetch_commit(self, task_id: str, sha: str) -> str | None:
        """The task's verified commit ``sha``, fetched from the remote where another host published
        it: exactly that commit, never a later tip of the task's ref. None when the remote does not
        hold it (or cannot be read: then a fault says so and ``reachable`` is False)."""
        tracking = self.remote.tracking(task_ref(task_id))
        try:
            try:
                # Every published commit comes with it: the next task's is most often here already
                # (the integrator asks only for a commit it lacks).
                self.remote.fetch_published()
            except GitError as exc:
                if exc.exit_code is None:
                    raise  # no answer in time: not asked again
                # A ref of the namespace the remote cannot serve (an object it lost, a ref written
                # by hand) fails the fetch of them all: the task's own is read alone.
                self.remote.fetch_task(task_id)
        except GitError as exc:
            self.reachable = False
            self.faults.record(AREA, f"the remote {self.remote.name!r} cannot be read: {_last_line(exc)}")
            return None
        return sha if self.git.rev(tracking) == sha else None

    def push(self, old: str, new: str) -> PushResult:
        """Move the remote's base from ``old`` to ``new`` with the receipts this repository holds
        now, as one atomic compare-and-swap (runner.remote): MOVED when a person or another host
        moved base or receipts since they were read."""
        result = self.remote.move_base(self.base, old, new, notes_ref=RECEIPTS, notes_old=self.notes_seen)
        if result.status is PushStatus.PUSHED:
            # What the remote holds now, as the next look would read it.
            head = f"refs/heads/{self.base}"
            self.git.update_ref(self.remote.tracking(head), new)
            self.tracked[head] = new
            notes = self.git.rev(RECEIPTS)
            if notes is not None:
                self.git.update_ref(self.remote.tracking(RECEIPTS), notes)
                self.tracked[RECEIPTS] = notes
            self.notes_seen = notes
        else:
            logger.info("{} not moved on {} ({}): {}", self.base, self.remote.name, result.status.value,
                        _last_line(result.detail))  # fmt: skip
            self.in_step = False  # read the remote again before the next candidate is built
        return result


def _last_line(error: object) -> str:
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1][-300:] if lines else "no answer"
