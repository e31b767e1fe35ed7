"""The status text, the choice of plain or rich, what a watch counts as a change, and when
`logs -f` stops: in-process, over documents and tables."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest

from runner.state import Phase, RunRecord, RunStatus
from runner.status import last_line
from runner.statusview import dollars, elapsed, render_plain, render_rich, use_rich
from runner.tasklogs import AttemptState, Follow, attempt_of, attempt_over
from runner.tasks import TaskStatus
from runner.watch import stable

ESC = "\x1b"
NOW = 1_800_000_000.0


def _run(task: str, phase: str, last: str, phases: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "task_id": task, "phase": phase, "patchset": 1, "agent_run_id": None, "pid": None,
        "started_at": "2027-01-15T08:00:00+00:00", "log_path": f"/r/logs/tasks/{task}/{phase}.log",
        "phases": phases or [], "elapsed": 754.0, "cost_cents": 0.0, "task_cost_cents": 123.4,
        "logs": [], "last_line": last,
    }  # fmt: skip


def _phase(name: str, status: str) -> dict[str, Any]:
    return {"name": name, "status": status, "exit_code": None, "duration": 2.0, "cached_from": None,
            "cached_at": None, "log_path": None, "error": None}  # fmt: skip


def _doc() -> dict[str, Any]:
    return {
        "schema_version": 2, "initialized": True, "root": "/r", "base": "live",
        "open": 2, "in_progress": 1, "verified": 1, "done": 4, "needs_help": 1, "active_dev_runs": 1,
        "epics": 0, "cost_cents": 98765.4,
        "active_runs": [
            _run("t-dev", "dev", "editing parser.py"),
            _run("t-ver", "verify", "collected 12 items", [_phase("unit", "running")]),
            _run("t-int", "integrate", "", [_phase("unit", "passed")]),
        ],
        "needs_help_tasks": [{"id": "t-nh", "title": f"evil {ESC}[31mred{ESC}[0m [bold]title[/]",
                              "reason": "exceeded 3 retries\nsecond line", "cost_cents": 50}],
        "held_integrations": [], "skipped_verifications": [],
        "faults": [{"area": "dev", "message": "claude refused to start", "since": "2027-01-15T07:00:00+00:00",
                    "retry_at": "2027-01-15T08:20:00+00:00", "count": 2}],
        "queue": [
            {"id": "t-w", "title": "waits", "status": "open", "priority": "P2", "why": "dependency",
             "detail": "waiting on t-dev (in_progress)", "waiting_on": ["t-dev"], "until": None, "fault": None},
            {"id": "t-b", "title": "backs off", "status": "open", "priority": "P1", "why": "backoff",
             "detail": "backing off after a failure, until 08:30:00 UTC", "waiting_on": [],
             "until": "2027-01-15T08:30:00+00:00", "fault": None},
        ],
        "log_file": "/r/logs/pipeline.jsonl", "state_schema_version": 3,
    }  # fmt: skip


def test_plain_text_shows_every_active_run_kind_dollars_and_reasons() -> None:
    text = render_plain(_doc(), now=NOW)
    for task, phase in (("t-dev", "dev"), ("t-ver", "verify"), ("t-int", "integrate")):
        assert f"  {task}  {phase}  patchset 1  for 12m34s" in text
        assert f"log: /r/logs/tasks/{task}/{phase}.log" in text
    assert "> editing parser.py" in text and "> collected 12 items" in text
    assert "unit: running for" in text and "unit: passed" in text
    assert "cost so far $1.23" in text and "Cost so far: $987.65" in text
    assert "t-w  open  P2  waits" in text and "dependency: waiting on t-dev (in_progress)" in text
    assert "backoff: backing off after a failure, until 08:30:00 UTC" in text
    assert "last reason: exceeded 3 retries" in text and "claude refused to start" in text
    assert "/r/logs/pipeline.jsonl" in text
    # A title carrying escape sequences cannot colour or move the terminal of whoever reads it.
    assert ESC not in text and "[bold]title[/]" in text


def test_rich_view_colours_and_shows_markup_in_data_as_written() -> None:
    out = io.StringIO()
    from rich.console import Console

    Console(file=out, force_terminal=True, width=160).print(render_rich(_doc(), now=NOW))
    shown = out.getvalue()
    assert ESC in shown  # the terminal view is drawn with colours
    plain = Console(file=io.StringIO(), width=160, no_color=True)
    with plain.capture() as captured:
        plain.print(render_rich(_doc(), now=NOW))
    view = captured.get()
    for needle in ("t-dev", "t-ver", "t-int", "$1.23", "$987.65", "editing parser.py", "waiting on t-dev",
                   "[bold]title[/]", "dev paused"):  # fmt: skip
        assert needle in view, needle


def test_a_long_queue_is_cut_in_text_only() -> None:
    doc = _doc()
    doc["queue"] = [{**doc["queue"][0], "id": f"q-{i}"} for i in range(100)]
    text = render_plain(doc, now=NOW)
    assert "q-0  open" in text and "q-39  open" in text and "q-40  open" not in text
    assert "... and 60 more" in text


def test_not_initialized_says_how_to_start() -> None:
    doc = {"initialized": False, "root": "/r"}
    assert "No pipeline state at /r" in render_plain(doc)


@pytest.mark.parametrize(
    ("cents", "shown"), [(0, "$0.00"), (5, "$0.05"), (123.4, "$1.23"), (100_000, "$1,000.00")]
)
def test_dollars(cents: float, shown: str) -> None:
    assert dollars(cents) == shown


@pytest.mark.parametrize(("seconds", "shown"), [(5, "5s"), (65, "1m05s"), (7322, "2h02m")])
def test_elapsed(seconds: float, shown: str) -> None:
    assert elapsed(seconds) == shown


@pytest.mark.parametrize(
    ("tty", "flag", "env", "expected"),
    [
        (True, False, {}, True),
        (False, False, {}, False),  # piped: plain
        (True, True, {}, False),  # --no-color
        (True, False, {"NO_COLOR": "1"}, False),
        (True, False, {"NO_COLOR": ""}, True),  # an empty NO_COLOR does not count (no-color.org)
    ],
)
def test_rich_only_on_a_terminal_without_no_color(tty: bool, flag: bool, env: dict[str, str], expected: bool) -> None:
    master, slave = os.openpty()
    read, write = os.pipe()
    with open(slave if tty else write, "w") as stream:
        assert use_rich(stream, no_color=flag, env=env) is expected
    os.close(master)
    os.close(read)
    if tty:
        os.close(write)
    else:
        os.close(slave)


def test_a_watch_ignores_the_clock_but_not_a_change() -> None:
    one, two = _doc(), _doc()
    two["active_runs"][0]["elapsed"] = 999.0
    two["active_runs"][1]["phases"][0]["duration"] = 9.0
    assert stable(one) == stable(two)
    two["active_runs"][0]["last_line"] = "running the tests"
    assert stable(one) != stable(two)
    three = _doc()
    three["queue"][0]["why"] = "ready"
    assert stable(one) != stable(three)


def test_last_line_is_the_latest_output_without_escapes(tmp_path: Path) -> None:
    agent, phase = tmp_path / "agent.log", tmp_path / "unit.log"
    agent.write_text("one\ntwo\n\n")
    assert last_line([agent]) == "two"
    phase.write_bytes(b"\x1b[32mPASSED\x1b[0m test_a\n   \n")
    assert last_line([agent, phase]) == "PASSED test_a"  # the latest log that has output
    assert last_line([agent, tmp_path / "not-yet.log"]) == "two"
    agent.write_text("x" * 10_000)  # one long line: cut, never read whole
    assert last_line([agent]) == "x" * 200
    assert last_line([]) == ""


def _record(id_: int, phase: Phase) -> RunRecord:
    return RunRecord(id_, "t", phase, 0, None, RunStatus.SUCCESS, 0.0, "2027-01-01T00:00:00+00:00", None,
                     None, None, None, None, None, None, None)  # fmt: skip


def test_the_latest_attempt_starts_at_the_last_dev_run() -> None:
    dev, verify = Phase.DEV, Phase.VERIFY
    records = [_record(1, dev), _record(2, verify), _record(5, dev), _record(6, verify), _record(9, Phase.INTEGRATE)]
    assert [r.id for r in attempt_of(records)] == [5, 6, 9]
    assert [r.id for r in attempt_of([_record(3, verify)])] == [3]  # no dev run: everything


FOLLOW_CASES = [
    ("its agent runs", AttemptState(True, TaskStatus.IN_PROGRESS, False, False), Follow.GO_ON),
    ("between agent and checks", AttemptState(False, TaskStatus.IN_PROGRESS, False, True), Follow.GO_ON),
    ("verified, integration next", AttemptState(False, TaskStatus.VERIFIED, False, True), Follow.GO_ON),
    ("no runner to take the next step", AttemptState(False, TaskStatus.IN_PROGRESS, False, False), Follow.OVER),
    ("verified but held", AttemptState(False, TaskStatus.VERIFIED, False, True, held=True), Follow.OVER),
    ("landed", AttemptState(False, TaskStatus.DONE, False, True), Follow.OVER),
    ("rejected, back to open", AttemptState(False, TaskStatus.OPEN, False, True), Follow.OVER),
    ("needs help", AttemptState(False, TaskStatus.NEEDS_HELP, False, True), Follow.OVER),
    ("a new attempt began", AttemptState(True, TaskStatus.IN_PROGRESS, True, True), Follow.OVER),
]


@pytest.mark.parametrize(("name", "state", "expected"), FOLLOW_CASES, ids=[c[0] for c in FOLLOW_CASES])
def test_when_following_ends(name: str, state: AttemptState, expected: Follow) -> None:
    assert attempt_over(state) is expected
