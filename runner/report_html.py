"""`report --html FILE`: the report as one self-contained HTML file.

Inline CSS and an inline SVG timeline, no script and nothing fetched: a Content-Security-Policy
forbids every load and every script, so that even a value that escaped escaping could not run or
call out. Every value from the store (titles are written by whoever queues tasks) is escaped.
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from html import escape
from pathlib import Path

from runner.errors import PipelineError
from runner.report import PhaseRow, Report, Timeline, cents, duration, rate

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .4em 0; }
th, td { padding: .2em .6em; border-bottom: 1px solid #ddd; text-align: left; vertical-align: top; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
td.title { max-width: 40em; overflow-wrap: anywhere; }
dl { display: grid; grid-template-columns: max-content auto; gap: .2em 1em; }
dt { font-weight: 600; } dd { margin: 0; }
.bar { display: inline-block; height: .8em; background: #4a7bd0; }
.muted { color: #777; }
svg text { font: 11px system-ui, sans-serif; fill: #333; }
rect.run { stroke: #fff; stroke-width: .5; }
rect.success { fill: #3c9a5f; } rect.failure { fill: #d0483e; } rect.running { fill: #e0a526; }
rect.cancelled { fill: #999; } rect.skipped { fill: #8a6fc2; }
line.tick { stroke: #ccc; }
"""

# No network and no script, whatever the document holds.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"

_LABEL_W = 100
_PLOT_W = 1000
_LANE_H = 20
_AXIS_H = 24


def _e(value: object) -> str:
    # Control characters (an escape sequence in a title) have no business in a page: shown as such.
    text = "".join("\ufffd" if (ord(c) < 32 and c not in "\t\n") or 127 <= ord(c) < 160 else c for c in str(value))
    return escape(text, quote=True)


