"""The `report` command's document: throughput, lead time, attempts and cost per task and per day,
durations and failure rates per stage and check phase, flaky checks, and a timeline of runs per slot.

``build_report`` is a pure function from the rows of ``runner.report_query`` to the document;
``render_text`` and ``report_json`` present it (``runner.report_html`` writes the HTML file).
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from runner.report_query import STAGES, DurationBucket, FlakyInput, ReportInputs, TaskInput, read_inputs
from runner.state import open_db, state_exists
from runner.tasklist import printable

# Version of the `report --json` document; bump when a key changes meaning or disappears.
REPORT_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class TaskRow:
    """One work task: its attempts, failures, cost and, once it landed, its lead time."""

    id: str
    title: str
    status: str
    attempts: int
    failures: int
    cost_cents: float
    created_at: str
    landed_at: str | None
    lead_time_s: float | None  # created to landed


@dataclass(frozen=True)
class DayRow:
    """One UTC day: attempts started and their cost, and tasks landed."""

    day: str
    runs: int
    cost_cents: float
    landed: int


@dataclass(frozen=True)
class PhaseRow:
    """Durations and failure rate of one stage (dev, verify, integrate) or check phase."""

    kind: str  # "stage" or "check"
    name: str
    passed: int
    failed: int
    reused: int
    failure_rate: float | None  # failed / (passed + failed); reused passes are not runs
    p50_s: float | None
    p95_s: float | None


@dataclass(frozen=True)
class Lane:
    """A slot of the timeline: runs of one stage that never overlap."""

    name: str  # "dev 1"
    stage: str
    runs: int
    busy_s: float


@dataclass(frozen=True)
class TimelineRun:
    """One attempt placed on a lane; offsets are seconds from the timeline's start."""

    run_id: int
    task_id: str
    stage: str
    status: str
    lane: str
    started_at: str
    finished_at: str | None
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Timeline:
    """The attempts drawn (the most recent ones when there are many) on their lanes."""

    start: str | None
    end: str | None
    span_s: float
    lanes: list[Lane]
    runs: list[TimelineRun]
    total_runs: int  # all attempts in the window, drawn or not


@dataclass(frozen=True)
class Summary:
    """The headline figures."""

    tasks: int
    by_status: dict[str, int]
    landed: int
    days: int
    landed_per_day: float | None
    lead_p50_s: float | None
    lead_p95_s: float | None
    attempts: int
    failures: int
    cost_cents: float
    flaky_checks: int


@dataclass(frozen=True)
class Report:
    """The whole report."""

    initialized: bool
    as_of: str
    since: str | None
    summary: Summary
    tasks: list[TaskRow]
    days: list[DayRow]
    phases: list[PhaseRow]
    flaky: list[FlakyInput]
    timeline: Timeline


# -- input -----------------------------------------------------------------------------------------


