"""Typed git operations. Every call goes through runner.procs; failures raise GitError."""

from __future__ import annotations

import enum
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from runner import procs
from runner.errors import GitError
from runner.procs import ProcResult

# Commits made by the runner itself (integration cherry-picks) need an identity even on machines
# where none is configured; the author of the task's commit is kept by cherry-pick.
_IDENTITY = ["-c", "user.name=pipeline-runner", "-c", "user.email=pipeline-runner@localhost"]


class PickStatus(enum.StrEnum):
    """How a cherry-pick ended."""

    PICKED = "picked"
    CONFLICT = "conflict"
    EMPTY = "empty"  # the change is already on the target


@dataclass(frozen=True)
class PickResult:
    """Result of a cherry-pick."""

    status: PickStatus
    sha: str | None
    output: str


@dataclass(frozen=True)
class Worktree:
    """One entry of `git worktree list`."""

    path: Path
    head: str | None
    branch: str | None  # short name, None when detached


# Commands that create, remove or walk the worktree registry (and `branch -D`, which checks every
# worktree's HEAD) fail on a half-created entry ("failed to read .../commondir"), so the loop and
# the integration worker take turns for them.
_WORKTREE_ADMIN = threading.Lock()


class Git:
    """Git commands against one repository (and its worktrees)."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo

    def run(
        self,
        *args: str,
        cwd: Path | None = None,
        check: bool = True,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
    ) -> ProcResult:
        """Run ``git ARGS`` in ``cwd`` (default: the repository); ``env`` adds to the environment."""
        return procs.run(
            ["git", *_IDENTITY, *args], cwd=cwd or self.repo, check=check, stdin=stdin,
            env={**os.environ, **env} if env else None, error_type=GitError,
        )  # fmt: skip

    def out(self, *args: str, cwd: Path | None = None) -> str:
        """Stdout of a git command that must succeed, stripped."""
        return self.run(*args, cwd=cwd).output.strip()

    # -- refs ----------------------------------------------------------------------------------

    def rev(self, ref: str, cwd: Path | None = None) -> str | None:
        """The commit a ref points to, or None."""
        result = self.run("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", cwd=cwd, check=False)
        return result.output.strip() if result.ok else None

    def branch_sha(self, branch: str) -> str | None:
        """The tip of a local branch, or None when it does not exist."""
        return self.rev(f"refs/heads/{branch}")

    def delete_branch(self, branch: str) -> None:
        """Delete a local branch if it exists."""
        with _WORKTREE_ADMIN:
            self.run("branch", "-q", "-D", branch, check=False)

    def set_branch(self, branch: str, sha: str) -> None:
        """Point a branch at ``sha`` (creating it if needed)."""
        self.run("update-ref", f"refs/heads/{branch}", sha)

    def compare_and_swap(self, branch: str, new: str, old: str) -> bool:
        """Move ``branch`` from ``old`` to ``new``; False (and nothing changed) if it moved meanwhile.

        A ref that cannot be locked (a stale ``.lock`` file) raises: retrying would not help.
        """
        result = self.run("update-ref", f"refs/heads/{branch}", new, old, check=False)
        if not result.ok and "File exists" in result.output:
            raise GitError(["git", "update-ref", f"refs/heads/{branch}"], result.exit_code, result.output)
        return result.ok

    def count_commits(self, base: str, head: str) -> int:
        """Commits reachable from ``head`` and not from ``base``."""
        return int(self.out("rev-list", "--count", f"{base}..{head}"))

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """Whether ``ancestor`` is reachable from ``descendant``."""
        return self.run("merge-base", "--is-ancestor", ancestor, descendant, check=False).ok

    def added_paths(self, old: str, new: str) -> list[str]:
        """Paths that exist in ``new``'s tree and not in ``old``'s."""
        out = self.out("diff", "--name-only", "--no-renames", "--diff-filter=A", "-z", old, new)
        return [p for p in out.split("\0") if p]

    def merge_base(self, a: str, b: str) -> str:
        """The best common ancestor of two commits."""
        return self.out("merge-base", a, b)

    def messages(self, base: str, head: str) -> list[str]:
        """Full messages of the commits in ``base..head``, oldest first."""
        raw = self.out("log", "--reverse", "--format=%B%x00", f"{base}..{head}")
        return [m.strip() for m in raw.split("\0") if m.strip()]

    def fold(self, branch: str, onto: str, message: str) -> str:
        """Replace the commits of ``branch`` after ``onto`` by one commit of the same tree; return it.

        Plumbing only (commit-tree, then a compare-and-swap of the branch): a worktree with the
        branch checked out keeps matching its files and index, since the tree does not change. The
        author of the branch's last commit stays the author.
        """
        tip = self.out("rev-parse", "--verify", f"refs/heads/{branch}^{{commit}}")
        name, email, date = self.out("log", "-1", "--format=%an%x00%ae%x00%ad", "--date=raw", tip).split("\0")
        author = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_AUTHOR_DATE": date}
        made = self.run("commit-tree", f"{tip}^{{tree}}", "-p", onto, "-F", "-", stdin=message, env=author)
        new = made.output.strip()
        if not self.compare_and_swap(branch, new, tip):
            raise GitError(
                ["git", "update-ref", f"refs/heads/{branch}"], None, "", f"{branch} moved while folding"
            )
        return new

    # -- worktrees -----------------------------------------------------------------------------

    def worktrees(self) -> list[Worktree]:
        """All worktrees of the repository."""
        entries: list[Worktree] = []
        path: Path | None = None
        head: str | None = None
        branch: str | None = None
        with _WORKTREE_ADMIN:
            listing = self.out("worktree", "list", "--porcelain")
        for line in [*listing.splitlines(), ""]:
            if line.startswith("worktree "):
                path = Path(line[len("worktree ") :])
            elif line.startswith("HEAD "):
                head = line[len("HEAD ") :]
            elif line.startswith("branch "):
                branch = line[len("branch ") :].removeprefix("refs/heads/")
            elif not line and path is not None:
                entries.append(Worktree(path, head, branch))
                path, head, branch = None, None, None
        return entries

    def add_worktree(self, path: Path, branch: str, start: str) -> None:
        """A worktree at ``path`` on ``branch``, creating the branch at ``start`` if needed."""
        exists = self.branch_sha(branch) is not None
        with _WORKTREE_ADMIN:
            if exists:
                self.run("worktree", "add", "-q", str(path), branch)
            else:
                self.run("worktree", "add", "-q", "-b", branch, str(path), start)

    def add_detached_worktree(self, path: Path, commit: str) -> None:
        """A worktree at ``path`` with a detached HEAD at ``commit``."""
        with _WORKTREE_ADMIN:
            self.run("worktree", "add", "-q", "--detach", str(path), commit)

    def remove_worktree(self, path: Path) -> None:
        """Remove a worktree (forcefully) and forget it."""
        with _WORKTREE_ADMIN:
            if (
                path.exists()
                and self.run("worktree", "remove", "--force", "--force", str(path), check=False).ok
            ):
                return
            # Not a worktree, or its directory is gone already: forget stale registrations.
            if path.exists():
                shutil.rmtree(path, ignore_errors=True)
            self.run("worktree", "prune")

    def prune_worktrees(self) -> None:
        """Forget worktrees whose directories are gone."""
        with _WORKTREE_ADMIN:
            self.run("worktree", "prune")

    def is_worktree(self, path: Path) -> bool:
        """Whether ``path`` is a present, registered linked worktree.

        Read from the files git keeps (no process): the worktree's ``.git`` file names its admin
        directory, which must exist and point back at it.
        """
        try:
            pointer = (path / ".git").read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return False
        if not pointer.startswith("gitdir: "):
            return False
        admin = Path(pointer[len("gitdir: ") :])
        try:
            back = Path((admin / "gitdir").read_text(encoding="utf-8").strip())
        except OSError:
            return False
        return back.parent.resolve() == path.resolve()

    # -- working-tree operations ---------------------------------------------------------------

    def head(self, cwd: Path) -> str:
        """HEAD of a worktree."""
        return self.out("rev-parse", "HEAD", cwd=cwd)

    def reset_hard(self, cwd: Path, commit: str) -> None:
        """Make a worktree's current branch (or detached HEAD) and files exactly ``commit``."""
        self.run("reset", "-q", "--hard", commit, cwd=cwd)
        self.run("clean", "-q", "-fd", cwd=cwd)

    def detach_at(self, cwd: Path, commit: str) -> None:
        """Detach a worktree's HEAD at ``commit`` with a clean tree."""
        self.abort_cherry_pick(cwd)
        self.run("checkout", "-q", "-f", "--detach", commit, cwd=cwd)
        self.run("clean", "-q", "-fd", cwd=cwd)

    def dirty_paths(self, cwd: Path) -> list[str]:
        """Tracked files with uncommitted changes in a worktree."""
        output = self.run("status", "--porcelain", "--untracked-files=no", cwd=cwd).output
        return [line[3:] for line in output.splitlines() if line.strip()]

    def matches_commit(self, cwd: Path, commit: str) -> bool:
        """Whether a worktree's index and tracked files are exactly ``commit``'s tree."""
        staged = self.run("diff-index", "--quiet", "--cached", commit, cwd=cwd, check=False)
        files = self.run("diff-index", "--quiet", commit, cwd=cwd, check=False)
        return staged.exit_code == 0 and files.exit_code == 0

    def trailer_values(self, commit: str, key: str, cwd: Path | None = None) -> list[str]:
        """The values of the ``key`` trailers of a commit's message, as git parses trailers."""
        out = self.out("log", "-1", f"--format=%(trailers:key={key},valueonly)", commit, cwd=cwd)
        return [v.strip() for v in out.splitlines() if v.strip()]

    def amend_with_trailer(self, cwd: Path, key: str, value: str) -> str:
        """Add ``key: value`` to the trailers of HEAD's message, author and tree kept; the new HEAD."""
        message = self.out("log", "-1", "--format=%B", "HEAD", cwd=cwd)
        amended = self.run(
            "interpret-trailers", "--trailer", f"{key}: {value}", cwd=cwd, stdin=message + "\n"
        )
        self.run(
            "commit",
            "-q",
            "--amend",
            "--no-verify",
            "--allow-empty",
            "-F",
            "-",
            cwd=cwd,
            stdin=amended.output,
        )
        return self.head(cwd)

    def cherry_pick(self, cwd: Path, commit: str) -> PickResult:
        """Cherry-pick ``commit`` onto the worktree's HEAD; a conflict is aborted and reported."""
        result = self.run(
            "cherry-pick", "--allow-empty", "--keep-redundant-commits", commit, cwd=cwd, check=False
        )
        if result.ok:
            sha = self.head(cwd)
            trees = self.out("rev-parse", f"{sha}^{{tree}}", f"{sha}^^{{tree}}", cwd=cwd).split()
            if trees[0] == trees[1]:
                return PickResult(PickStatus.EMPTY, sha, result.output)
            return PickResult(PickStatus.PICKED, sha, result.output)
        self.abort_cherry_pick(cwd)
        return PickResult(PickStatus.CONFLICT, None, result.output)

    @staticmethod
    def git_dir(cwd: Path) -> Path:
        """A worktree's private git directory, read from its ``.git`` file (no process)."""
        dot_git = cwd / ".git"
        if dot_git.is_dir():
            return dot_git
        pointer = dot_git.read_text(encoding="utf-8").strip()
        return Path(pointer.removeprefix("gitdir: "))

    def abort_cherry_pick(self, cwd: Path) -> bool:
        """Abort a cherry-pick in progress; True if there was one."""
        git_dir = self.git_dir(cwd)
        if (git_dir / "CHERRY_PICK_HEAD").exists() or (git_dir / "sequencer").exists():
            self.run("cherry-pick", "--abort", cwd=cwd, check=False)
            return True
        return False

    def move_checkout(self, cwd: Path, old: str, new: str) -> None:
        """Bring a worktree whose branch was moved from ``old`` to ``new`` up to date.

        Its index and files still show ``old``; a two-tree read-tree updates both to ``new``
        without touching anything else, so no phantom changes are left.
        """
        self.run("read-tree", "-m", "-u", old, new, cwd=cwd)
