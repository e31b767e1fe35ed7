"""Warm workspaces: a released task workspace is kept and moved to the next task's start.

Making a checkout writes every file of the repository (seconds on a large one). A workspace left
by a task that landed or was rejected already holds nearly every file of base's tip, so the next
task takes it and only the files that differ are written: a start costs time in proportion to
the distance from the last base, not to the size of the repository.

What an agent starts from must still be exactly the commit it is given, whatever the earlier
agent did there. So a recycled workspace keeps nothing of its git directory (hooks, config,
``info/exclude``, refs, objects, the index: all made anew, as for a cold checkout) and its files
are judged against an index the runner saved when it last wrote them (``ROOT/indexes/TASK``,
outside every checkout), never against the agent's own: a file whose inode, size, times or mode
changed since is written again, everything not in the commit is removed (ignored files included),
and the index's own time makes git compare the content of files written in its last second.
A workspace that some process still uses (a current directory, an open file in it) is never
taken: that process could go on writing into the next task's files.

ROOT/warm/N          a parked workspace
ROOT/warm/N.index    the index the runner saved for it; an entry without both parts is no entry

Every step is a rename or happens in a directory without its ready mark, so a kill at any point
leaves a workspace the next start makes afresh (runner.workspace.Checkouts.intact).
"""

from __future__ import annotations

import contextlib
import enum
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from runner import killpoints
from runner.ids import check_task_id
from runner.logs import logger
from runner.workspace import READY_MARK, remove_tree


class Taken(enum.StrEnum):
    """What became of an attempt to take a warm workspace."""

    TAKEN = "taken"  # moved to the task's path, with the index saved for it
    EMPTY = "empty"  # no warm workspace to take
    IN_USE = "in-use"  # a process still uses it: removed, never handed to another task


@dataclass(frozen=True)
class Take:
    """The outcome of ``WarmPool.take``; ``detail`` says what was dropped and why."""

    status: Taken
    detail: str = ""

    @property
    def taken(self) -> bool:
        """Whether a warm workspace now stands at the task's path."""
        return self.status is Taken.TAKEN


def users_of(path: Path, proc: Path = Path("/proc")) -> list[int] | None:
    """Processes whose current directory, root or an open file lies in ``path``; None when the
    system cannot tell (no /proc), which the caller treats as in use."""
    if not proc.is_dir():
        return None
    inside = str(path.resolve())
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        links = [entry / "cwd", entry / "root"]
        with contextlib.suppress(OSError):
            links += list((entry / "fd").iterdir())
        for link in links:
            try:
                target = os.readlink(link)
            except OSError:
                continue  # gone, or not ours to read (then it cannot write our files either)
            if target == inside or target.startswith(inside + os.sep):
                found.append(int(entry.name))
                break
    return found


def unready(workspace: Path) -> None:
    """Remove the ready mark: the directory is no longer a checkout any task may start in."""
    mark = workspace / ".git" / READY_MARK
    if not (workspace / ".git").is_symlink():
        mark.unlink(missing_ok=True)


class WarmPool:
    """Parked workspaces, at most ``keep`` of them; ``keep`` 0 parks none."""

    def __init__(self, root: Path, keep: int) -> None:
        self.dir = root / "warm"
        self.indexes = root / "indexes"
        self.keep = keep

    def index_of(self, task_id: str) -> Path:
        """The index the runner saved when it last wrote the files of the task's workspace."""
        return self.indexes / check_task_id(task_id)

    def remember(self, task_id: str, workspace: Path) -> None:
        """Save the workspace's index as the runner left it, before any agent runs there. Its
        time is kept: git compares the content of files written in that same second."""
        self.indexes.mkdir(parents=True, exist_ok=True)
        saved = self.index_of(task_id)
        partial = saved.with_name(saved.name + ".new")
        shutil.copy2(workspace / ".git" / "index", partial)
        os.replace(partial, saved)

    def forget(self, task_id: str) -> None:
        """Drop the saved index of a workspace that is removed."""
        self.index_of(task_id).unlink(missing_ok=True)

    def park(self, task_id: str, workspace: Path) -> bool:
        """Keep a released workspace for a later task. False (the caller removes it) when the pool
        is full, parking is off, or the workspace is not a plain directory with a saved index."""
        saved = self.index_of(task_id)
        if self.keep <= 0 or workspace.is_symlink() or not workspace.is_dir() or not saved.is_file():
            return False
        if len(self.entries()) >= self.keep:
            return False
        self.dir.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid4().hex
        # Not a checkout any more until recycled: a kill after it reaches a task's path (below, in
        # take) must leave a directory the next start makes afresh, never one it takes as ready.
        unready(workspace)
        # The index first: a kill between the two leaves an index without its directory (no entry).
        os.replace(saved, self.dir / f"{name}.index")
        killpoints.reached("parking")
        os.rename(workspace, self.dir / name)
        return True

    def entries(self) -> list[str]:
        """Names of the complete entries (a directory and its index)."""
        if not self.dir.is_dir():
            return []
        return sorted(
            p.stem for p in self.dir.glob("*.index") if (self.dir / p.stem).is_dir() and not (self.dir / p.stem).is_symlink()
        )

    def take(self, task_id: str, workspace: Path) -> Take:
        """Move a parked workspace to ``workspace`` (which must not exist), with its saved index
        as the task's. Safe from several threads: each entry is claimed by one rename."""
        dropped = []
        for name in self.entries():
            claimed = self.dir / f"{name}.claimed-{uuid.uuid4().hex}"
            try:
                os.rename(self.dir / name, claimed)
            except OSError:
                continue  # another thread took it
            index = self.dir / f"{name}.index"
            users = users_of(claimed)
            if users is None or users:
                # Not handed on: its files could change under the next agent.
                dropped.append(f"{name} (used by pids {users})" if users else f"{name} (no /proc to check)")
                remove_tree(claimed)
                index.unlink(missing_ok=True)
                continue
            try:
                self.indexes.mkdir(parents=True, exist_ok=True)
                os.replace(index, self.index_of(task_id))
            except OSError:
                remove_tree(claimed)
                continue
            unready(claimed)
            os.rename(claimed, workspace)
            return Take(Taken.TAKEN, name)
        if dropped:
            logger.warning("warm workspaces still in use, removed instead of reused: {}", ", ".join(dropped))
            return Take(Taken.IN_USE, ", ".join(dropped))
        return Take(Taken.EMPTY)

    def tidy(self) -> None:
        """Remove what a kill left half-moved: indexes without a directory, claimed directories."""
        if not self.dir.is_dir():
            return
        complete = set(self.entries())
        for path in self.dir.iterdir():
            stem = path.name.split(".", 1)[0]
            if stem not in complete:
                remove_tree(path)
