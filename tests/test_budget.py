"""limits.max_daily_cost: the day's bounds, the decision, the pause on the FaultBoard, and the real
loop with agents that report a cost."""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from runner import budget
from runner.faults import FaultBoard
from runner.state import Phase, Runs, RunStatus, open_db
from tests.loop_helpers import make_sample


@pytest.fixture
def berlin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("now", "start", "end"),
    [
        ("2026-06-10T12:00:00", "2026-06-09T22:00:00", "2026-06-10T22:00:00"),  # summer, +02:00
        ("2026-06-09T22:00:00", "2026-06-09T22:00:00", "2026-06-10T22:00:00"),  # midnight itself
        ("2026-03-29T10:00:00", "2026-03-28T23:00:00", "2026-03-29T22:00:00"),  # 23 hours
        ("2026-12-31T22:59:59", "2026-12-30T23:00:00", "2026-12-31T23:00:00"),  # the year's end
    ],
)
def test_the_day_is_the_local_one(berlin: None, now: str, start: str, end: str) -> None:
    assert budget.day_bounds(utc(now)) == (utc(start), utc(end))


@pytest.mark.parametrize(
    ("spent", "cap", "capped"),
    [(0.0, 0, False), (10_000.0, 0, False), (499.9, 500, False), (500.0, 500, True), (731.5, 500, True)],
)
def test_decision(spent: float, cap: int, capped: bool) -> None:
    verdict = budget.decide(spent, cap, 1000.0)
    assert verdict.capped is capped
    assert verdict.resumes_at == (1000.0 if capped else None)


def test_the_pause_is_recorded_once_a_day_and_lifted(tmp_path: Path) -> None:
    board = FaultBoard(tmp_path / "faults.json", lambda n: 1.0)
    told: list[str] = []
    board.listeners.append(lambda change, fault: told.append(f"{change} {fault.area}"))
    today = budget.decide(600.0, 500, time.time() + 3600)
    budget.apply(today, board)
    budget.apply(today, board)  # every cycle of the day: nothing new
    fault = board.get("budget")
    assert fault is not None and fault.retry_at == today.resumes_at and fault.count == 1
    assert "600 cents spent" in fault.message and "limits.max_daily_cost=500" in fault.message
    # Past midnight, still over (running agents ended after it): paused until the next one.
    tomorrow = budget.decide(550.0, 500, time.time() + 90_000)
    budget.apply(tomorrow, board)
    fault = board.get("budget")
    assert fault is not None and fault.retry_at == tomorrow.resumes_at
    budget.apply(budget.decide(0.0, 500, time.time() + 90_000), board)
    assert board.get("budget") is None
    assert told == ["paused budget", "resumed budget"]


def test_cap_reached_starts_no_agent_until_the_next_day(tmp_path: Path) -> None:
    script = tmp_path / "record.py"
    script.write_text("import sys; open(sys.argv[1], 'a').write(sys.argv[2] + '\\n')\n")
    events = tmp_path / "events.txt"
    s = make_sample(
        tmp_path, concurrency=1, agent={"preset": "agentd", "command": None},
        limits={"max_daily_cost": 30},
        notify=[{"on": ["paused", "resumed"], "run": [sys.executable, str(script), str(events), "{event} {area}"]}],
    )  # fmt: skip
    s.plan({"t-1": [{"cost": 40}], "t-2": [{"cost": 40}]})
    s.add("first")
    s.add("second")
    out, codes = "", []
    for _ in range(40):
        done = s.cli("-q", "run", "--once")
        out += done.stdout
        codes.append(done.returncode)
        if s.status()["done"] == 1 and codes[-1] == 3:
            break
    done = s.cli("-q", "run", "--once")  # another invocation the same day: still paused, said once
    out += done.stdout
    assert done.returncode == 3
    assert s.rows("SELECT task_id FROM pipeline_runs WHERE phase = 'dev'") == [("t-1",)]
    assert out.count("paused: budget: daily cost cap reached: 40 cents spent") == 1
    assert out.splitlines() == [out.splitlines()[0]]
    [fault] = [f for f in s.status()["faults"] if f["area"] == "budget"]
    midnight = budget.day_bounds(time.time())[1]
    assert datetime.fromisoformat(fault["retry_at"]).timestamp() == pytest.approx(midnight, abs=1)
    assert s.task("t-1")["status"] == "done" and s.task("t-2")["status"] == "open"  # nothing charged
    assert "no new agent starts until" in s.cli("status").stdout

    # The next day: yesterday's spending no longer counts.
    conn = sqlite3.connect(s.root / "state.db")
    conn.execute("UPDATE pipeline_runs SET finished_at = '2000-01-01T00:00:00.000000+00:00'")
    conn.commit()
    conn.close()
    done = s.cli("run", "--once")
    # t-2's agent starts; when it ends within this invocation its own 40 cents reach today's cap
    # again (exit 3, paused anew), otherwise the run ends with nothing paused (exit 0).
    assert done.returncode in (0, 3), done.stdout + done.stderr
    assert s.rows("SELECT task_id FROM pipeline_runs WHERE phase = 'dev' ORDER BY id") == [("t-1",), ("t-2",)]
    paused = [f for f in s.status()["faults"] if f["area"] == "budget"]
    assert bool(paused) == (done.returncode == 3)
    assert events.read_text().splitlines()[:2] == ["paused budget", "resumed budget"]


def test_only_what_ended_since_local_midnight_counts_and_no_cap_lifts_the_pause(tmp_path: Path) -> None:
    db = open_db(tmp_path / "state.db")
    runs = Runs(db)
    board = FaultBoard(tmp_path / "faults.json", lambda n: 1.0)
    start, _ = budget.day_bounds(time.time())
    for cents, ended in ((70.0, start - 1), (20.0, start), (15.5, time.time())):
        row = runs.start("t-1", Phase.DEV, 0)
        runs.finish(row, RunStatus.SUCCESS, cost_cents=cents)
        runs.update(row, finished_at=datetime.fromtimestamp(ended, UTC).isoformat(timespec="microseconds"))
    assert budget.check(36, runs, board).capped is False  # yesterday's 70 cents do not count
    verdict = budget.check(35, runs, board)
    assert verdict.capped and verdict.spent_cents == 35.5 and "budget" in board
    budget.check(0, runs, board)  # the cap removed from the config: agents start again
    assert "budget" not in board
    db.close()
