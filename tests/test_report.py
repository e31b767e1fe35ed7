"""`report`: the pure parts in-process, the SQL over a real store, and the command as a process."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import sqlite3
import stat
import threading
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from runner.errors import PipelineError
from runner.report import (
    assign_slots,
    build_report,
    clean,
    load_report,
    parse_since,
    percentile,
    phase_rows,
    render_text,
    report_json,
    weighted_percentile,
)
from runner.report_html import render_html, write_html
from runner.report_query import ReportInputs, RunInput, TaskInput, read_inputs
from runner.state import Database, Runs, open_db
from runner.tasks import BuiltinTaskStore, NewTask, TaskType
from tests.conftest import CLI, default_root, write_config

AS_OF = datetime(2026, 3, 5, 12, 0, tzinfo=UTC)
HOSTILE = '</td></tr><script>document.title="pwned"</script><img src=x onerror="alert(1)"> \x1b[2J\u202e'


def t(day: int, hour: int = 0, minute: int = 0, second: float = 0) -> str:
    """A stored timestamp in March 2026."""
    whole = int(second)
    micro = round((second - whole) * 1_000_000)
    return datetime(2026, 3, day, hour, minute, whole, micro, tzinfo=UTC).isoformat(timespec="microseconds")


# -- slots -----------------------------------------------------------------------------------------


def test_slots_reuse_the_lowest_free_one_and_a_touching_span_frees_it() -> None:
    # a: 0-10, b: 5-15 overlaps a, c: 10-20 starts as a ends, d: 12-13 overlaps b and c.
    assert assign_slots([(0, 10), (5, 15), (10, 20), (12, 13)]) == [0, 1, 0, 2]
    assert assign_slots([]) == []
    # Input order does not matter: the same spans shuffled get the same slots.
    assert assign_slots([(12, 13), (10, 20), (5, 15), (0, 10)]) == [2, 0, 1, 0]
    # Zero-length spans at one instant do not pile up slots.
    assert assign_slots([(3, 3), (3, 3), (3, 3)]) == [0, 0, 0]


def test_slots_never_overlap_and_are_as_few_as_the_busiest_moment() -> None:
    rng = random.Random(7)
    for _ in range(200):
        spans = []
        for _ in range(rng.randint(1, 25)):
            start = rng.randint(0, 50)
            spans.append((float(start), float(start + rng.choice([0, 1, 2, 5, 20]))))
        slots = assign_slots(spans)
        for i, j in itertools.combinations(range(len(spans)), 2):
            if slots[i] == slots[j]:
                (a, b), (c, d) = spans[i], spans[j]
                assert b <= c or d <= a or a == b or c == d, (spans, slots)
        # As few slots as the most runs open at one instant (a run of no length aside: it is a
        # point, drawn on whichever slot is free then).
        if all(a < b for a, b in spans):
            busiest = max(sum(1 for a, b in spans if a <= x < b) for x in range(0, 80))
            assert max(slots) + 1 == busiest


# -- percentiles, and the SQL computing them the same way -----------------------------------------


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([7.0], 0.95) == 7.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.0
    assert percentile([float(v) for v in range(1, 101)], 0.95) == 95.0
    assert percentile([float(v) for v in range(1, 21)], 0.95) == 19.0


def _store(tmp_path: Path) -> tuple[Database, BuiltinTaskStore, Runs]:
    db = open_db(tmp_path / "state.db")
    return db, BuiltinTaskStore(db), Runs(db)


def _task(db: Database, store: BuiltinTaskStore, task_id: str, created: str, title: str | None = None,
          type_: TaskType = TaskType.WORK) -> None:  # fmt: skip
    store.add(NewTask(title=title or f"task {task_id}", id=task_id, type=type_))
    with db.write() as conn:
        conn.execute("UPDATE tasks SET created_at = ? WHERE id = ?", (created, task_id))


def _run(runs: Runs, task_id: str, phase: str, status: str, start: str, end: str | None, **fields: Any) -> int:
    run_id = runs.start(task_id, phase, 0)
    runs.update(run_id, status=status, started_at=start, finished_at=end, **fields)
    return run_id


def test_durations_histogram_gives_the_percentiles_of_the_runs(tmp_path: Path) -> None:
    db, store, runs = _store(tmp_path)
    _task(db, store, "t-1", t(1))
    parent = _run(runs, "t-1", "verify", "success", t(1, 1), t(1, 2))
    for n in range(1, 23):
        with db.write() as conn:
            conn.execute("DELETE FROM pipeline_runs WHERE parent_id IS NOT NULL")
        values = [float((k * 37) % 101) / 2 for k in range(n)]  # repeats, three significant digits
        for value in values:
            _run(runs, "t-1", "unit", "success", t(1, 1), t(1, 1), parent_id=parent, duration=value)
        (unit,) = [p for p in phase_rows(read_inputs(db, None).durations) if p.kind == "check"]
        assert (unit.passed, unit.p50_s, unit.p95_s) == (n, percentile(values, 0.5), percentile(values, 0.95)), n
    # However many runs there are, the histogram has a row per duration to three significant digits.
    with db.write() as conn:
        conn.execute("DELETE FROM pipeline_runs WHERE parent_id IS NOT NULL")
    for value in (0.12345, 0.12349, 7.777, 7.7749, 1234.5, 1225.1, 98765.0, 123456.0, -0.5):
        _run(runs, "t-1", "unit", "failure", t(1, 1), t(1, 1), parent_id=parent, duration=value)
    buckets = sorted((b.seconds, b.count) for b in read_inputs(db, None).durations if b.kind == "check")
    assert buckets == [(-0.5, 1), (0.123, 2), (7.77, 1), (7.78, 1), (1230.0, 2), (98800.0, 1), (123000.0, 1)]
    db.close()


def test_weighted_percentile_is_the_percentile_of_the_repeated_values() -> None:
    pairs = [(3.0, 2), (1.0, 5), (10.0, 1)]
    flat = [3.0, 3.0, 1.0, 1.0, 1.0, 1.0, 1.0, 10.0]
    for fraction in (0.01, 0.5, 0.62, 0.63, 0.95, 1.0):
        assert weighted_percentile(pairs, fraction) == percentile(flat, fraction)
    assert weighted_percentile([], 0.5) is None and weighted_percentile([(4.0, 0)], 0.5) is None


# -- the rows, read from a real store -------------------------------------------------------------


def _populated(tmp_path: Path) -> Database:
    """Three work tasks, an epic, and attempts with their check phases over three days."""
    db, store, runs = _store(tmp_path)
    _task(db, store, "t-1", t(1, 9))
    _task(db, store, "t-2", t(2, 9), title="second")
    _task(db, store, "t-3", t(4, 9))
    _task(db, store, "e-1", t(1, 9), type_=TaskType.EPIC)
    # t-1: dev, verify fails on tree A (unit fails), a cancelled dev, dev, verify passes on tree A
    # (unit passes: flaky), integrate reuses unit's pass. Landed on day 1 at 12:00.
    _run(runs, "t-1", "dev", "success", t(1, 10), t(1, 10, 10), cost_cents=30)
    v1 = _run(runs, "t-1", "verify", "failure", t(1, 10, 10), t(1, 10, 12))
    _run(runs, "t-1", "unit", "failure", t(1, 10, 10), t(1, 10, 12), parent_id=v1, tree="A", duration=120)
    _run(runs, "t-1", "dev", "cancelled", t(1, 10, 20), t(1, 10, 21))
    _run(runs, "t-1", "dev", "success", t(1, 11), t(1, 11, 10), cost_cents=20)
    v2 = _run(runs, "t-1", "verify", "success", t(1, 11, 10), t(1, 11, 11))
    unit = _run(runs, "t-1", "unit", "success", t(1, 11, 10), t(1, 11, 11), parent_id=v2, tree="A", duration=60)
    i1 = _run(runs, "t-1", "integrate", "success", t(1, 11, 50), t(1, 12))
    _run(runs, "t-1", "unit", "success", t(1, 11, 50), t(1, 11, 50), parent_id=i1, tree="A", duration=0,
         cached_from=unit)  # fmt: skip
    # t-2: passes on tree B, then (no cache) fails on tree B: not flaky in this order. Lands day 3.
    _run(runs, "t-2", "dev", "success", t(3, 8), t(3, 8, 30), cost_cents=50)
    v3 = _run(runs, "t-2", "verify", "success", t(3, 8, 30), t(3, 8, 31))
    _run(runs, "t-2", "unit", "success", t(3, 8, 30), t(3, 8, 31), parent_id=v3, tree="B", duration=30)
    v4 = _run(runs, "t-2", "verify", "failure", t(3, 8, 40), t(3, 8, 41))
    _run(runs, "t-2", "unit", "failure", t(3, 8, 40), t(3, 8, 41), parent_id=v4, tree="B", duration=30)
    _run(runs, "t-2", "integrate", "success", t(3, 9), t(3, 9, 1))
    # t-3: a dev run still going.
    _run(runs, "t-3", "dev", "running", t(5, 11), None)
    return db


def test_rows_aggregate_tasks_days_phases_and_flaky_checks(tmp_path: Path) -> None:
    db = _populated(tmp_path)
    inputs = read_inputs(db, None)
    db.close()
    by_id = {task.id: task for task in inputs.tasks}
    assert list(by_id) == ["t-1", "t-2", "t-3"]  # the epic is no work of its own
    assert (by_id["t-1"].attempts, by_id["t-1"].failures, by_id["t-1"].cost_cents) == (2, 1, 50.0)
    assert by_id["t-1"].landed_at == t(1, 12)
    assert (by_id["t-3"].attempts, by_id["t-3"].landed_at) == (1, None)
    assert [(d.day, d.runs, d.cost_cents) for d in inputs.days] == [
        ("2026-03-01", 6, 50.0), ("2026-03-03", 4, 50.0), ("2026-03-05", 1, 0.0),
    ]  # fmt: skip
    phases = {(p.kind, p.name): p for p in phase_rows(inputs.durations)}
    unit = phases["check", "unit"]
    assert (unit.passed, unit.failed, unit.reused) == (2, 2, 1)
    assert (unit.p50_s, unit.p95_s) == (30.0, 120.0)  # the reused pass took no time: not a duration
    verify = phases["stage", "verify"]
    assert (verify.passed, verify.failed) == (2, 2) and verify.p50_s == pytest.approx(60.0)
    assert ("stage", "dev") in phases and phases["stage", "dev"].passed == 3  # cancelled and running aside
    # Failed then passed on tree A: flaky. Passed then failed on tree B: a pass came first, and the
    # cache would have reused it; only --no-cache reruns it, and that is not "failed, then passed".
    assert [(f.phase, f.tree, f.failures, f.passes, f.task_ids) for f in inputs.flaky] == [
        ("unit", "A", 1, 2, ("t-1",))
    ]
    assert [r.stage for r in inputs.runs] == ["dev", "verify", "dev", "dev", "verify", "integrate",
                                             "dev", "verify", "verify", "integrate", "dev"]  # fmt: skip
    assert inputs.runs_in_window == 11


def test_since_keeps_tasks_worked_on_or_created_since_and_runs_started_since(tmp_path: Path) -> None:
    db = _populated(tmp_path)
    inputs = read_inputs(db, parse_since("2026-03-03"))
    limited = read_inputs(db, None, timeline_limit=3)
    db.close()
    assert [task.id for task in inputs.tasks] == ["t-2", "t-3"]
    assert [d.day for d in inputs.days] == ["2026-03-03", "2026-03-05"]
    assert inputs.flaky == []  # tree A's failure and pass were both before
    assert {(b.kind, b.name) for b in inputs.durations} == {("stage", "dev"), ("stage", "verify"),
                                                          ("stage", "integrate"), ("check", "unit")}  # fmt: skip
    assert inputs.runs_in_window == 5
    # The timeline keeps the most recent runs, oldest first, and knows how many there were.
    assert [r.task_id for r in limited.runs] == ["t-2", "t-2", "t-3"] and limited.runs_in_window == 11


# -- the document ---------------------------------------------------------------------------------


def test_report_figures(tmp_path: Path) -> None:
    db = _populated(tmp_path)
    report = build_report(read_inputs(db, None), AS_OF, None)
    db.close()
    s = report.summary
    assert (s.tasks, s.landed, s.days) == (3, 2, 5)  # 1 March to 5 March
    assert s.landed_per_day == pytest.approx(0.4)
    assert s.by_status == {"open": 3}
    rows = {row.id: row for row in report.tasks}
    assert rows["t-1"].lead_time_s == 3 * 3600  # created 09:00, landed 12:00
    assert rows["t-2"].lead_time_s == 24 * 3600 + 60  # landed at 09:01 the next day
    assert rows["t-3"].lead_time_s is None
    assert (s.lead_p50_s, s.lead_p95_s) == (3 * 3600, 24 * 3600 + 60)
    assert (s.attempts, s.failures, s.cost_cents, s.flaky_checks) == (4, 2, 100.0, 1)
    assert [(d.day, d.landed) for d in report.days] == [("2026-03-01", 1), ("2026-03-03", 1), ("2026-03-05", 0)]
    verify = next(p for p in report.phases if (p.kind, p.name) == ("stage", "verify"))
    assert verify.failure_rate == 0.5
    assert [p.name for p in report.phases] == ["dev", "verify", "integrate", "unit"]
    # The timeline: t-1's cancelled dev overlaps nothing, so dev needs one slot; the run still going
    # ends at as_of, the end of the timeline.
    timeline = report.timeline
    assert [lane.name for lane in timeline.lanes] == ["dev 1", "verify 1", "integrate 1"]
    last = timeline.runs[-1]
    assert (last.task_id, last.status, last.lane) == ("t-3", "running", "dev 1")
    assert last.end_s == timeline.span_s == (AS_OF - datetime(2026, 3, 1, 10, tzinfo=UTC)).total_seconds()


def test_overlapping_runs_get_slots_of_their_stage() -> None:
    runs = [
        RunInput(1, "t-1", "dev", "success", t(1, 10), t(1, 11)),
        RunInput(2, "t-2", "dev", "failure", t(1, 10, 30), t(1, 10, 40)),
        RunInput(3, "t-3", "dev", "success", t(1, 10, 45), t(1, 11, 30)),
        RunInput(4, "t-2", "verify", "success", t(1, 10, 40), t(1, 10, 50)),
    ]
    inputs = ReportInputs([], [], [], [], runs, 4)
    timeline = build_report(inputs, AS_OF, None).timeline
    assert [(r.run_id, r.lane) for r in timeline.runs] == [(1, "dev 1"), (2, "dev 2"), (3, "dev 2"),
                                                           (4, "verify 1")]  # fmt: skip
    assert [(lane.name, lane.runs, lane.busy_s) for lane in timeline.lanes] == [
        ("dev 1", 1, 3600.0), ("dev 2", 2, 600.0 + 2700.0), ("verify 1", 1, 600.0),
    ]  # fmt: skip


def test_a_task_landed_before_since_does_not_count_as_throughput() -> None:
    task = TaskInput("t-1", "old", "done", t(1), 1, 0, 0.0, t(2))
    report = build_report(ReportInputs([task], [], [], [], [], 0), AS_OF, parse_since("2026-03-04"))
    assert (report.summary.landed, report.summary.days) == (0, 2)


def test_empty_store_gives_an_empty_report(tmp_path: Path) -> None:
    report = load_report(tmp_path / "nothing-here", None, AS_OF)
    assert not report.initialized and report.tasks == [] and report.summary.landed_per_day is None
    assert "nothing has been queued" in render_text(report)
    assert 'id="task-table"' in render_html(report)
    assert not (tmp_path / "nothing-here").exists()
    db, _, _ = _store(tmp_path)
    db.close()
    report = load_report(tmp_path, None, AS_OF)
    assert report.initialized and "Tasks       0" in render_text(report)


# -- --since ---------------------------------------------------------------------------------------


def test_since_accepts_iso_dates_and_datetimes_as_utc() -> None:
    assert parse_since("2026-03-04") == "2026-03-04T00:00:00.000000+00:00"
    assert parse_since("2026-03-04T09:30") == "2026-03-04T09:30:00.000000+00:00"
    assert parse_since("2026-03-04T09:30:00+02:00") == "2026-03-04T07:30:00.000000+00:00"
    assert parse_since("2026-03-04T09:30Z") == "2026-03-04T09:30:00.000000+00:00"
    # Compared as strings with stored times: a run at the very instant counts.
    assert t(4) >= parse_since("2026-03-04") > t(3, 23, 59, 59.999999)
    for bad in ("yesterday", "2026-13-01", "", "03/04/2026"):
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(repr(bad))):
            parse_since(bad)


# -- rendering untrusted values --------------------------------------------------------------------


class _Elements(HTMLParser):
    """Every start tag with its attributes, and the text of each table cell."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.cells: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "td":
            self._in_cell = True
            self.cells.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._in_cell = False

    def handle_data(self, data: str) -> None:
        if self._in_cell:
            self.cells[-1] += data


