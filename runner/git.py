"""Typed git operations. Every call goes through runner.procs; failures raise GitError."""

from __future__ import annotations

import enum
import os
import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from runner import procs
from runner.errors import GitError
from runner.procs import ProcResult

# A full object name, as rev-parse prints one (sha1 or sha256).
_OBJECT_NAME = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")

# Commits made by the runner itself (integration candidates) need an identity even on machines
# where none is configured; the author of the task's commit is kept.
_IDENTITY = ["-c", "user.name=pipeline-runner", "-c", "user.email=pipeline-runner@localhost"]

# Configuration that makes git run a program. An agent (or code under check) can write it into a
# repository's config; the runner's own git commands never honour it, whatever the config says.
# Command-line settings outrank every config file. Filters and merge drivers are named by the
# repository's own attributes and cannot be switched off by name here: the runner therefore
# rewrites the config of every workspace an agent touched before running git there (see
# runner.workspace), and never checks out in a repository whose config it did not write.
HARDENING = [
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "core.sshCommand=false",
    "core.askPass=",
    "core.editor=false",
    "sequence.editor=false",
    "core.pager=cat",
    "credential.helper=",
    "commit.gpgSign=false",
    "tag.gpgSign=false",
    "log.showSignature=false",
    "protocol.ext.allow=never",
    "core.alternateRefsCommand=",
    "gc.auto=0",
    "maintenance.auto=false",
]
_HARDEN = [arg for setting in HARDENING for arg in ("-c", setting)]
# Talking to a remote needs the person's own ssh command and credential helpers, so those are not
# switched off for it; it runs only in the person's repository, whose config no agent writes (agents
# work in checkouts of their own). Still never a prompt (GIT_TERMINAL_PROMPT=0), an editor, a hook.
_REMOTE_LEFT_ON = ("core.sshCommand=false", "core.askPass=", "credential.helper=")
_HARDEN_REMOTE = [arg for setting in HARDENING if setting not in _REMOTE_LEFT_ON for arg in ("-c", setting)]
# Never prompt, never pick up a person's pager or editor from the environment.
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_PAGER": "cat", "GIT_EDITOR": "false", "GIT_ASKPASS": ""}


class PickStatus(enum.StrEnum):
    """How a cherry-pick ended."""

    PICKED = "picked"
    CONFLICT = "conflict"
    EMPTY = "empty"  # the change is already on the target
    STALE = "stale"  # the commit's parent is not in the target's history (it was rewritten)


@dataclass(frozen=True)
class MergeResult:
    """A change applied to another commit as a tree (``tree`` is None on a conflict)."""

    status: PickStatus
    tree: str | None
    output: str


@dataclass(frozen=True)
class CommitInfo:
    """What a commit's copy on another parent keeps: its author, its message, its trailer values."""

    author: dict[str, str]  # GIT_AUTHOR_NAME, GIT_AUTHOR_EMAIL, GIT_AUTHOR_DATE
    message: str
    trailer_values: list[str]


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


_FULL_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


