"""integrate.max_waiting: when that many verified tasks wait to land, no new agent starts, and
`status` says why. The decision is a pure function; the loop and `status` are run in-process on
real SQLite and a real repository."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.holdups import Holdup, Queued, integration_bottleneck, why
from runner.scheduler import Pipeline
from runner.state import Phase
from runner.status import build_status, limits_of
from runner.tasks import TaskStatus
from tests.loop_helpers import in_process


@pytest.mark.parametrize(
    ("waiting", "limit", "holds"),
    [(0, 3, False), (2, 3, False), (3, 3, True), (9, 3, True), (50, None, False), (1, 1, True)],
)
def test_integration_bottleneck(waiting: int, limit: int | None, holds: bool) -> None:
    reason = integration_bottleneck(waiting, limit)
    assert (reason is not None) is holds
    if reason is not None:
        assert reason.startswith(f"integration is the bottleneck: {waiting} verified tasks wait to land")


def test_why_names_the_bottleneck_for_open_tasks_only() -> None:
    statuses = {"t": TaskStatus.OPEN, "v": TaskStatus.VERIFIED}
    held = why(Queued("t", TaskStatus.OPEN), statuses, {}, {}, 0.0, waiting_to_land=4, max_waiting=4)
    assert held.holdup is Holdup.BOTTLENECK and "4 verified tasks wait to land" in held.detail
    free = why(Queued("t", TaskStatus.OPEN), statuses, {}, {}, 0.0, waiting_to_land=3, max_waiting=4)
    assert free.holdup is Holdup.READY
    # A verified task is what waits: it is not held back by its own kind.
    landing = why(Queued("v", TaskStatus.VERIFIED), statuses, {}, {}, 0.0, waiting_to_land=9, max_waiting=4)
    assert landing.holdup is Holdup.READY
    # A fault says more than the bottleneck: it is what a person must clear.
    paused = why(Queued("t", TaskStatus.OPEN), statuses, {}, {"dev": 5.0}, 0.0, waiting_to_land=9, max_waiting=4)
    assert paused.holdup is Holdup.FAULT


def test_no_agent_starts_while_max_waiting_verified_tasks_wait(tmp_path: Path) -> None:
    config, store, db = in_process(
        tmp_path,
        "concurrency: 2\nintegrate: {max_waiting: 2}\n"
        "agent: {preset: command, command: ['true']}\nphases: {test: {run: [['true']]}}\n",
    )
    store.set_status("t-0", TaskStatus.VERIFIED)
    store.set_status("t-1", TaskStatus.VERIFIED)
    pipeline = Pipeline(config, db)
    try:
        assert not pipeline.develop_step()
        assert pipeline.runs.running(Phase.DEV) == []
        doc = build_status(config.root, config.base, limits_of(config), max_waiting=config.max_waiting)
        (entry,) = [e for e in doc["queue"] if e["id"] == "t-2"]
        assert entry["why"] == "bottleneck"
        assert entry["detail"].startswith("integration is the bottleneck: 2 verified tasks wait to land")
        # One lands: below the limit again, the agent starts.
        store.set_status("t-0", TaskStatus.DONE)
        assert pipeline.develop_step()
        assert [r.task_id for r in pipeline.runs.running(Phase.DEV)] == ["t-2"]
    finally:
        pipeline.close()