def _hostile_report() -> Any:
    task = TaskInput("t-1", HOSTILE, "needs_help", t(1), 3, 3, 9.5, None)
    run = RunInput(1, "t-1", "dev", "failure", t(1, 1), t(1, 2))
    return build_report(ReportInputs([task], [], [], [], [run], 1), AS_OF, None)


def test_html_written_through_a_symlink_or_a_pipe_never_replaces_it(tmp_path: Path) -> None:
    # `report --html /dev/stdout` run as root replaced the /dev/stdout symlink with a file, for
    # every process after; a symlinked report.html became a file and its target stayed stale.
    report = load_report(tmp_path / "nothing-here", None, AS_OF)
    real = tmp_path / "published" / "report.html"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / "report.html"
    link.symlink_to(real)
    write_html(report, link)
    assert link.is_symlink() and 'id="task-table"' in real.read_text()

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    stdout = tmp_path / "stdout"
    stdout.symlink_to(fifo)  # as /dev/stdout -> /proc/self/fd/1 -> a pipe
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    write_html(report, stdout)
    reader.join(10)
    assert stdout.is_symlink() and stat.S_ISFIFO(fifo.stat().st_mode)
    assert b'id="task-table"' in got[0]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left

    with pytest.raises(PipelineError, match="is a directory"):
        write_html(report, tmp_path)


