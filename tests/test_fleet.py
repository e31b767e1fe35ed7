"""Runners sharing one state: joining, renewing, taking a dead runner's work over, fencing, the
integration lease (runner.fleet), on a real SQLite file shared by several connections."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from phases.agents import AgentState
from runner.errors import StateError
from runner.fleet import INTEGRATOR, Fleet, LeaseLost, Place, fleet_view, share_of_queue
from runner.scheduler import Pipeline
from runner.state import Database, Phase, Runs, RunStatus, open_db
from runner.status import build_status
from runner.statusview import render_plain
from runner.tasks import BuiltinTaskStore, NewTask, TaskStatus
from tests.conftest import git
from tests.loop_helpers import in_process


def _db(path: Path | str) -> Database:
    return open_db(path)


def _fleet(path: Path | str, root: str, *, lease: float = 30, host: str = "h1") -> Fleet:
    return Fleet(_db(path), root=Path(root), lease_seconds=lease, host=host)


def _reopen(fleet: Fleet) -> Callable[[str], None]:
    """What the loop hands a takeover: the task store's move back to open."""
    store = BuiltinTaskStore(fleet.db)

    def reopen(task_id: str) -> None:
        store.set_status(task_id, TaskStatus.OPEN)

    return reopen


def _expire(db: Database, runner: int) -> None:
    with db.write() as conn:
        conn.execute("UPDATE runners SET expires_at = '2000-01-01T00:00:00+00:00' WHERE id = ?", (runner,))


