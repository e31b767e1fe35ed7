"""The leak scan: does a candidate bring a secret value handed to the agent onto base?

A leak is a secret value in the message of a commit the candidate adds, in a file one of those
commits changed that does not hold the value at the same path in base's tree (a secret a person
committed to base long ago blocks no task; one the task adds does), or in the name of a path the
candidate adds. Binary files count like any other.

No file content is read into the runner, whatever the size of the change: files are searched by
``git grep`` with fixed strings, which prints only the names of matching files (memory grows with
the number of changed paths and one commit message at a time, never with the diff). The patterns
reach git on its standard input, so no secret appears in a process's arguments, which other users of
the machine can read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from runner.errors import GitError
from runner.git import Git
from runner.redact import MASK, MIN_SECRET_LENGTH

# Pathspecs are paths, never patterns: a file named `*.txt` must not widen a search.
_LITERAL = {"GIT_LITERAL_PATHSPECS": "1"}
# Paths per `git grep` call are bounded by their total length, well below the kernel's argument limit.
_ARGV_BUDGET = 100_000
# At most this many paths are named per variable in a refusal; the rest are counted.
_SHOWN_PATHS = 5


@dataclass(frozen=True)
class Leak:
    """A secret value the candidate would bring onto base: which variable holds it, and where.

    Never the value itself: ``paths`` that contained a secret in their names are masked.
    """

    variable: str
    paths: tuple[str, ...] = ()
    in_message: bool = False

    def describe(self) -> str:
        """Where the value is, as in "the value of ACC_TOKEN in config.txt and in the commit message"."""
        places = [f"in {p}" for p in self.paths[:_SHOWN_PATHS]]
        if len(self.paths) > _SHOWN_PATHS:
            places.append(f"in {len(self.paths) - _SHOWN_PATHS} more files")
        if self.in_message:
            places.append("in the commit message")
        return f"{_subject(self.variable)} {_join(places)}"


def refusal(leaks: Sequence[Leak], consequence: str = "base was not moved") -> str:
    """One message for all ``leaks``, as in "the candidate contains the value of ACC_TOKEN in
    config.txt and in the commit message; base was not moved"."""
    described = [leak.describe() for leak in leaks]
    listed = described[0] if len(described) == 1 else ", ".join(described[:-1]) + ", and " + described[-1]
    return f"the candidate contains {listed}; {consequence}"


def find_leaks(git: Git, old: str, new: str, secrets: Mapping[str, str]) -> list[Leak]:
    """The secrets of ``secrets`` (variable -> value) that ``old..new`` would bring onto base.

    ``old`` is base's tip and ``new`` the candidate on top of it. Every commit in ``old..new`` is
    searched, not only ``new``'s tree: a secret added by one commit and removed by the next still
    lands in base's history. One Leak per variable, in the order of ``secrets``; empty when clean.
    """
    needles = _needles(secrets)
    if not needles:
        return []
    old_sha = _commit(git, old)
    new_sha = _commit(git, new)
    listing = git.out("rev-list", "--reverse", "--parents", f"{old_sha}..{new_sha}")
    in_message: set[str] = set()
    paths: dict[str, set[str]] = {}
    for line in listing.splitlines():
        sha, *parents = line.split()
        # One message at a time: memory is bounded by the largest message, not their sum.
        message = git.run("log", "-1", "--no-notes", "--format=%B", sha).output
        in_message.update(name for name, needle in needles.items() if needle in message)
        changed = _changed_paths(git, parents[0] if parents else None, sha)
        for name, found in _added_to_files(git, old_sha, sha, needles, changed).items():
            paths.setdefault(name, set()).update(found)
        for name, found in _added_to_names(git, old_sha, needles, changed).items():
            paths.setdefault(name, set()).update(found)
    leaks = []
    for name in needles:
        if name in in_message or paths.get(name):
            shown = sorted(_mask(p, needles.values()) for p in paths.get(name, ()))
            leaks.append(Leak(name, tuple(shown), name in in_message))
    return leaks


# -- searching ----------------------------------------------------------------------------------


def _needles(secrets: Mapping[str, str]) -> dict[str, str]:
    """What to search for, by variable: the value, or for a value spanning lines its longest line
    (git grep matches within lines). A value already listed, or too short, is left out."""
    needles: dict[str, str] = {}
    for name, value in secrets.items():
        needle = max(value.splitlines() or [""], key=len)
        if len(needle) >= MIN_SECRET_LENGTH and needle not in needles.values():
            needles[name] = needle
    return needles