def parse_since(value: str) -> str:
    """``--since``: an ISO date or datetime (UTC when it has no offset) as the stored ISO UTC form.

    Raises ``argparse.ArgumentTypeError`` naming the value, so the parser reports a usage error.
    """
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid date {value!r}: use an ISO date (2026-01-31) or datetime (2026-01-31T09:30, "
            "UTC unless it ends in an offset such as +02:00)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    # The same form as state.now_iso, so that comparing strings compares times.
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def load_report(
    root: Path, since: str | None, as_of: datetime | None = None, state: Path | str | None = None
) -> Report:
    """The report of the state under ``root`` (or at ``state``, config.state_target); an empty one
    when nothing was ever queued there."""
    now = as_of or datetime.now(UTC)
    path = state or root / "state.db"
    if not state_exists(path):
        return build_report(ReportInputs([], [], [], [], [], 0), now, since, initialized=False)
    db = open_db(path, create=False)
    try:
        inputs = read_inputs(db, since)
    finally:
        db.close()
    return build_report(inputs, now, since)


# -- the pure part ---------------------------------------------------------------------------------


def assign_slots(spans: Sequence[tuple[float, float]]) -> list[int]:
    """The slot of each ``(start, end)`` span: the lowest one free when it starts, so that no two
    spans on a slot overlap and the number of slots is the most spans ever open at once.

    A span ending exactly when another starts leaves its slot free for it.
    """
    slots = [0] * len(spans)
    ends: list[float] = []  # per slot, when its last span ends
    for index in sorted(range(len(spans)), key=lambda i: (spans[i][0], spans[i][1], i)):
        start, end = spans[index]
        free = next((slot for slot, busy_until in enumerate(ends) if busy_until <= start), None)
        if free is None:
            free = len(ends)
            ends.append(end)
        ends[free] = max(end, start)
        slots[index] = free
    return slots


def weighted_percentile(counts: Sequence[tuple[float, int]], fraction: float) -> float | None:
    """Nearest-rank percentile of values given as ``(value, how many times)``: the value at rank
    ceil(fraction * n) of the n values sorted; None for no values."""
    total = sum(n for _, n in counts)
    if total <= 0:
        return None
    rank = max(1, -(-round(fraction * 100) * total // 100))  # ceil, in integers
    seen = 0
    for value, n in sorted(counts):
        seen += n
        if seen >= rank:
            return value
    return None  # unreachable: seen reaches total >= rank


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of ``values``; None for none."""
    return weighted_percentile([(v, 1) for v in values], fraction)


def phase_rows(buckets: Sequence[DurationBucket]) -> list[PhaseRow]:
    """Per stage and check phase: runs passed, failed and reused, failure rate and p50/p95 of the
    durations of the runs that ran; stages in the order a task meets them, then checks by name."""
    groups: dict[tuple[str, str], list[DurationBucket]] = {}
    for bucket in buckets:
        groups.setdefault((bucket.kind, bucket.name), []).append(bucket)
    order = {("stage", name): i for i, name in enumerate(STAGES)}
    rows = []
    for (kind, name), found in sorted(groups.items(), key=lambda g: (g[0][0] != "stage", order.get(g[0], 99), g[0][1])):
        ran = [b for b in found if not b.reused]
        passed = sum(b.count for b in ran if b.status == "success")
        failed = sum(b.count for b in ran if b.status == "failure")
        timed = [(b.seconds, b.count) for b in ran if b.seconds is not None]
        rows.append(PhaseRow(
            kind, name, passed, failed, sum(b.count for b in found if b.reused),
            failed / (passed + failed) if passed + failed else None,
            weighted_percentile(timed, 0.5), weighted_percentile(timed, 0.95),
        ))  # fmt: skip
    return rows


def build_report(
    inputs: ReportInputs, as_of: datetime, since: str | None, *, initialized: bool = True
) -> Report:
    """The report document from its rows, as of ``as_of`` (runs still going end there)."""
    tasks = [_task_row(t) for t in inputs.tasks]
    landed = [t for t in tasks if t.landed_at is not None and (since is None or t.landed_at >= since)]
    leads = [t.lead_time_s for t in landed if t.lead_time_s is not None]
    landed_by_day = Counter(t.landed_at[:10] for t in landed if t.landed_at is not None)
    costs = {d.day: d for d in inputs.days}
    days = [
        DayRow(day, costs[day].runs if day in costs else 0,
               costs[day].cost_cents if day in costs else 0.0, landed_by_day.get(day, 0))
        for day in sorted(set(costs) | set(landed_by_day))
    ]
    span_days = _calendar_days(since, tasks, days, as_of)
    summary = Summary(
        tasks=len(tasks),
        by_status=dict(sorted(Counter(t.status for t in tasks).items())),
        landed=len(landed),
        days=span_days,
        landed_per_day=len(landed) / span_days if span_days else None,
        lead_p50_s=percentile(leads, 0.5),
        lead_p95_s=percentile(leads, 0.95),
        attempts=sum(t.attempts for t in tasks),
        failures=sum(t.failures for t in tasks),
        cost_cents=sum(d.cost_cents for d in days),
        flaky_checks=len(inputs.flaky),
    )
    return Report(
        initialized, as_of.astimezone(UTC).isoformat(timespec="seconds"), since, summary, tasks, days,
        phase_rows(inputs.durations), list(inputs.flaky), _timeline(inputs, as_of),
    )  # fmt: skip


def _task_row(task: TaskInput) -> TaskRow:
    lead = None
    if task.landed_at is not None:
        lead = max(0.0, (_when(task.landed_at) - _when(task.created_at)).total_seconds())
    return TaskRow(
        task.id, task.title, task.status, task.attempts, task.failures, task.cost_cents, task.created_at,
        task.landed_at, lead,
    )  # fmt: skip


def _calendar_days(since: str | None, tasks: list[TaskRow], days: list[DayRow], as_of: datetime) -> int:
    """Days from the window's first (since, or the first activity) to as_of's, both counted."""
    starts = [since] if since is not None else [t.created_at[:10] for t in tasks] + [d.day for d in days]
    if not starts:
        return 0
    first = date.fromisoformat(min(starts)[:10])
    last = as_of.astimezone(UTC).date()
    return max(1, (last - first).days + 1)


def _timeline(inputs: ReportInputs, as_of: datetime) -> Timeline:
    if not inputs.runs:
        return Timeline(None, None, 0.0, [], [], inputs.runs_in_window)
    origin = min(_when(r.started_at) for r in inputs.runs)
    spans: list[tuple[float, float]] = []
    for run in inputs.runs:
        start = (_when(run.started_at) - origin).total_seconds()
        if run.finished_at is not None:
            end = (_when(run.finished_at) - origin).total_seconds()
        elif run.status == "running":
            end = (as_of - origin).total_seconds()
        else:
            end = start
        spans.append((start, max(start, end)))
    order = {stage: i for i, stage in enumerate(STAGES)}
    stages = sorted({r.stage for r in inputs.runs}, key=lambda s: (order.get(s, len(order)), s))
    placed: dict[int, TimelineRun] = {}
    lanes: list[Lane] = []
    for stage in stages:
        members = [i for i, r in enumerate(inputs.runs) if r.stage == stage]
        slots = assign_slots([spans[i] for i in members])
        for slot in range(max(slots) + 1):
            on_lane = [members[k] for k, s in enumerate(slots) if s == slot]
            name = f"{stage} {slot + 1}"
            lanes.append(Lane(name, stage, len(on_lane), sum(spans[i][1] - spans[i][0] for i in on_lane)))
            for i in on_lane:
                run = inputs.runs[i]
                placed[i] = TimelineRun(
                    run.id, run.task_id, run.stage, run.status, name, run.started_at, run.finished_at,
                    spans[i][0], spans[i][1],
                )  # fmt: skip
    span = max(end for _, end in spans)
    end_at = origin + timedelta(seconds=span)
    return Timeline(
        origin.isoformat(timespec="seconds"), end_at.isoformat(timespec="seconds"), span, lanes,
        [placed[i] for i in range(len(inputs.runs))], inputs.runs_in_window,
    )  # fmt: skip


def _when(stamp: str) -> datetime:
    moment = datetime.fromisoformat(stamp)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# -- presentation ----------------------------------------------------------------------------------


def report_json(report: Report) -> dict[str, Any]:
    """The `report --json` document."""
    return {"schema_version": REPORT_SCHEMA_VERSION, **asdict(report)}


def clean(text: str, limit: int | None = None) -> str:
    """``text`` safe to print on a terminal: control and format characters (escape sequences,
    newlines, bidirectional overrides) become '?', so a task's title cannot rewrite the screen."""
    out = printable(text)
    return out if limit is None or len(out) <= limit else out[: limit - 1] + "…"


def duration(seconds: float | None) -> str:
    """A short human duration: 0.4s, 42s, 3m05s, 2h04m, 3d04h; '-' for none."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def cents(value: float) -> str:
    """A cost in cents, as the runner counts it."""
    return f"{value:.2f}c"


def rate(value: float | None) -> str:
    """A fraction as a percentage; '-' when nothing ran."""
    return "-" if value is None else f"{value:.0%}"


def render_text(report: Report) -> str:
    """The terminal form of the report."""
    s = report.summary
    window = f"since {report.since[:19]}" if report.since else "all history"
    lines = [f"pipeline-runner report as of {report.as_of} ({window})"]
    if not report.initialized:
        return lines[0] + "\nNo pipeline state yet: nothing has been queued or run.\n"
    per_day = f" ({s.landed_per_day:.1f} a day)" if s.landed_per_day is not None else ""
    statuses = ", ".join(f"{clean(k)} {v}" for k, v in s.by_status.items()) or "none"
    lines += [
        "",
        f"Throughput  {s.landed} task(s) landed in {s.days} day(s){per_day}",
        f"Lead time   p50 {duration(s.lead_p50_s)}, p95 {duration(s.lead_p95_s)} (created to landed)",
        f"Tasks       {s.tasks}: {statuses}",
        f"Attempts    {s.attempts} dev attempt(s), {s.failures} failed attempt(s) of any stage",
        f"Cost        {cents(s.cost_cents)}"
        + (f", {cents(s.cost_cents / s.tasks)} a task" if s.tasks else ""),
    ]
    if report.days:
        lines += ["", f"{'Per day':<14}{'runs':>6}{'landed':>8}{'cost':>12}"]
        lines += [f"  {d.day:<12}{d.runs:>6}{d.landed:>8}{cents(d.cost_cents):>12}" for d in report.days]
    for kind, title in (("stage", "Stages"), ("check", "Check phases")):
        rows = [p for p in report.phases if p.kind == kind]
        if rows:
            lines += ["", f"{title:<22}{'passed':>7}{'failed':>7}{'reused':>7}{'fail%':>7}{'p50':>9}{'p95':>9}"]
            lines += [
                f"  {clean(p.name, 20):<20}{p.passed:>7}{p.failed:>7}{p.reused:>7}{rate(p.failure_rate):>7}"
                f"{duration(p.p50_s):>9}{duration(p.p95_s):>9}"
                for p in rows
            ]
    lines += ["", "Flaky checks (failed, then passed on the same tree):"]
    lines += [
        f"  {clean(f.phase)}  tree {f.tree[:12]}  {f.failures} failure(s), {f.passes} pass(es)  "
        f"tasks {', '.join(f.task_ids)}"
        for f in report.flaky
    ] or ["  none"]
    lines += ["", f"{'Tasks':<12}{'status':<13}{'attempts':>8}{'failed':>7}{'lead':>9}{'cost':>11}  title"]
    lines += [
        f"  {t.id:<10}{clean(t.status, 12):<13}{t.attempts:>8}{t.failures:>7}{duration(t.lead_time_s):>9}"
        f"{cents(t.cost_cents):>11}  {clean(t.title, 80)}"
        for t in report.tasks
    ] or ["  none"]
    lines += ["", *_timeline_text(report.timeline)]
    return "\n".join(lines) + "\n"


def _timeline_text(timeline: Timeline) -> list[str]:
    if not timeline.runs:
        return ["Timeline: no runs."]
    drawn = (
        f"the last {len(timeline.runs)} of {timeline.total_runs} runs"
        if timeline.total_runs > len(timeline.runs)
        else f"{len(timeline.runs)} run(s)"
    )
    lines = [f"Timeline: {drawn} on {len(timeline.lanes)} slot(s), {timeline.start} to {timeline.end}"]
    for lane in timeline.lanes:
        busy = lane.busy_s / timeline.span_s if timeline.span_s else 0.0
        lines.append(f"  {clean(lane.name, 20):<20}{lane.runs:>6} run(s)  busy {busy:.0%}")
    return lines
