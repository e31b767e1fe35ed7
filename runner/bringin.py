"""The commits of agents that ended, brought into the repository off the loop's thread.

Bringing an agent's commit in is a fetch from its workspace (six git processes, ~30 ms on a busy
machine). Done on the loop's thread, every agent that ends meanwhile waits for it before its slot is
filled. Here the fetch runs in a worker thread, the loop is woken when it is done, and the run is
recorded then, on the loop's thread, which alone writes the state. A kill in the middle leaves the
run unrecorded: the next start fetches again (the fetch is idempotent).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

# Fetches at once (each mostly waits on git).
MAX_THREADS = 4


class BringIns:
    """Fetches of ended agents' commits, by run id. ``bring`` fetches a task's commit (see
    ``Workspaces.bring_in``); ``wake`` wakes the loop when one is done."""

    def __init__(self, bring: Callable[[str], str | None], wake: Callable[[], None], threads: int) -> None:
        self._bring = bring
        self._wake = wake
        self._pool = ThreadPoolExecutor(max_workers=max(1, min(threads, MAX_THREADS)), thread_name_prefix="bring-in")
        self._futures: dict[int, Future[str | None]] = {}

    def get(self, run_id: int, task_id: str) -> Future[str | None]:
        """The fetch of a run's commit, started now if it is not under way."""
        future = self._futures.get(run_id)
        if future is None:
            future = self._pool.submit(self._bring, task_id)
            future.add_done_callback(lambda _done: self._wake())
            self._futures[run_id] = future
        return future

    def settle(self, run_id: int) -> None:
        """Wait for a run's fetch, if one is under way, and forget it: its workspace may go now."""
        future = self._futures.pop(run_id, None)
        if future is not None:
            future.exception()  # waits; the result no longer matters

    def forget(self, run_id: int) -> None:
        """Drop a run's finished fetch once the run is recorded."""
        self._futures.pop(run_id, None)

    def close(self) -> None:
        """Wait for the fetches under way (a half-written ref would otherwise be left locked)."""
        self._pool.shutdown(wait=True)
        self._futures.clear()
