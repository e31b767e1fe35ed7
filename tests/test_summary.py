"""The end-of-run summary and the exit decision, in-process over rows."""

from __future__ import annotations

import pytest

from runner.faults import Fault
from runner.state import Phase, RunRecord, RunStatus
from runner.summary import HelpNeeded, Mode, Summary, needs_attention, render, summarize


def run(task_id: str, phase: Phase, status: RunStatus, cost: float = 0.0) -> RunRecord:
    return RunRecord(
        id=0, task_id=task_id, phase=phase, patchset=0, agent_run_id=None, status=status, cost_cents=cost,
        started_at="", finished_at="", error_summary=None, log_path=None, pid=None, workspace=None,
        before_sha=None, after_sha=None, tokens=None,
    )  # fmt: skip


PAUSED = Fault("dev", "claude cannot start\nmore", 0.0, 1, 0.0)
HELP = HelpNeeded("t-3", "Hard one", "3 failed attempts reached limits.max_retries=3\ntrace")


def test_summary_counts_what_finished_during_the_run() -> None:
    runs = [
        run("t-1", Phase.DEV, RunStatus.SUCCESS, 30.5),
        run("t-1", Phase.VERIFY, RunStatus.SUCCESS),
        run("t-1", Phase.INTEGRATE, RunStatus.SUCCESS),
        run("t-2", Phase.DEV, RunStatus.FAILURE, 14.5),
        run("t-3", Phase.VERIFY, RunStatus.FAILURE),
        run("t-4", Phase.INTEGRATE, RunStatus.CANCELLED),  # held back: neither landed nor rejected
        run("t-5", Phase.DEV, RunStatus.CANCELLED, 0.25),  # stopped by a fault: its cost still counts
        run("t-6", Phase.INTEGRATE, RunStatus.SUCCESS),
    ]
    summary = summarize(runs, [HELP], [PAUSED])
    assert summary == Summary(("t-1", "t-6"), 2, (HELP,), 45.25, (PAUSED,))
    assert render(summary) == (
        "This run: 2 tasks landed (t-1, t-6); 2 attempts were rejected; 1 task went to needs help (t-3); "
        "agents cost $0.45 (45.25 cents). t-3 (Hard one) needs help: 3 failed attempts reached "
        "limits.max_retries=3. Paused: dev (claude cannot start)."
    )


def test_a_run_that_did_nothing_says_so_in_one_line() -> None:
    text = render(summarize([], [], []))
    assert text == (
        "This run: 0 tasks landed; 0 attempts were rejected; 0 tasks went to needs help; agents cost $0.00 (0 cents)."
    )


def test_many_tasks_are_named_up_to_ten() -> None:
    runs = [run(f"t-{i}", Phase.INTEGRATE, RunStatus.SUCCESS) for i in range(1, 13)]
    assert "12 tasks landed (t-1, t-2, t-3, t-4, t-5, t-6, t-7, t-8, t-9, t-10 and 2 more)" in render(
        summarize(runs, [], [])
    )


@pytest.mark.parametrize(
    ("mode", "needs_help", "paused", "waiting", "attention"),
    [
        (Mode.ONCE, False, False, 0, False),
        (Mode.ONCE, False, False, 4, False),  # needing help from before: not this run's news
        (Mode.ONCE, True, False, 1, True),
        (Mode.ONCE, False, True, 0, True),
        (Mode.UNTIL_IDLE, False, False, 0, False),
        (Mode.UNTIL_IDLE, False, False, 2, True),  # it ran until nothing else could move
        (Mode.UNTIL_IDLE, True, False, 1, True),
        (Mode.UNTIL_IDLE, False, True, 0, True),
    ],
)
def test_exit_decision(mode: Mode, needs_help: bool, paused: bool, waiting: int, attention: bool) -> None:
    summary = summarize([], [HELP] if needs_help else [], [PAUSED] if paused else [])
    assert needs_attention(mode, summary, waiting) is attention