def test_a_restart_on_the_same_host_and_root_resumes_its_id_and_another_root_gets_a_new_one(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    first = _fleet(state, "/r1")
    assert first.join() is Place.NEW
    again = _fleet(state, "/r1")
    assert again.join() is Place.RESUMED and again.id == first.id
    other = _fleet(state, "/r2")
    assert other.join() is Place.NEW and other.id != first.id
    elsewhere = _fleet(state, "/r1", host="h2")
    assert elsewhere.join() is Place.NEW and elsewhere.id not in (first.id, other.id)


def test_rows_from_before_the_fleet_become_the_first_runners(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    db = _db(state)
    BuiltinTaskStore(db).add(NewTask("old work", id="t-1"))
    row = Runs(db).start("t-1", Phase.DEV, 0)
    fleet = Fleet(db, root=tmp_path, lease_seconds=30, host="h1")
    fleet.join()
    assert Runs(db, owner=fleet.id).running(Phase.DEV)[0].id == row


def test_a_dead_runners_work_is_taken_over_uncharged_and_a_live_ones_is_not(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    dead, live, taker = _fleet(state, "/dead"), _fleet(state, "/live"), _fleet(state, "/taker")
    for fleet in (dead, live, taker):
        fleet.join()
    store = BuiltinTaskStore(taker.db)
    for task_id, fleet in (("t-1", dead), ("t-2", live)):
        store.add(NewTask(task_id, id=task_id))
        store.set_status(task_id, TaskStatus.IN_PROGRESS)
        Runs(fleet.db, owner=fleet.id).start(task_id, Phase.DEV, 0)
    assert dead.id is not None
    _expire(taker.db, dead.id)
    assert [m.id for m in taker.expired()] == [dead.id]
    done = taker.take_over(taker.expired()[0], _reopen(taker))
    assert done is not None and done.reopened == ["t-1"]
    assert store.get("t-1").status is TaskStatus.OPEN
    assert store.get("t-2").status is TaskStatus.IN_PROGRESS
    cancelled = Runs(taker.db).for_task("t-1")[0]
    assert cancelled.status is RunStatus.CANCELLED and "stopped renewing its lease" in (cancelled.error_summary or "")
    # Cancelled, not failed: the retry limit does not count it.
    assert Runs(taker.db).failures_since("t-1", None)[0] == 0
    assert taker.expired() == []  # taken once


def test_a_runner_taken_over_writes_nothing_more(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    late, taker = _fleet(state, "/late"), _fleet(state, "/taker")
    late.join()
    taker.join()
    store = BuiltinTaskStore(late.db)
    store.add(NewTask("work", id="t-1"))
    store.set_status("t-1", TaskStatus.IN_PROGRESS)
    row = Runs(late.db, owner=late.id).start("t-1", Phase.DEV, 0, pid=12345)
    # One frozen between starting its agent and recording its pid: its agent may run all the same.
    store.add(NewTask("more work", id="t-2"))
    store.set_status("t-2", TaskStatus.IN_PROGRESS)
    unrecorded = Runs(late.db, owner=late.id).start("t-2", Phase.DEV, 0)
    assert late.id is not None
    _expire(taker.db, late.id)
    assert taker.take_over(taker.expired()[0], _reopen(taker)) is not None
    with pytest.raises(LeaseLost, match="taken over by runner"):
        store.set_status("t-1", TaskStatus.DONE)
    assert BuiltinTaskStore(taker.db).get("t-1").status is TaskStatus.OPEN
    # Its renewals stop too: the row stays taken.
    with pytest.raises(LeaseLost):
        late.renew()
    # Started again, it joins under a new id and writes again.
    back = _fleet(state, "/late")
    assert back.join() is Place.NEW and back.id != late.id
    # ... and finds the agent it had going, to stop it: the task is others' now.
    assert [r.id for r in back.orphans()] == [row, unrecorded]
    assert _fleet(state, "/taker").orphans() == []
    BuiltinTaskStore(back.db).set_status("t-1", TaskStatus.CANCELLED)


def test_a_runner_that_renewed_meanwhile_is_not_taken_over(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    slow, taker = _fleet(state, "/slow"), _fleet(state, "/taker")
    slow.join()
    taker.join()
    assert slow.id is not None
    _expire(taker.db, slow.id)
    seen = taker.expired()
    slow.renew()
    assert taker.take_over(seen[0], _reopen(taker)) is None


def test_renewing_from_its_thread_keeps_a_runner_from_expiring(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    fleet, other = _fleet(state, "/r1", lease=0.3), _fleet(state, "/r2", lease=0.3)
    fleet.join()
    other.join()
    fleet.start_renewing(lambda: _db(state))
    try:
        time.sleep(0.8)
        assert fleet.id not in [m.id for m in other.expired()]
    finally:
        fleet.leave()
    time.sleep(0.5)
    assert fleet.id in [m.id for m in other.expired()]


def test_one_runner_holds_the_integration_lease_until_it_leaves_or_dies(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    first, second = _fleet(state, "/r1"), _fleet(state, "/r2")
    first.join()
    second.join()
    assert first.hold(INTEGRATOR)
    assert not second.hold(INTEGRATOR)
    assert [r["id"] for r in fleet_view(second.db) if r["integrating"]] == [first.id]
    first.leave()
    assert second.hold(INTEGRATOR) and not first.hold(INTEGRATOR)
    assert second.id is not None
    _expire(first.db, second.id)
    dead = first.expired()[0]
    first.take_over(dead, _reopen(first))
    assert first.hold(INTEGRATOR)


def test_status_shows_each_runner_where_it_runs_what_it_works_on_and_who_integrates(tmp_path: Path) -> None:
    root = tmp_path / "root"
    state = root / "state.db"
    first, second = _fleet(state, "/srv/a", host="host-a"), _fleet(state, "/srv/b", host="host-b")
    first.join()
    second.join()
    BuiltinTaskStore(first.db).add(NewTask("work", id="t-1"))
    Runs(second.db, owner=second.id).start("t-1", Phase.DEV, 0)
    assert first.hold(INTEGRATOR)
    assert first.id is not None
    _expire(first.db, first.id)
    doc = build_status(root, "live")
    by_host = {r["host"]: r for r in doc["runners"]}
    assert by_host["host-b"]["tasks"] == ["t-1"] and by_host["host-b"]["alive"]
    assert by_host["host-a"]["tasks"] == [] and not by_host["host-a"]["alive"]
    assert doc["active_runs"][0]["runner"] == second.id
    text = render_plain(doc)
    assert "Runners sharing this state: 2" in text
    assert "host-b" in text and "/srv/b: t-1" in text
    assert "host-a" in text and "its work is taken over" in text


def test_runners_reading_the_queue_at_once_start_at_their_own_share_of_it() -> None:
    queue = list(range(10))
    assert share_of_queue(queue, 0, 3) == queue
    assert share_of_queue(queue, 1, 3)[:3] == [3, 4, 5]
    assert share_of_queue(queue, 2, 3)[:3] == [6, 7, 8]
    # Every task is still there, the head after the runner's own share.
    assert sorted(share_of_queue(queue, 2, 3)) == queue and share_of_queue(queue, 2, 3)[-6:] == [0, 1, 2, 3, 4, 5]
    # A share past the queue's end: the head, as a single runner takes it.
    assert share_of_queue(queue[:4], 2, 3) == queue[:4]


def test_a_runners_rank_counts_only_the_runners_whose_leases_hold(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    fleets = [_fleet(state, f"/r{i}") for i in range(3)]
    for fleet in fleets:
        fleet.join()
    assert [f.rank() for f in fleets] == [(0, 3), (1, 3), (2, 3)]
    assert fleets[0].id is not None
    _expire(fleets[0].db, fleets[0].id)
    assert [f.rank() for f in fleets[1:]] == [(0, 2), (1, 2)]


def test_a_runner_taken_over_with_nothing_to_write_learns_it_from_its_renewal(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    idle, taker = _fleet(state, "/idle", lease=0.3), _fleet(state, "/taker")
    idle.join()
    taker.join()
    assert idle.id is not None
    idle.check()  # not taken over: nothing to say
    _expire(taker.db, idle.id)
    assert taker.take_over(taker.expired()[0], _reopen(taker)) is not None
    idle.start_renewing(lambda: _db(state))
    try:
        deadline = time.time() + 5
        while idle.lost is None and time.time() < deadline:
            time.sleep(0.05)
        with pytest.raises(LeaseLost, match="taken over by runner"):
            idle.check()
    finally:
        idle.leave()


def test_a_runner_whose_connection_the_server_ended_while_it_was_taken_over_is_told_of_the_takeover(
    pg_url: str,
) -> None:
    # Frozen inside a transaction for longer than the server lets one sit idle (its lease):
    # the server ends its connection, and meanwhile another runner takes its work over.
    frozen = Fleet(open_db(pg_url, idle_wait=1), root=Path("/frozen"), lease_seconds=1, host="h1")
    taker = _fleet(pg_url, "/taker")
    frozen.join()
    taker.join()
    assert frozen.id is not None
    with pytest.raises(StateError) as ended, frozen.db.write() as conn:
        conn.execute("SELECT 1")
        _expire(taker.db, frozen.id)
        assert taker.take_over(taker.expired()[0], _reopen(taker)) is not None
        time.sleep(2)
        conn.execute("SELECT 1")
    assert not isinstance(ended.value, LeaseLost)  # all the connection could say
    told = frozen.explain(ended.value, lambda: open_db(pg_url))
    assert isinstance(told, LeaseLost) and f"taken over by runner {taker.id}" in str(told)
    # Not taken over, or the database away as well: the error stands as it was.
    alive = _fleet(pg_url, "/alive")
    alive.join()
    assert alive.explain(ended.value, lambda: open_db(pg_url)) is ended.value

    def away() -> Database:
        raise StateError("the database is away")

    assert frozen.explain(ended.value, away) is ended.value


def _with_an_agent(tmp_path: Path) -> Pipeline:
    """A pipeline that joined the fleet and started one agent (a long `sleep`) on task t-0."""
    config, _store, db = in_process(
        tmp_path, "concurrency: 1\nlease: 1\nagent: {preset: command, command: ['sleep', '30']}\n"
        "phases: {test: {run: [['true']]}}\n", tasks=1,
    )  # fmt: skip
    pipeline = Pipeline(config, db)
    pipeline.join()
    assert pipeline.develop_step()
    return pipeline


def _taken_over(pipeline: Pipeline) -> None:
    """Another runner takes ``pipeline``'s work over, as if its lease had run out."""
    taker = _fleet(pipeline.config.state_db, "/taker")
    taker.join()
    assert pipeline.fleet.id is not None
    _expire(taker.db, pipeline.fleet.id)
    assert taker.take_over(taker.expired()[0], _reopen(taker)) is not None


def test_a_runner_thawed_mid_cycle_does_not_take_a_takeover_for_a_persons_move(tmp_path: Path) -> None:
    # The runner read its running attempts, froze, and was taken over (its task reopened by the
    # taker, not by a person): the stale attempt in hand must not stop the agent as if a person had.
    pipeline = _with_an_agent(tmp_path)
    (stale,) = pipeline.runs.running(Phase.DEV)
    try:
        _taken_over(pipeline)
        assert pipeline.store.get("t-0").status is TaskStatus.OPEN
        assert pipeline.stop_dev(stale, TaskStatus.OPEN) is False
        time.sleep(1)  # a stop asked for would have ended it by now
        assert pipeline.backend.poll(pipeline.handle_of(stale)).state is AgentState.RUNNING
    finally:
        pipeline.backend.cancel(pipeline.handle_of(stale))
        pipeline.close()


def test_an_agent_whose_pid_was_never_recorded_leaves_no_workspace_for_the_next_attempt(tmp_path: Path) -> None:
    # Frozen between starting its agent and committing the agent's pid (the server then ended that
    # transaction) and taken over: the agent goes on and commits in its workspace. The next start
    # must not hand that workspace, with the orphan's commit, to the task's next attempt (which
    # would find nothing left to do and be charged for it).
    pipeline = _with_an_agent(tmp_path)
    (started,) = pipeline.runs.running(Phase.DEV)
    try:
        pipeline.backend.cancel(pipeline.handle_of(started))
        with pipeline.db.write() as conn:
            conn.execute("UPDATE pipeline_runs SET pid = NULL WHERE id = ?", (started.id,))
        workspace = pipeline.layout.worktree("t-0")
        (workspace / "orphan.txt").write_text("done after the takeover\n")
        git(workspace, "add", "orphan.txt")
        git(workspace, "commit", "-q", "-m", "the orphan's work")
        _taken_over(pipeline)
    finally:
        pipeline.close()
    again = Pipeline(pipeline.config, open_db(pipeline.config.state_db))
    try:
        again.join()
        assert again.store.status_of("t-0") is TaskStatus.OPEN
        assert not again.layout.worktree("t-0").exists()  # released: the next attempt starts afresh
    finally:
        again.close()


def test_ending_one_pipelines_leftovers_leaves_another_pipelines_run_of_the_same_id_alone(tmp_path: Path) -> None:
    # Two pipelines on one host (two repositories), each with a task t-0 and its first run t-0-1:
    # one's supervisor is killed, and the look that ends what it left must not end the other's agent.
    first, second = _with_an_agent(tmp_path / "a"), _with_an_agent(tmp_path / "b")
    (mine,), (theirs,) = first.runs.running(Phase.DEV), second.runs.running(Phase.DEV)
    try:
        assert mine.agent_run_id == theirs.agent_run_id
        for pipeline, run in ((first, mine), (second, theirs)):  # both agents running, not only forked
            status = pipeline.layout.status_file(str(run.agent_run_id))
            deadline = time.time() + 10
            while not (json.loads(status.read_text() or "{}") if status.exists() else {}).get("pid"):
                assert time.time() < deadline
                time.sleep(0.05)
        time.sleep(0.2)  # and exec'd: its environment is the agent's own
        os.kill(int(mine.pid or 0), signal.SIGKILL)  # the supervisor, not its agent
        deadline = time.time() + 10  # the killed supervisor is reaped, then its leftovers ended
        while (outcome := first.backend.poll(first.handle_of(mine))).state is AgentState.RUNNING:
            assert time.time() < deadline
            time.sleep(0.05)
        assert outcome.state is AgentState.FAILED
        time.sleep(0.5)
        assert second.backend.poll(second.handle_of(theirs)).state is AgentState.RUNNING
    finally:
        second.backend.cancel(second.handle_of(theirs))
        first.close()
        second.close()
