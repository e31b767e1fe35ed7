"""The daily cost cap (``limits.max_daily_cost``): past it no new agent starts until local midnight.

The cap is the whole pipeline's, not a task's: reaching it pauses the area ``budget`` on the
FaultBoard (so `status`, the exit codes and the ``paused``/``resumed`` notifications say so) and
charges nothing to any task. Agents already running finish; verification and integration go on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from runner.faults import FaultBoard
from runner.state import Runs

AREA = "budget"


@dataclass(frozen=True)
class DailyBudget:
    """Where today's spending stands against the cap."""

    capped: bool
    spent_cents: float
    cap_cents: int  # 0: no cap
    resumes_at: float | None  # when capped: the local midnight that ends the day


def day_bounds(now: float) -> tuple[float, float]:
    """The local midnights that begin and end the day holding ``now`` (seconds since the epoch).

    mktime works in the process's time zone (``TZ``) and normalises the day after the last of a
    month; a day with a daylight-saving change is 23 or 25 hours long, as the clock says.
    """
    t = time.localtime(now)
    start = time.mktime((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0, 0, 0, -1))
    end = time.mktime((t.tm_year, t.tm_mon, t.tm_mday + 1, 0, 0, 0, 0, 0, -1))
    return start, end


def decide(spent_cents: float, cap_cents: int, day_end: float) -> DailyBudget:
    """Whether ``spent_cents`` since midnight reach ``cap_cents`` (0 = no cap), and until when."""
    if cap_cents <= 0 or spent_cents < cap_cents:
        return DailyBudget(False, spent_cents, cap_cents, None)
    return DailyBudget(True, spent_cents, cap_cents, day_end)


def pause_message(budget: DailyBudget) -> str:
    """What `status` and the ``paused`` notification say of a reached cap."""
    assert budget.resumes_at is not None
    until = datetime.fromtimestamp(budget.resumes_at).astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (
        f"daily cost cap reached: {budget.spent_cents:g} cents spent since local midnight, "
        f"limits.max_daily_cost={budget.cap_cents}; no new agent starts until {until}"
    )


def apply(budget: DailyBudget, faults: FaultBoard) -> None:
    """Pause the area ``budget`` while capped (once per day), resume it once not."""
    current = faults.get(AREA)
    if budget.capped:
        assert budget.resumes_at is not None
        if current is None or abs(current.retry_at - budget.resumes_at) > 1:
            faults.record(AREA, pause_message(budget), until=budget.resumes_at)
    elif current is not None:
        faults.clear(AREA)


def check(
    cap_cents: int, runs: Runs, faults: FaultBoard, now: float | None = None, pending: float = 0.0
) -> DailyBudget:
    """Read today's spending from the runs table and pause or resume new agents accordingly.
    ``pending``: the cost of agents that ended and are not recorded yet, counted as spent."""
    now = time.time() if now is None else now
    if cap_cents <= 0 and AREA not in faults:
        return DailyBudget(False, 0.0, cap_cents, None)  # no cap: nothing is read every cycle
    start, end = day_bounds(now)
    spent = 0.0
    if cap_cents > 0:
        spent = runs.cost_since(datetime.fromtimestamp(start, UTC).isoformat(timespec="microseconds")) + pending
    budget = decide(spent, cap_cents, end)
    apply(budget, faults)
    return budget
