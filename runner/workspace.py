"""The standalone checkouts agents and checks work in (paths under the root: runner.layout).

Every checkout is a repository of its own that borrows the person's objects read-only (an
alternates file) and has its own refs and config, with no remote pointing back: an agent, or the
code under check, can move its refs and write its config, and none of it reaches the person's
repository. Its commit crosses over only when the runner fetches it into ``refs/pipeline/``, a
namespace that is the runner's alone: the person's branches are never read, moved or deleted.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from runner import killpoints, procs
from runner.errors import GitError
from runner.git import Git
from runner.ids import check_task_id, id_problem
from runner.layout import Layout
from runner.logs import logger

if TYPE_CHECKING:
    from runner.warm import WarmPool


TASK_REFS = "refs/pipeline/tasks/"
# In the environment of the runner's git commands in agents' workspaces, with the runner's root.
GIT_MARKER = "PIPELINE_GIT_MARK"
# Written last when a checkout is made: one without it was interrupted and is made again.
READY_MARK = "pipeline-ready"


def task_ref(task_id: str) -> str:
    """The runner's ref for a task's latest commit, in the person's repository."""
    return TASK_REFS + check_task_id(task_id)


class Checkouts:
    """Standalone repositories that borrow the person's objects: made, checked, refreshed."""

    def __init__(self, git: Git, timeout: float | None = None, mark: str | None = None) -> None:
        self.git = git
        # Every git command of the runner's in a checkout carries GIT_MARKER=mark: one a killed
        # runner left waiting there (its own session survives the runner's group) is found by it.
        self.mark = mark
        self.env = {GIT_MARKER: mark} if mark else {}
        # Each git command in a checkout an agent had in hand stops after this many seconds: a
        # named pipe planted where git reads (an object, a ref) would hold it forever.
        self.timeout = timeout
        # Set when the runner stops: a git command still running in a checkout then (one an agent
        # made hang, waiting for its timeout) is ended rather than waited for.
        self.stopping = threading.Event()
        self._identity: list[tuple[str, str]] | None = None

    def objects(self) -> Path:
        """The object directory the checkouts borrow from."""
        return self.git.common_dir() / "objects"

    def config_text(self) -> str:
        """The whole config of a checkout: written by the runner, rewritten before it runs git there."""
        if self._identity is None:
            # An identity configured in the repository itself must keep working for the agent.
            found = self.git.run("config", "--local", "--get-regexp", r"^user\.(name|email)$", check=False)
            self._identity = [
                (k.split(".", 1)[1], v) for k, _, v in (line.partition(" ") for line in found.output.splitlines()) if v
            ] if found.ok else []
        lines = ["[core]", "\trepositoryformatversion = 0", "\tfilemode = true", "\tbare = false",
                 "\tlogallrefupdates = true"]  # fmt: skip
        # A checkout lives for one task: git's housekeeping after each of the agent's commits (a
        # `git maintenance` process every time) would be work for nothing.
        lines += ["[gc]", "\tauto = 0", "[maintenance]", "\tauto = false"]
        if self._identity:
            lines.append("[user]")
            lines += [f"\t{key} = {_quote(value)}" for key, value in self._identity]
        return "\n".join(lines) + "\n"

    def git_of(self, path: Path) -> Git:
        """Git commands in the checkout at ``path``, never discovering any other repository."""
        return Git(path, git_dir=path / ".git", work_tree=path, timeout=self.timeout, stop=self.stopping, env=self.env)

    def intact(self, path: Path) -> bool:
        """Whether ``path`` is still a checkout the runner made: a real ``.git`` directory of its
        own, no redirection to another repository's git directory, objects borrowed from ours."""
        dot_git = path / ".git"
        if dot_git.is_symlink() or not dot_git.is_dir() or (dot_git / "commondir").exists():
            return False
        if not (dot_git / READY_MARK).is_file():
            return False  # made only in part (the runner was killed while making it)
        alternates = dot_git / "objects" / "info" / "alternates"
        try:
            # A regular file only: reading a named pipe an agent put there would wait forever.
            if not stat.S_ISREG(os.lstat(alternates).st_mode):
                return False
            text = alternates.read_text(encoding="utf-8")
        except OSError:
            return False
        return text.strip() == str(self.objects())

    def refresh(self, path: Path) -> None:
        """Discard whatever config was written in the checkout since the runner made it."""
        dot_git = path / ".git"
        # Removed whatever they are: writing into a named pipe an agent put there would wait
        # forever, and an `info` linked elsewhere would have the runner delete a file out there.
        info = dot_git / "info"
        if info.is_symlink() or (info.exists() and not info.is_dir()):
            _clear(info)
        for name in ("config", "info/attributes", "config.worktree"):
            _clear(dot_git / name)
        (dot_git / "config").write_text(self.config_text(), encoding="utf-8")

    def drop_stale_locks(self, path: Path) -> None:
        """Remove the lock files git commands left in the checkout at ``path`` when they were killed.

        Only for a checkout in which no git command can be running: no agent works there and the
        runner (which holds the runner lock) is not using it. A lock then outlived its command (the
        runner killed inside ``git update-ref``, an agent killed inside ``git commit``) and would
        fail every later command there for good. The index, HEAD and config locks sit at the top
        of the git directory, ref locks anywhere under ``refs``; symbolic links are not followed.
        """
        dot_git = path / ".git"
        if dot_git.is_symlink() or not dot_git.is_dir():
            return
        stale = [p for p in dot_git.glob("*.lock") if not p.is_dir()]
        refs = dot_git / "refs"
        if refs.is_dir() and not refs.is_symlink():
            for folder, _dirs, files in os.walk(refs):
                stale += [Path(folder) / name for name in files if name.endswith(".lock")]
        for lock in stale:
            with contextlib.suppress(OSError):
                lock.unlink()
                logger.warning("removed {}, left by a git command killed in that checkout", lock)

    def create(self, path: Path, head: str, refs: dict[str, str] | None = None) -> Git:
        """A fresh checkout at ``path``: ``refs`` (full name -> sha) set, HEAD on ``head`` (a ref
        among them, or a sha to detach at), files and index exactly that commit."""
        remove_tree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        local = self._init(path, head, refs)
        local.run("read-tree", "--reset", "-u", "HEAD")
        (path / ".git" / READY_MARK).write_text("", encoding="utf-8")
        return local

    def recycle(self, path: Path, index: Path, head: str, refs: dict[str, str] | None = None) -> Git:
        """Turn the files at ``path`` into a checkout as ``create`` makes, writing only the files
        that differ from ``index`` (one the runner saved when it last wrote them).

        The git directory is made anew; the saved index, not the one found there, says what the
        files were: one whose stat data changed since is written again, anything else there
        (untracked, ignored, nested repositories) removed. Raises on any git failure (a file the
        earlier agent made unwritable): the caller then makes the checkout cold.
        """
        if path.is_symlink() or not path.is_dir():
            raise OSError(f"{path} is not a directory")
        dot_git = path / ".git"
        remove_tree(dot_git)
        os.chmod(path, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        local = self._init(path, head, refs)
        killpoints.reached("recycling")
        # copy2 keeps the index's time: files written in its last second are compared by content.
        shutil.copy2(index, dot_git / "index")
        # Untracked and ignored files first (-x: no ignore rule of the earlier agent's counts), so
        # that none stands where the commit has a file; then the files the commit changes.
        local.run("clean", "-ffdxq")
        local.run("read-tree", "--reset", "-u", "HEAD")
        local.run("clean", "-ffdxq")
        (dot_git / READY_MARK).write_text("", encoding="utf-8")
        return local

    def _init(self, path: Path, head: str, refs: dict[str, str] | None) -> Git:
        """A new git directory at ``path``: objects borrowed, the runner's config, ``refs`` set and
        HEAD on ``head``; the index and the files are left to the caller."""
        # Written as files, not by `git init` and one `git update-ref` a ref: the layout of a new
        # repository is fixed, and each git process costs milliseconds on every task's start.
        dot_git = path / ".git"
        (dot_git / "objects" / "info").mkdir(parents=True)
        (dot_git / "refs" / "heads").mkdir(parents=True)
        (dot_git / "refs" / "tags").mkdir()
        (dot_git / "objects" / "info" / "alternates").write_text(f"{self.objects()}\n", encoding="utf-8")
        self.refresh(path)
        local = self.git_of(path)
        for ref, sha in (refs or {}).items():
            if _plain_ref(ref) and _SHA.fullmatch(sha):
                loose = dot_git.joinpath(*ref.split("/"))
                loose.parent.mkdir(parents=True, exist_ok=True)
                loose.write_text(f"{sha}\n", encoding="utf-8")
            else:
                local.update_ref(ref, sha)  # git resolves and checks what is not a plain name and sha
        if head.startswith("refs/") and _plain_ref(head):
            (dot_git / "HEAD").write_text(f"ref: {head}\n", encoding="utf-8")
        elif _SHA.fullmatch(head):
            (dot_git / "HEAD").write_text(f"{head}\n", encoding="utf-8")
        else:
            (dot_git / "HEAD").write_text("ref: refs/heads/unborn\n", encoding="utf-8")
            if head.startswith("refs/"):
                local.run("symbolic-ref", "HEAD", head)
            else:
                local.update_ref("HEAD", head)
        return local


_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
# A ref name that is safe to write as a path under .git: what git accepts and more narrowly.
_PLAIN_REF = re.compile(r"refs/heads/[A-Za-z0-9_][A-Za-z0-9_.+-]*(/[A-Za-z0-9_][A-Za-z0-9_.+-]*)*")


def _plain_ref(ref: str) -> bool:
    """Whether ``ref`` can be written as a loose ref file without asking git."""
    return bool(_PLAIN_REF.fullmatch(ref)) and ".." not in ref and not ref.endswith((".lock", "."))


def remove_siblings(path: Path) -> None:
    """Remove everything beside ``path`` in its directory (earlier attempts' checkouts)."""
    if path.parent.is_dir():
        for other in path.parent.iterdir():
            if other.name != path.name:
                remove_tree(other)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _clear(path: Path) -> None:
    """Remove ``path``, whatever it is (a file, a link, a named pipe, a directory tree), if it exists."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        remove_tree(path)
    else:
        path.unlink()


def remove_tree(path: Path) -> None:
    """Remove a directory tree the runner made, whatever is in it (read-only files included)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, onerror=_force_remove)


