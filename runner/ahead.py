"""Workspaces made ahead, off the loop's thread, for the tasks next in the queue.

While every agent slot is taken, the workspaces of the tasks that will start next are made (a warm
one moved to base, or a cold checkout) in worker threads. When an agent ends, its slot's next
agent then starts at once: the loop only claims the task, writes its prompt and starts the
process, instead of making a workspace first while the slot stays empty.

A workspace made ahead is used only while it is fresh (MAX_AGE_SECONDS): one older is given back
to the warm pool and made again, so that no agent starts on a base long gone. One for a task that
is no longer next (a person cancelled, edited or reprioritised it) is given back. The threads do
git and the file system only; the loop's thread alone writes the state.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

# A workspace made longer ago than this is made again before its agent starts.
MAX_AGE_SECONDS = 30.0
# Threads that make workspaces at once (each mostly waits on git).
MAX_THREADS = 16

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One workspace being made, or made, for a task."""

    future: Future[T]
    started: float


class Ahead(Generic[T]):
    """Workspaces being made for tasks, by task id. ``make`` makes one (in a worker thread);
    ``give_back`` returns an unused one (on the loop's thread)."""

    def __init__(self, make: Callable[[str], T], give_back: Callable[[str, T], None], threads: int) -> None:
        self._make = make
        self._give_back = give_back
        self._pool = ThreadPoolExecutor(max_workers=max(1, min(threads, MAX_THREADS)), thread_name_prefix="workspace")
        self._entries: dict[str, Entry[T]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._entries

    def task_ids(self) -> list[str]:
        """The tasks whose workspaces are being made, or made."""
        return list(self._entries)

    def take(self, task_id: str, now: float | None = None) -> Future[T]:
        """The workspace of a task about to start: the one made ahead when it is fresh, else one
        being made now."""
        now = time.time() if now is None else now
        entry = self._entries.pop(task_id, None)
        if entry is not None and now - entry.started <= MAX_AGE_SECONDS:
            return entry.future
        if entry is not None:
            self._return(task_id, entry)
        return self._pool.submit(self._make, task_id)

    def prepare(self, task_ids: Iterable[str], now: float | None = None) -> int:
        """Start making the workspaces of ``task_ids`` (the next to start, in order) that are not
        being made; give back those made for tasks no longer among them. How many were started."""
        now = time.time() if now is None else now
        wanted = list(dict.fromkeys(task_ids))
        for task_id in [t for t in self._entries if t not in wanted]:
            entry = self._entries[task_id]
            if entry.future.done():  # one still being made is given back once it is
                del self._entries[task_id]
                self._return(task_id, entry)
        started = 0
        for task_id in wanted:
            if task_id not in self._entries:
                self._entries[task_id] = Entry(self._pool.submit(self._make, task_id), now)
                started += 1
        return started

    def close(self) -> None:
        """Wait for the workspaces being made and give back every one not used."""
        self._pool.shutdown(wait=True)
        for task_id, entry in list(self._entries.items()):
            del self._entries[task_id]
            self._return(task_id, entry)

    def _return(self, task_id: str, entry: Entry[T]) -> None:
        # Waited for: a workspace still being made is given back whole, never half made.
        if entry.future.exception() is not None:
            return  # nothing was made (the error is the loop's to see when the task starts)
        self._give_back(task_id, entry.future.result())