def _commit(git: Git, ref: str) -> str:
    return git.out("rev-parse", "--verify", f"{ref}^{{commit}}")


def _changed_paths(git: Git, parent: str | None, sha: str) -> list[str]:
    """Paths that ``sha`` adds or changes over its first parent (everything, for a root commit)."""
    args = ["--root", sha] if parent is None else [parent, sha]
    out = git.out("diff-tree", "-r", "-z", "--name-only", "--no-renames", "--diff-filter=d", *args)
    return [p for p in out.split("\0") if p]


def _added_to_files(
    git: Git, old: str, sha: str, needles: Mapping[str, str], changed: list[str]
) -> dict[str, set[str]]:
    """Changed files of ``sha`` holding a needle that the same path in ``old`` does not hold."""
    if not changed:
        return {}
    here = _files_holding(git, sha, needles, changed)
    if not here:
        return {}
    suspects = sorted(set().union(*here.values()))
    before = _files_holding(git, old, {n: needles[n] for n in here}, suspects)
    added = {name: found - before.get(name, set()) for name, found in here.items()}
    return {name: found for name, found in added.items() if found}


def _files_holding(
    git: Git, commit: str, needles: Mapping[str, str], paths: list[str]
) -> dict[str, set[str]]:
    """For each needle, which of ``paths`` in ``commit``'s tree contain it."""
    hits = _grep(git, commit, needles.values(), paths)
    if not hits or len(needles) == 1:
        return {name: hits for name in needles} if hits else {}
    # Which needle each hit holds: a search per needle, only among the files that matched any.
    found = {name: _grep(git, commit, [needle], sorted(hits)) for name, needle in needles.items()}
    return {name: files for name, files in found.items() if files}


def _grep(git: Git, commit: str, needles: Iterable[str], paths: list[str]) -> set[str]:
    """Which of ``paths`` in ``commit``'s tree contain any of ``needles`` (fixed strings)."""
    patterns = "".join(f"{n}\n" for n in needles)
    wanted = set(paths)
    if any("\ufffd" in p for p in paths):
        # A name that was not UTF-8 came back altered and would match no file as a pathspec:
        # search the whole tree and keep the names as git printed them.
        chunks: list[list[str]] = [[]]
    else:
        chunks = _chunks(paths)
    prefix = f"{commit}:"
    found: set[str] = set()
    for chunk in chunks:
        args = ["grep", "-F", "-l", "-z", "--no-color", "-f", "-", commit, "--", *chunk]
        result = git.run(*args, check=False, stdin=patterns, env=_LITERAL)
        if result.exit_code not in (0, 1):  # 1: nothing matched
            raise GitError(["git", "grep", commit], result.exit_code, result.output)
        for name in result.output.split("\0"):
            path = name.removeprefix(prefix)
            if name and path in wanted:
                found.add(path)
    return found


def _chunks(paths: list[str]) -> list[list[str]]:
    chunks: list[list[str]] = [[]]
    size = 0
    for path in paths:
        if chunks[-1] and size + len(path) > _ARGV_BUDGET:
            chunks.append([])
            size = 0
        chunks[-1].append(path)
        size += len(path) + 1
    return chunks


def _added_to_names(
    git: Git, old: str, needles: Mapping[str, str], changed: list[str]
) -> dict[str, set[str]]:
    """Changed paths whose names hold a needle, unless the path was in ``old`` already."""
    found: dict[str, set[str]] = {}
    for path in changed:
        for name, needle in needles.items():
            if needle in path and not _in_tree(git, old, path):
                found.setdefault(name, set()).add(path)
    return found


def _in_tree(git: Git, commit: str, path: str) -> bool:
    return git.run("cat-file", "-e", f"{commit}:{path}", check=False).ok


# -- wording ------------------------------------------------------------------------------------


def _mask(path: str, needles: Iterable[str]) -> str:
    for needle in sorted(needles, key=len, reverse=True):
        path = path.replace(needle, MASK)
    return path


def _subject(variable: str) -> str:
    # URL credentials are keyed "NAME's URL credentials" (see runner.redact.agent_secrets).
    return variable if "'s URL credentials" in variable else f"the value of {variable}"


def _join(parts: Sequence[str]) -> str:
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]