def test_html_escapes_every_title_and_element_stays_ours() -> None:
    page = render_html(_hostile_report())
    parsed = _Elements()
    parsed.feed(page)
    tags = {tag for tag, _ in parsed.tags}
    assert "script" not in tags and "img" not in tags
    assert not any(name.startswith("on") for _, attrs in parsed.tags for name in attrs)
    # The title is there, as text, in its cell (control characters shown as replacement marks).
    assert '</td></tr><script>document.title="pwned"</script><img src=x onerror="alert(1)">' in parsed.cells[1]
    assert "\x1b" not in page and "\ufffd[2J" in page
    assert [attrs.get("data-task") for tag, attrs in parsed.tags if tag == "tr" and attrs.get("class") == "task"] == [
        "t-1"
    ]


def test_html_refers_to_nothing_outside_itself() -> None:
    page = render_html(_hostile_report())
    parsed = _Elements()
    parsed.feed(page)
    refs = [
        value
        for _, attrs in parsed.tags
        for name, value in attrs.items()
        if name in ("src", "href", "xlink:href", "action", "srcset", "poster", "data", "xmlns") and value
    ]
    assert refs == []
    assert not re.search(r"url\(|@import|https?://", page.split("<body>")[0])
    # A script or a load could only come from a bug; the page's policy forbids both anyway.
    csp = next(a["content"] for tag, a in parsed.tags if tag == "meta" and a.get("http-equiv"))
    assert csp is not None and "default-src 'none'" in csp and "script-src" not in csp