def _force_remove(func: object, name: str, _exc: object) -> None:
    parent = os.path.dirname(name)
    with contextlib.suppress(OSError):
        os.chmod(parent, stat.S_IRWXU)
        os.chmod(name, stat.S_IRWXU)
    with contextlib.suppress(OSError):
        if os.path.isdir(name) and not os.path.islink(name):
            shutil.rmtree(name, ignore_errors=True)
        else:
            os.unlink(name)


class Workspaces:
    """Task workspaces: one per task, on a branch named for the task, reused across attempts."""

    def __init__(
        self, git: Git, layout: Layout, warm: WarmPool | None = None, git_timeout: float | None = None,
        marked: bool = False,
    ) -> None:  # fmt: skip
        """``git_timeout``: seconds each git command in a workspace may take; ``marked``: those
        commands carry GIT_MARKER (the runner's, which alone ends them: ``end_leftover_git``)."""
        self.git = git
        self.layout = layout
        self.checkouts = Checkouts(git, git_timeout, str(layout.root) if marked else None)
        # Released workspaces kept for later tasks (runner.warm); None removes them.
        self.warm = warm

    def acquire(self, task_id: str, base: str) -> Path:
        """The task's workspace, brought in line with base's tip and the runner's config.

        Made afresh from the task's last commit (or base) when missing or no longer intact.
        """
        return self.prepare(task_id, base)[0]

    def prepare(self, task_id: str, base: str) -> tuple[Path, str | None]:
        """``acquire``, and the commit the task branch of the workspace holds: known without
        asking git when the workspace is made here (from the task's last commit, or base)."""
        path = self.layout.worktree(task_id)
        base_sha = self.git.branch_sha(base)
        if base_sha is None:
            raise GitError(["git", "rev-parse", base], None, "", f"base branch {base!r} does not exist")
        if base == task_id:
            raise GitError([], None, "", f"task id {task_id!r} is the name of the base branch")
        if self.checkouts.intact(path):
            self.checkouts.refresh(path)
            # No run of the task is going (one is about to start): a lock here is stale, and left
            # in place it would fail the update below, and so every later attempt, for good.
            self.checkouts.drop_stale_locks(path)
            # The agent sees base under its own name, at its tip now, whatever it did to that ref.
            self.checkouts.git_of(path).update_ref(f"refs/heads/{base}", base_sha)
            return path, self.checkouts.git_of(path).branch_sha(task_id)
        self._drop_legacy(path)
        start = self.git.rev(task_ref(task_id)) or base_sha
        refs = {f"refs/heads/{base}": base_sha, f"refs/heads/{task_id}": start}
        if not self._recycled(task_id, path, refs):
            self.checkouts.create(path, f"refs/heads/{task_id}", refs)
        self._remember(task_id, path)
        return path, start

    def _recycled(self, task_id: str, path: Path, refs: dict[str, str]) -> bool:
        """Whether a warm workspace was taken and brought to the task's start at ``path``."""
        if self.warm is None or not self.warm.take(task_id, path).taken:
            return False
        try:
            self.checkouts.recycle(path, self.warm.index_of(task_id), f"refs/heads/{task_id}", refs)
        except (GitError, OSError) as exc:
            # Whatever the earlier agent left that git cannot undo, a cold checkout replaces.
            logger.warning("{}: a warm workspace could not be reused ({}); making it afresh", task_id, exc)
            return False
        return True

    def _remember(self, task_id: str, path: Path) -> None:
        """Save the index of files the runner just wrote, for recycling the workspace later."""
        if self.warm is not None:
            self.warm.remember(task_id, path)

    def end_leftover_git(self) -> int:
        """End the git commands a killed runner of this root left running in its workspaces (one
        an agent made hang, waiting for its timeout, outlives the runner: it has a session of its
        own). Only where no other runner can be running (under the runner lock). How many."""
        if self.checkouts.mark is None:
            return 0
        return procs.kill_marked(GIT_MARKER, self.checkouts.mark)

    def bring_in(self, task_id: str) -> str | None:
        """Fetch the task branch of the agent's workspace into the runner's ref for the task.

        Returns the commit now at that ref, or None when the workspace has no task branch (or is
        no longer a checkout the runner made).
        """
        path = self.layout.worktree(task_id)
        if not self.checkouts.intact(path):
            return None
        self.checkouts.refresh(path)
        return self.git.fetch_ref(
            path / ".git", f"refs/heads/{task_id}", task_ref(task_id), self.checkouts.timeout, self.checkouts.stopping,
            env=self.checkouts.env,
        )

    def commit_left_work(self, task_id: str, before: str | None, base: str, message: str) -> str | None:
        """Commit, on the task branch of the agent's workspace, the changes the agent left there.

        For agents that can edit files but not write ``.git`` (a sandbox, a permission mode): only
        when the branch is still at ``before`` (the agent made no commit of its own) and checked
        out. Tracked and untracked files are taken, except what ``.gitignore`` excludes. When the
        branch holds the task's commit already (a retry), that commit is amended, with its message,
        so the task stays one commit over ``base``. Returns the new commit, or None when there was
        nothing to commit (or no such workspace).
        """
        path = self.layout.worktree(task_id)
        if before is None or not self.checkouts.intact(path):
            return None
        # Rewritten first, as before any git command of the runner in a workspace an agent used.
        self.checkouts.refresh(path)
        local = self.checkouts.git_of(path)
        branch = f"refs/heads/{task_id}"
        head = local.run("symbolic-ref", "--quiet", "HEAD", check=False).output.strip()
        if head != branch or local.rev(branch) != before:
            return None
        # The agent has ended with its whole process group: a lock left now is stale.
        self.checkouts.drop_stale_locks(path)
        local.run("add", "--all", "--", ".")
        if local.run("diff", "--cached", "--quiet", before, check=False).exit_code == 0:
            return None
        base_sha = self.git.branch_sha(base)
        amend = base_sha is not None and local.count_commits(base_sha, before) > 0
        # whitespace, not strip: a title starting with '#' is a title, not a comment.
        args = ["commit", "--quiet", "--no-verify", "--cleanup=whitespace"]
        args += ["--amend", "--no-edit"] if amend else ["--file=-"]
        local.run(*args, stdin=None if amend else message)
        return local.rev(branch)

    def reset_onto(self, task_id: str, commit: str, base: str) -> None:
        """Drop the task's work: a fresh workspace whose task branch is ``commit``."""
        self.git.delete_ref(task_ref(task_id))
        path = self.layout.worktree(task_id)
        self._drop_legacy(path)
        self.checkouts.create(
            path, f"refs/heads/{task_id}", {f"refs/heads/{base}": commit, f"refs/heads/{task_id}": commit}
        )
        self._remember(task_id, path)

    def check_out(self, task_id: str, commit: str, attempt: int) -> Path:
        """A pristine checkout of exactly ``commit`` for one attempt at the task's checks."""
        return self.fresh(self.layout.check(task_id, attempt), commit)

    def check_out_candidate(self, commit: str, attempt: int) -> Path:
        """A pristine checkout of an integration attempt's candidate. The candidates of a stack
        are checked side by side, so the others beside it stay."""
        path = self.layout.integration_attempt(attempt)
        remove_tree(path)
        self.checkouts.create(path, commit)
        return path

    def fresh(self, path: Path, commit: str) -> Path:
        """A checkout of exactly ``commit`` at ``path``; the earlier attempts' beside it are removed."""
        remove_siblings(path)
        self.checkouts.create(path, commit)
        return path

    def release(self, task_id: str) -> None:
        """Remove the task's workspace (or keep it warm for a later task), its check checkout and
        the runner's ref for it. Only once no run of the task is going."""
        path = self.layout.worktree(task_id)
        parked = False
        if self.warm is not None:
            # Only a checkout the runner made: never a linked worktree or a half-made one.
            parked = self.checkouts.intact(path) and self.warm.park(task_id, path)
            self.warm.forget(task_id)
        if not parked:
            self._drop_legacy(path)
            remove_tree(path)
        remove_tree(self.layout.checks(task_id))
        self.git.delete_ref(task_ref(task_id))

    def _drop_legacy(self, path: Path) -> None:
        """A linked worktree left by an older version, or a directory left by a crash."""
        if self.git.is_worktree(path):
            self.git.remove_worktree(path)
        remove_tree(path)

    def drop_stale_locks(self, task_id: str) -> None:
        """Remove the locks killed git commands left in the workspace of a task with no run going."""
        path = self.layout.worktree(task_id)
        if self.checkouts.intact(path):
            self.checkouts.drop_stale_locks(path)

    def existing(self) -> list[str]:
        """Task ids that have a workspace directory; other directories there are left alone."""
        if not self.layout.worktrees.is_dir():
            return []
        ids = []
        for path in sorted(p for p in self.layout.worktrees.iterdir() if p.is_dir()):
            problem = id_problem(path.name)
            if problem is not None:
                # Not one of ours (no task can have that id): a stray directory must not stop the
                # runner, and it is not ours to delete.
                logger.warning("ignoring {}: not a task workspace ({})", path, problem)
                continue
            ids.append(path.name)
        return ids