def render_html(report: Report) -> str:
    """The report as a self-contained HTML document."""
    s = report.summary
    window = f"since {report.since[:19]}" if report.since else "all history"
    statuses = ", ".join(f"{k} {v}" for k, v in s.by_status.items()) or "none"
    per_day = f" ({s.landed_per_day:.1f} a day)" if s.landed_per_day is not None else ""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        "<title>pipeline-runner report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>pipeline-runner report</h1>",
        f'<p class="muted">As of {_e(report.as_of)} ({_e(window)}).</p>',
    ]
    if not report.initialized:
        parts.append("<p>No pipeline state yet: nothing has been queued or run.</p>")
    parts += [
        '<section id="summary"><h2>Summary</h2><dl>',
        f"<dt>Throughput</dt><dd>{s.landed} task(s) landed in {s.days} day(s){per_day}</dd>",
        f"<dt>Lead time</dt><dd>p50 {duration(s.lead_p50_s)}, p95 {duration(s.lead_p95_s)} "
        "(created to landed)</dd>",
        f"<dt>Tasks</dt><dd>{s.tasks}: {_e(statuses)}</dd>",
        f"<dt>Attempts</dt><dd>{s.attempts} dev attempt(s), {s.failures} failed attempt(s)</dd>",
        f"<dt>Cost</dt><dd>{cents(s.cost_cents)}</dd>",
        f"<dt>Flaky checks</dt><dd>{s.flaky_checks}</dd>",
        "</dl></section>",
        *_tasks(report),
        *_days(report),
        *_phases(report.phases),
        *_flaky(report),
        *_timeline(report.timeline),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _tasks(report: Report) -> list[str]:
    out = [
        '<section id="tasks"><h2>Tasks</h2>',
        '<table id="task-table"><thead><tr><th>id</th><th>title</th><th>status</th>'
        '<th class="n">attempts</th><th class="n">failed</th><th class="n">lead time</th>'
        '<th class="n">cost</th></tr></thead><tbody>',
    ]
    for t in report.tasks:
        out.append(
            f'<tr class="task" data-task="{_e(t.id)}"><td>{_e(t.id)}</td><td class="title">{_e(t.title)}</td>'
            f'<td>{_e(t.status)}</td><td class="n">{t.attempts}</td><td class="n">{t.failures}</td>'
            f'<td class="n">{duration(t.lead_time_s)}</td><td class="n">{cents(t.cost_cents)}</td></tr>'
        )
    out.append("</tbody></table></section>")
    return out


def _days(report: Report) -> list[str]:
    top = max((d.cost_cents for d in report.days), default=0.0)
    out = [
        '<section id="days"><h2>Per day</h2><table><thead><tr><th>day (UTC)</th><th class="n">runs</th>'
        '<th class="n">landed</th><th class="n">cost</th><th></th></tr></thead><tbody>'
    ]
    for d in report.days:
        width = 200 * d.cost_cents / top if top else 0
        out.append(
            f'<tr class="day"><td>{_e(d.day)}</td><td class="n">{d.runs}</td><td class="n">{d.landed}</td>'
            f'<td class="n">{cents(d.cost_cents)}</td>'
            f'<td><span class="bar" style="width:{width:.1f}px"></span></td></tr>'
        )
    out.append("</tbody></table></section>")
    return out


def _phases(phases: list[PhaseRow]) -> list[str]:
    out = ['<section id="phases"><h2>Stages and check phases</h2>']
    for kind, title in (("stage", "Stages"), ("check", "Check phases")):
        out.append(
            f"<h3>{title}</h3><table><thead><tr><th>name</th><th class='n'>passed</th>"
            "<th class='n'>failed</th><th class='n'>reused</th><th class='n'>failure rate</th>"
            "<th class='n'>p50</th><th class='n'>p95</th></tr></thead><tbody>"
        )
        for p in (p for p in phases if p.kind == kind):
            out.append(
                f'<tr class="phase" data-kind="{kind}"><td>{_e(p.name)}</td><td class="n">{p.passed}</td>'
                f'<td class="n">{p.failed}</td><td class="n">{p.reused}</td>'
                f'<td class="n">{rate(p.failure_rate)}</td><td class="n">{duration(p.p50_s)}</td>'
                f'<td class="n">{duration(p.p95_s)}</td></tr>'
            )
        out.append("</tbody></table>")
    out.append("</section>")
    return out


def _flaky(report: Report) -> list[str]:
    out = ['<section id="flaky"><h2>Flaky checks</h2>',
           '<p class="muted">A check phase that failed, then passed, on the same tree.</p>']  # fmt: skip
    if not report.flaky:
        return [*out, "<p>None.</p></section>"]
    out.append(
        '<table><thead><tr><th>phase</th><th>tree</th><th class="n">failures</th>'
        '<th class="n">passes</th><th>tasks</th></tr></thead><tbody>'
    )
    for f in report.flaky:
        out.append(
            f'<tr class="flaky"><td>{_e(f.phase)}</td><td><code>{_e(f.tree[:12])}</code></td>'
            f'<td class="n">{f.failures}</td><td class="n">{f.passes}</td><td>{_e(", ".join(f.task_ids))}</td></tr>'
        )
    out.append("</tbody></table></section>")
    return out


def _timeline(timeline: Timeline) -> list[str]:
    out = ['<section id="timeline-section"><h2>Timeline of runs per slot</h2>']
    if not timeline.runs or timeline.start is None:
        return [*out, "<p>No runs.</p></section>"]
    if timeline.total_runs > len(timeline.runs):
        out.append(f'<p class="muted">The last {len(timeline.runs)} of {timeline.total_runs} runs.</p>')
    rows = {lane.name: i for i, lane in enumerate(timeline.lanes)}
    span = timeline.span_s or 1.0
    height = _AXIS_H + _LANE_H * len(timeline.lanes)
    width = _LABEL_W + _PLOT_W + 10
    out.append(
        f'<svg id="timeline" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'role="img" aria-label="runs per slot over time">'
    )
    origin = datetime.fromisoformat(timeline.start)
    for k in range(5):
        x = _LABEL_W + _PLOT_W * k / 4
        # The start as a time, the other ticks as offsets from it: legible for seconds and for weeks.
        label = origin.strftime("%Y-%m-%d %H:%M:%S UTC") if k == 0 else "+" + duration(timeline.span_s * k / 4)
        anchor = "start" if k == 0 else "end" if k == 4 else "middle"
        out.append(
            f'<line class="tick" x1="{x:.1f}" y1="{_AXIS_H - 4}" x2="{x:.1f}" y2="{height}"></line>'
            f'<text x="{x:.1f}" y="12" text-anchor="{anchor}">{_e(label)}</text>'
        )
    for lane in timeline.lanes:
        y = _AXIS_H + _LANE_H * rows[lane.name]
        out.append(
            f'<g class="lane" data-lane="{_e(lane.name)}"><text x="0" y="{y + 14}">{_e(lane.name)}</text></g>'
        )
    for run in timeline.runs:
        x = _LABEL_W + _PLOT_W * run.start_s / span
        w = max(1.0, _PLOT_W * (run.end_s - run.start_s) / span)
        y = _AXIS_H + _LANE_H * rows[run.lane] + 2
        tip = (
            f"{run.task_id} {run.stage} #{run.run_id} {run.status}, {duration(run.end_s - run.start_s)} "
            f"from {run.started_at[:19]}"
        )
        out.append(
            f'<rect class="run {_e(run.status)}" data-task="{_e(run.task_id)}" data-run="{run.run_id}" '
            f'data-lane="{_e(run.lane)}" x="{x:.1f}" y="{y}" width="{w:.1f}" height="{_LANE_H - 4}">'
            f"<title>{_e(tip)}</title></rect>"
        )
    out.append("</svg>")
    out.append(
        '<p class="muted">Each bar is one attempt; a slot is a lane of attempts of one stage that never '
        "overlap. Colour: green passed, red failed, amber running, grey cancelled, violet skipped.</p>"
    )
    out.append("</section>")
    return out


def write_html(report: Report, path: Path) -> None:
    """Write the HTML report to ``path`` whole or not at all (a reader never sees half a file).

    A symlink is followed, and its target replaced, never the link itself; a path that is no
    regular file (/dev/stdout, a pipe, a terminal) is written through as a shell's ``>`` would:
    replacing it would swap a device for a file (and, as root, /dev/stdout for everyone)."""
    text = render_html(report)
    target = Path(os.path.realpath(path))
    if target.is_dir():
        raise PipelineError(f"Cannot write the report to {path}: it is a directory.")
    if target.exists() and not target.is_file():
        try:
            with open(target, "w", encoding="utf-8") as stream:
                stream.write(text)
        except OSError as exc:
            raise PipelineError(f"Cannot write the report to {path}: {exc.strerror or exc}") from None
        return
    folder = target.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=folder)
    except OSError as exc:
        raise PipelineError(f"Cannot write the report to {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        # mkstemp makes the file private; a report is for sharing, like any file the user writes.
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise PipelineError(f"Cannot write the report to {path}: {exc.strerror or exc}") from None
