"""Watching base between integrations: a lock on its ref, a checkout of it that lags behind, and
commits on it that the runner did not land.

Each is a fault that is no task's: it holds integration (or all work) without charging anyone,
says in `status` what is wrong and what to do, and clears by itself once the cause is gone.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path

from phases.integrate import TRAILER, CheckoutLag, base_checkout, follow
from runner.errors import GitError
from runner.faults import FaultBoard
from runner.git import Git
from runner.layout import Layout
from runner.logs import logger
from runner.state import Runs
from runner.tasks import BuiltinTaskStore

STALE_LOCK_SECONDS = 2.0


class BaseWatch:
    """The checks on base that run before any integration starts."""

    def __init__(
        self,
        git: Git,
        base: str,
        layout: Layout,
        faults: FaultBoard,
        store: BuiltinTaskStore,
        runs: Runs,
        *,
        dry_run: bool = False,
    ) -> None:
        self.git = git
        self.base = base
        self.layout = layout
        self.faults = faults
        self.store = store
        self.runs = runs
        self.dry_run = dry_run
        self.git_dir = git.common_dir()
        # Whether a commit naming a task was landed by a runner elsewhere (with base on a remote:
        # its receipt there says so, runner.basesync); without a remote, only this runner lands.
        self.vouched: Callable[[str, str], bool] = lambda sha, task_id: False

    # -- the person's checkout of base ---------------------------------------------------------

    def repair_after_restart(self, old: str, new: str) -> None:
        """If base's checkout still shows exactly ``old`` (killed before it was updated), update it."""
        checkout = base_checkout(self.git, self.base)
        if checkout is None or not self.git.dirty_paths(checkout):
            return
        if self.git.matches_commit(checkout, old):
            try:
                follow(self.git, checkout, old, new)
            except GitError as exc:
                self.checkout_lags(CheckoutLag(checkout, old, str(exc).strip()[-500:]))
                return
            logger.info("brought the checkout of {} at {} up to date after a restart", self.base, checkout)

    def checkout_lags(self, lag: CheckoutLag) -> None:
        """Record that base's checkout shows an older base: held until it is brought along."""
        base = self.base
        self.faults.record(
            "checkout",
            f"{base} moved on, but its checkout at {lag.path} still shows {lag.shows[:12]}, so git status "
            f"there shows the landed changes reversed. Do not commit there: that would revert them on {base}. "
            f"The runner brings it along as soon as it can ({lag.reason}); to do it by hand: "
            f"git -C {lag.path} read-tree -m -u {lag.shows} {base}",
            data={"path": str(lag.path), "shows": lag.shows},
        )

    def checkout_lagging(self) -> bool:
        """Try to bring a lagging checkout of base along (when its delay is up); True while it lags.

        Integration waits meanwhile: with the checkout showing an older base, nothing could tell a
        person's edits there from the lag.
        """
        fault = self.faults.get("checkout")
        if fault is None:
            return False
        path, shows = Path(fault.data["path"]), fault.data["shows"]
        tip = self.git.branch_sha(self.base)
        if tip is None or not path.exists() or base_checkout(self.git, self.base) != path:
            self.faults.clear("checkout")  # the checkout is gone, or shows another branch now
            return False
        if self.git.index_matches(path, tip):
            # Brought along by hand: edits of the person's own may remain in its files.
            self.faults.clear("checkout")
            return False
        if self.faults.retry_at("checkout") is not None:
            return True
        if not self.git.matches_commit(path, shows):
            # Edited meanwhile: only a person can say which edits are theirs.
            self.checkout_lags(CheckoutLag(path, shows, "files there were changed since"))
            return True
        try:
            follow(self.git, path, shows, tip)
        except GitError as exc:
            self.checkout_lags(CheckoutLag(path, shows, str(exc).strip()[-500:]))
            return True
        logger.info("brought the checkout of {} at {} along to {}", self.base, path, tip[:12])
        self.faults.clear("checkout")
        return False

    def drop_own_locks(self, since: float) -> None:
        """Remove the lock files a git command of the runner left when the runner was killed in
        the middle of an integration that started at ``since``: on base's ref (the swap) and on
        the index of base's checkout (bringing it along). A lock made before that integration
        started, or in the last seconds, is not the runner's and is left alone."""
        checkout = base_checkout(self.git, self.base)
        locks = [self.git_dir / "refs" / "heads" / f"{self.base}.lock"]
        if checkout is not None:
            locks.append(Path(self.git.out("rev-parse", "--path-format=absolute", "--git-path", "index.lock", cwd=checkout)))
        for lock in locks:
            try:
                made = lock.stat().st_mtime
            except OSError:
                continue
            if made < since:
                continue
            # git holds these locks for milliseconds: one still there a moment later outlived the
            # command that took it.
            time.sleep(max(0.0, made + STALE_LOCK_SECONDS - time.time()))
            with contextlib.suppress(OSError):
                if lock.stat().st_mtime == made:
                    lock.unlink()
                logger.warning("removed {}, left by the runner's own git command when it was killed", lock)

    # -- base's ref and history ----------------------------------------------------------------

    def moved_outside(self) -> bool:
        """Whether base holds a commit naming a task that the runner did not land (an agent that
        reached the repository by its path, say): a fault that holds all work until a person has
        looked (`pipeline-runner resume`), so no later task is blamed for it.

        Only the commits base gained since the last look are read: a person's ordinary commits
        carry no ``Task-Id`` of a task here and pass.
        """
        tip = self.tip()
        seen_file = self.layout.base_seen_file
        try:
            seen = seen_file.read_text(encoding="utf-8").strip()
        except OSError:
            seen = ""
        if tip is not None and tip != seen:
            foreign = []
            if seen and self.git.rev(seen) and self.git.is_ancestor(seen, tip):
                for sha, task_id in self.git.trailers_in(f"{seen}..{tip}", TRAILER, limit=1000):
                    if (
                        self.store.exists(task_id)
                        and sha not in self.runs.landed(task_id)
                        and not self.vouched(sha, task_id)
                    ):
                        foreign.append(f"{sha[:12]} (Task-Id {task_id})")
            if not self.dry_run:
                seen_file.write_text(tip + "\n", encoding="utf-8")
            if foreign:
                self.faults.record(
                    "base",
                    f"{self.base} moved to commits the runner did not land: {', '.join(foreign[:5])}. "
                    "Something other than the runner (an agent reaching the repository by its path?) moved "
                    f"it. Work is held so no task is blamed: check {self.base}, reset it if needed, then "
                    "run `pipeline-runner resume`.",
                )
        return "base" in self.faults

    def moved_by_runner(self, old: str, new: str) -> None:
        """The runner itself moved base from ``old`` to ``new`` (and recorded it): when ``old`` is
        the last tip looked at, ``new`` needs no look of its own for foreign commits."""
        seen_file = self.layout.base_seen_file
        try:
            seen = seen_file.read_text(encoding="utf-8").strip()
        except OSError:
            return
        if seen == old and not self.dry_run:
            seen_file.write_text(new + "\n", encoding="utf-8")

    def tip(self) -> str | None:
        """Base's tip, read from its ref file when it has one: this runs every cycle, and a cycle
        with nothing to do should cost no process."""
        try:
            text = (self.git_dir / "refs" / "heads" / self.base).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            text = ""
        if len(text) in (40, 64) and all(c in "0123456789abcdef" for c in text):
            return text
        return self.git.branch_sha(self.base)  # packed, or a symbolic ref

    def ref_locked(self) -> bool:
        """A lock file on base's ref (a git command running, or one killed) blocks every swap: a
        fault, checked before any integration check runs, cleared as soon as the file is gone."""
        lock = self.git_dir / "refs" / "heads" / f"{self.base}.lock"
        current = self.faults.get("integrate")
        if lock.exists():
            message = (
                f"{lock} exists: a git command is updating {self.base}, or one was killed and "
                "left its lock. Remove the file if no git command is running; integration resumes by itself."
            )
            if current is None or current.message != message:
                self.faults.record("integrate", message)
            return True
        if current is not None and current.message.startswith(str(lock)):
            self.faults.clear("integrate")
        return False
