"""Fetches of ended agents' commits off the loop's thread (runner.bringin), in milliseconds."""

from __future__ import annotations

import threading

from runner.bringin import BringIns


class Fetcher:
    """A fetch that waits until let go, and counts how often it ran per task."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.calls: list[str] = []
        self.woken = threading.Event()

    def bring(self, task_id: str) -> str | None:
        self.calls.append(task_id)
        self.go.wait(10)
        return f"sha-of-{task_id}"


def test_a_run_s_fetch_starts_once_and_wakes_the_loop_when_done() -> None:
    fetcher = Fetcher()
    bring_ins = BringIns(fetcher.bring, fetcher.woken.set, threads=2)
    try:
        first = bring_ins.get(1, "t-1")
        assert bring_ins.get(1, "t-1") is first  # asked again while under way: the same fetch
        assert not first.done() and not fetcher.woken.is_set()
        fetcher.go.set()
        assert first.result(10) == "sha-of-t-1"
        assert fetcher.woken.wait(10)
        assert fetcher.calls == ["t-1"]
        bring_ins.forget(1)
        assert bring_ins.get(1, "t-1").result(10) == "sha-of-t-1"  # a new attempt fetches again
        assert fetcher.calls == ["t-1", "t-1"]
    finally:
        bring_ins.close()


def test_settle_waits_for_a_fetch_under_way_before_its_workspace_may_go() -> None:
    fetcher = Fetcher()
    bring_ins = BringIns(fetcher.bring, lambda: None, threads=1)
    future = bring_ins.get(7, "t-7")
    settled = threading.Event()

    def settle() -> None:
        bring_ins.settle(7)
        settled.set()

    waiter = threading.Thread(target=settle)
    waiter.start()
    assert not settled.wait(0.2)  # the fetch still reads the workspace
    fetcher.go.set()
    assert settled.wait(10) and future.done()
    waiter.join()
    bring_ins.close()


def test_a_failed_fetch_is_raised_where_the_run_is_recorded() -> None:
    def failing(task_id: str) -> str | None:
        raise OSError(f"no workspace for {task_id}")

    bring_ins = BringIns(failing, lambda: None, threads=1)
    future = bring_ins.get(3, "t-3")
    exc = future.exception(10)
    assert isinstance(exc, OSError) and "t-3" in str(exc)
    bring_ins.close()