def test_text_shows_no_control_characters_from_titles() -> None:
    text = render_text(_hostile_report())
    assert "\x1b" not in text and "\u202e" not in text
    assert clean("a\nb\x1b[2J\u202ec") == "a?b?[2J?c"
    line = next(line for line in text.splitlines() if line.startswith("  t-1"))
    assert "needs_help" in line and "9.50c" in line


def test_json_document_is_the_report() -> None:
    doc = json.loads(json.dumps(report_json(_hostile_report())))
    assert doc["schema_version"] == 1
    assert doc["tasks"][0]["title"] == HOSTILE
    assert doc["timeline"]["runs"][0]["lane"] == "dev 1"


# -- the command ----------------------------------------------------------------------------------


def test_report_command_text_json_html_and_errors(cli: CLI, repo: Path, tmp_path: Path) -> None:
    write_config(repo, "base: live\n")
    assert cli("task", "add", "first", cwd=repo).code == 0
    conn = sqlite3.connect(default_root(repo) / "state.db")
    with conn:
        conn.execute(
            "INSERT INTO pipeline_runs (task_id, phase, patchset, status, cost_cents, started_at, finished_at) "
            "VALUES ('t-1', 'dev', 0, 'success', 12.5, ?, ?)", (t(1, 10), t(1, 11)),
        )  # fmt: skip
    conn.close()
    text = cli("report", cwd=repo)
    assert text.code == 0, text.err
    assert "t-1" in text.out and "12.50c" in text.out and "dev 1" in text.out
    doc = cli("report", "--json", "--since", "2026-03-01", cwd=repo).json()
    assert doc["since"] == "2026-03-01T00:00:00.000000+00:00" and doc["tasks"][0]["id"] == "t-1"
    assert cli("report", "--json", "--since", "2026-03-02", cwd=repo).json()["timeline"]["runs"] == []
    out = tmp_path / "out" / "r.html"
    out.parent.mkdir()
    done = cli("report", "--html", str(out), cwd=repo)
    # The line saying so is on stderr: `--html /dev/stdout` makes stdout the page and nothing else.
    assert done.code == 0 and str(out) in done.err and done.out == ""
    assert 'data-task="t-1"' in out.read_text() and list(out.parent.iterdir()) == [out]
    bad = cli("report", "--since", "last-tuesday", cwd=repo)
    assert bad.code == 2 and "--since" in bad.err and "'last-tuesday'" in bad.err
    missing = cli("report", "--html", str(tmp_path / "no" / "such" / "r.html"), cwd=repo)
    assert missing.code == 1 and str(tmp_path / "no" / "such" / "r.html") in missing.err
    assert "Traceback" not in missing.err + bad.err


def test_timeline_says_when_it_draws_only_the_most_recent_runs() -> None:
    runs = [RunInput(7, "t-1", "dev", "success", t(1, 1), t(1, 2)),
            RunInput(8, "t-1", "verify", "running", t(1, 2), None)]  # fmt: skip
    report = build_report(ReportInputs([], [], [], [], runs, 5000), AS_OF, None)
    page = render_html(report)
    assert "The last 2 of 5000 runs" in page and page.count('<rect class="run') == 2
    assert "the last 2 of 5000 runs" in render_text(report)