class Git:
    """Git commands against one repository (and its worktrees)."""

    def __init__(
        self, repo: Path, *, git_dir: Path | None = None, work_tree: Path | None = None, timeout: float | None = None,
        stop: threading.Event | None = None, env: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.repo = repo
        # Added to every command's environment (a marker its leftovers are found by).
        self.env = env or {}
        # For every command that names none: the runner's git in a repository an agent had in
        # hand, where a planted named pipe would make git wait forever.
        self.timeout = timeout
        # Set when the runner stops: a command still running then is ended (procs.run).
        self.stop = stop
        self._common_dir: Path | None = None
        # A commit's tree never changes: asked by full sha, it is looked up once.
        self._trees: dict[str, str] = {}
        # A full sha (or its parent, "sha^") -> the commit. The parents of the candidates this
        # process made are here too: a stack of them is a chain, so whether a commit is in a
        # candidate's history is often known without git (is_ancestor).
        self._commits: dict[str, str] = {}
        # The last worktree listing, and the files it was read from (see ``worktrees``).
        self._worktrees: tuple[tuple[str, ...], list[Worktree]] | None = None
        # Given explicitly for the runner's checkouts: git must never go looking for a repository
        # above one whose .git an agent removed (the person's repository encloses the root).
        self._location = [f"--git-dir={git_dir}"] if git_dir is not None else []
        if work_tree is not None:
            self._location.append(f"--work-tree={work_tree}")

    def run(
        self,
        *args: str,
        cwd: Path | None = None,
        check: bool = True,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
        remote: bool = False,
        stop: threading.Event | None = None,
    ) -> ProcResult:
        """Run ``git ARGS`` in ``cwd`` (default: the repository); ``env`` adds to the environment.
        ``remote``: a command that talks to a remote (fetch, push), which keeps the person's ssh
        and credential settings (_HARDEN_REMOTE)."""
        harden = _HARDEN_REMOTE if remote else _HARDEN
        return procs.run(
            ["git", *harden, *_IDENTITY, *self._location, *args], cwd=cwd or self.repo, check=check, stdin=stdin,
            env={**os.environ, **_GIT_ENV, **self.env, **(env or {})}, timeout=timeout if timeout is not None else self.timeout,
            error_type=GitError, stop=stop if stop is not None else self.stop,
        )  # fmt: skip

    def out(self, *args: str, cwd: Path | None = None) -> str:
        """Stdout of a git command that must succeed, stripped."""
        return self.run(*args, cwd=cwd).output.strip()

    # -- refs ----------------------------------------------------------------------------------

    def rev(self, ref: str, cwd: Path | None = None) -> str | None:
        """The commit a ref points to, or None."""
        # A commit named by its sha (or its parent) is the same commit for good: looked up once.
        lasting = cwd is None and _FULL_SHA.fullmatch(ref.removesuffix("^")) is not None
        if lasting and ref in self._commits:
            return self._commits[ref]
        result = self.run("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", cwd=cwd, check=False)
        sha = result.output.strip()
        # `^x` (a negative rev) verifies too and prints `^<sha>`: no commit is named that way.
        found = sha if result.ok and _OBJECT_NAME.fullmatch(sha) else None
        if lasting and found is not None:  # one missing now may be fetched later
            self._remember_commit(ref, found)
        return found

    def tree_of(self, commit: str) -> str | None:
        """The tree a commit records, or None when there is no such commit."""
        if commit in self._trees:
            return self._trees[commit]
        result = self.run("rev-parse", "--verify", "--quiet", f"{commit}^{{tree}}", check=False)
        if not result.ok:
            return None
        tree = result.output.strip()
        if _FULL_SHA.fullmatch(commit):  # a name (a branch, HEAD) may point elsewhere later
            if len(self._trees) > 10_000:
                self._trees.clear()
            self._trees[commit] = tree
        return tree

    def branch_sha(self, branch: str) -> str | None:
        """The tip of a local branch, or None when it does not exist."""
        return self.rev(f"refs/heads/{branch}")

    def refs(self, prefix: str) -> list[str]:
        """The full names of every ref under ``prefix`` (ending in "/"), in one git process
        however many there are (recovery reads the runner's task refs this way at each start)."""
        return self.out("for-each-ref", "--format=%(refname)", prefix).splitlines()

    def update_ref(self, ref: str, new: str, old: str | None = None) -> bool:
        """Point the full ref name ``ref`` at ``new``; with ``old``, only if it is still there.

        False (and nothing changed) when ``old`` no longer matches. A ref that cannot be locked
        (a stale ``.lock`` file) raises: retrying would not help.
        """
        args = ["update-ref", "--no-deref", ref, new] + ([old] if old is not None else [])
        result = self.run(*args, check=False)
        if not result.ok and ("File exists" in result.output or old is None):
            raise GitError(["git", "update-ref", ref], result.exit_code, result.output)
        return result.ok

    def delete_ref(self, ref: str) -> None:
        """Delete a full ref name if it exists."""
        self.run("update-ref", "--no-deref", "-d", ref, check=False)

    def delete_refs(self, refs: list[str]) -> None:
        """Delete full ref names, however many, in one git process (those already gone too)."""
        if refs:
            self.run("update-ref", "--no-deref", "--stdin", stdin="".join(f"delete {ref}\n" for ref in refs))

    def compare_and_swap(self, branch: str, new: str, old: str) -> bool:
        """Move ``branch`` from ``old`` to ``new``; False (and nothing changed) if it moved meanwhile."""
        return self.update_ref(f"refs/heads/{branch}", new, old)

    def common_dir(self) -> Path:
        """The repository's git directory shared by all its worktrees (objects, refs, config).

        Asked once: it does not change while the repository exists."""
        if self._common_dir is None:
            self._common_dir = Path(self.out("rev-parse", "--path-format=absolute", "--git-common-dir"))
        return self._common_dir

    def fetch_ref(
        self, source: Path, src_ref: str, dst_ref: str, timeout: float | None = None, stop: threading.Event | None = None,
        env: dict[str, str] | None = None,
    ) -> str | None:  # fmt: skip
        """Copy ``src_ref`` of the repository at ``source`` (and the objects it needs) to ``dst_ref``.

        Returns the new value of ``dst_ref``, or None when ``source`` has no ``src_ref``. Goes
        through git's pack protocol, so nothing but objects crosses from an untrusted repository.
        Past ``timeout`` seconds (a source that makes git hang), or once ``stop`` is set, it is
        stopped and raises.
        """
        result = self.run(
            "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-recurse-submodules",
            "--no-auto-gc", f"file://{source}", f"+{src_ref}:{dst_ref}", check=False, timeout=timeout, stop=stop, env=env,
        )  # fmt: skip
        if result.timed_out:
            limit = timeout if timeout is not None else self.timeout
            raise GitError(["git", "fetch", str(source), src_ref], None, result.output, f"'git fetch' timed out after {limit:g}s")
        if not result.ok:
            if "couldn't find remote ref" in result.output:
                return None
            raise GitError(["git", "fetch", str(source), src_ref], result.exit_code, result.output)
        sha = self.rev(dst_ref)
        if sha is not None:
            self._remember_commit(sha, sha)  # asked for by its sha next (verify, integration)
        return sha

    def merge_onto(self, onto: str, commit: str) -> MergeResult:
        """``commit``'s change applied to ``onto``, as a tree, without touching any checkout.

        With ``commit``'s parent an ancestor of ``onto`` (verify checked the task is one commit
        over base, and base only moves forward) the merge base is that parent, so this is exactly
        a cherry-pick. A parent that is no longer in base's history (a person rewrote base) is
        reported as stale: merging would bring back what the rewrite took out.
        """
        parent = self.rev(f"{commit}^")
        if parent is None or not self.is_ancestor(parent, onto):
            return MergeResult(PickStatus.STALE, None, f"{commit[:12]}'s parent is not in the history of {onto[:12]}")
        result = self.run("merge-tree", "--write-tree", "--name-only", onto, commit, check=False)
        lines = result.output.strip().splitlines()
        if result.exit_code == 1:
            return MergeResult(PickStatus.CONFLICT, None, "\n".join(lines[1:]))
        if not result.ok or not lines:
            raise GitError(["git", "merge-tree", onto, commit], result.exit_code, result.output)
        tree = lines[0].strip()
        if tree == self.tree_of(onto):
            return MergeResult(PickStatus.EMPTY, tree, "")
        return MergeResult(PickStatus.PICKED, tree, "")

    def commit_info(self, commit: str, trailer: str) -> CommitInfo:
        """A commit's author, full message and ``trailer`` values, read in one git process."""
        out = self.run(
            "log", "-1", "--date=raw",
            f"--format=%P%x00%an%x00%ae%x00%ad%x00%(trailers:key={trailer},valueonly,separator=%x01)%x00%B", commit,
        ).output  # fmt: skip
        parents, name, email, date, values, message = out.split("\0", 5)
        if parents and _FULL_SHA.fullmatch(commit):
            self._remember_commit(f"{commit}^", parents.split()[0])  # merge_onto asks for it next
        author = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_AUTHOR_DATE": date}
        return CommitInfo(author, message, [v.strip() for v in values.split("\x01") if v.strip()])

    def commit_tree(self, tree: str, parent: str, message: str, author: dict[str, str]) -> str:
        """A new commit of ``tree`` on ``parent`` by ``author`` (GIT_AUTHOR_* values)."""
        sha = self.run("commit-tree", tree, "-p", parent, "-F", "-", stdin=message, env=author).output.strip()
        if _FULL_SHA.fullmatch(sha) and _FULL_SHA.fullmatch(tree):
            self._trees[sha] = tree  # the next candidate stacked on this one asks for it
        if _FULL_SHA.fullmatch(sha) and _FULL_SHA.fullmatch(parent):
            self._remember_commit(f"{sha}^", parent)
        return sha

    def _remember_commit(self, name: str, sha: str) -> None:
        """Remember what a lasting name (a full sha, or "sha^") names."""
        if len(self._commits) > 10_000:
            self._commits.clear()
        self._commits[name] = sha

    def commit_like(self, tree: str, parent: str, original: str, message: str) -> str:
        """A commit of ``tree`` on ``parent`` with ``original``'s author and the given message."""
        name, email, date = self.out("log", "-1", "--format=%an%x00%ae%x00%ad", "--date=raw", original).split("\0")
        author = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_AUTHOR_DATE": date}
        return self.commit_tree(tree, parent, message, author)

    def add_note(self, ref: str, commit: str, text: str) -> None:
        """Attach ``text`` to ``commit`` as a note under ``ref`` (replacing one already there)."""
        self.run("notes", f"--ref={ref}", "add", "-f", "-F", "-", commit, stdin=text)

    def remove_note(self, ref: str, commit: str) -> None:
        """Remove ``commit``'s note under ``ref``, if it has one."""
        self.run("notes", f"--ref={ref}", "remove", "--ignore-missing", commit)

    def noted(self, ref: str) -> set[str]:
        """The commits that have a note under ``ref``, in one git process."""
        listed = self.run("notes", f"--ref={ref}", "list", check=False)
        return {line.split()[1] for line in listed.output.splitlines() if len(line.split()) == 2} if listed.ok else set()

    def note(self, ref: str, commit: str) -> str | None:
        """``commit``'s note under ``ref``, or None."""
        done = self.run("notes", f"--ref={ref}", "show", commit, check=False)
        return done.output if done.ok else None

    def with_trailer(self, message: str, key: str, value: str) -> str:
        """``message`` with ``key: value`` added to its trailer block, as git parses trailers."""
        return self.run("interpret-trailers", "--trailer", f"{key}: {value}", stdin=message.rstrip("\n") + "\n").output

    def count_commits(self, base: str, head: str) -> int:
        """Commits reachable from ``head`` and not from ``base``."""
        return int(self.out("rev-list", "--count", f"{base}..{head}"))

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """Whether ``ancestor`` is reachable from ``descendant``."""
        # Along the commits this process made (a stack of candidates, the landed ones below it)
        # first: found there, no git process is needed.
        commit: str | None = descendant
        for _ in range(len(self._commits) + 1):
            if commit == ancestor:
                return True
            commit = self._commits.get(f"{commit}^")
            if commit is None:
                break
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

    def fold(self, ref: str, onto: str, message: str) -> str:
        """Replace the commits of ``ref`` after ``onto`` by one commit of the same tree; return it.

        Plumbing only (commit-tree, then a compare-and-swap of the ref). The author of the last
        commit stays the author.
        """
        tip = self.out("rev-parse", "--verify", f"{ref}^{{commit}}")
        new = self.commit_like(f"{tip}^{{tree}}", onto, tip, message)
        if not self.update_ref(ref, new, tip):
            raise GitError(["git", "update-ref", ref], None, "", f"{ref} moved while folding")
        return new

    # -- worktrees -----------------------------------------------------------------------------

    def worktrees(self) -> list[Worktree]:
        """All worktrees of the repository."""
        # Which branch each worktree has checked out, and where it is, is in a few small files of
        # the git directory: while they read the same, the listing is the one read last (the
        # integrator asks at each landing). Only ``head`` may be older than git's own answer.
        key = self._worktree_files()
        cached = self._worktrees
        if key is not None and cached is not None and cached[0] == key:
            return list(cached[1])
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
        if key is not None and key == self._worktree_files():  # not changed while git read them
            self._worktrees = (key, list(entries))
        return entries

    def _worktree_files(self) -> tuple[str, ...] | None:
        """What `git worktree list` reads to say where each worktree is and what it has checked
        out (the repository's config, HEAD, and each linked worktree's HEAD and gitdir), or None
        when a file cannot be read."""
        common = self.common_dir()
        if (common / "reftable").exists():
            return None  # refs in reftables: HEAD files are stubs that do not change on a checkout
        try:
            linked = sorted(p.name for p in (common / "worktrees").iterdir()) if (common / "worktrees").is_dir() else []
            names = ["config", "HEAD", *(f"worktrees/{n}/{f}" for n in linked for f in ("HEAD", "gitdir", "locked"))]
            return tuple(
                f"{name}\0{(common / name).read_text(encoding='utf-8', errors='replace') if (common / name).exists() else ''}"
                for name in names
            )
        except OSError:
            return None

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

    def dirty_paths(self, cwd: Path) -> list[str]:
        """Tracked files with uncommitted changes in a worktree."""
        output = self.run("status", "--porcelain", "--untracked-files=no", cwd=cwd).output
        return [line[3:] for line in output.splitlines() if line.strip()]

    def index_matches(self, cwd: Path, commit: str) -> bool:
        """Whether a worktree's index is exactly ``commit``'s tree (its files may differ)."""
        return self.run("diff-index", "--quiet", "--cached", commit, cwd=cwd, check=False).exit_code == 0

    def matches_commit(self, cwd: Path, commit: str) -> bool:
        """Whether a worktree's index and tracked files are exactly ``commit``'s tree."""
        staged = self.run("diff-index", "--quiet", "--cached", commit, cwd=cwd, check=False)
        files = self.run("diff-index", "--quiet", commit, cwd=cwd, check=False)
        return staged.exit_code == 0 and files.exit_code == 0

    def trailers_in(self, revisions: str, key: str, limit: int) -> list[tuple[str, str]]:
        """(commit, value) for each ``key`` trailer of the newest ``limit`` commits of ``revisions``."""
        out = self.out("log", f"--max-count={limit}", f"--format=%H%x00%(trailers:key={key},valueonly,separator=%x00)%x01", revisions)
        found = []
        for record in out.split("\x01"):
            sha, _, values = record.strip().partition("\0")
            found += [(sha, v.strip()) for v in values.split("\0") if v.strip()]
        return found

    def move_checkout(self, cwd: Path, old: str, new: str) -> None:
        """Bring a worktree whose branch was moved from ``old`` to ``new`` up to date.

        Its index and files still show ``old``; a two-tree read-tree updates both to ``new``
        without touching anything else, so no phantom changes are left.
        """
        self.run("read-tree", "-m", "-u", old, new, cwd=cwd)
