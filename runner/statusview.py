"""How the status document is shown to a person: plain text, or with ``rich`` on a terminal.

Both forms are drawn from the `status --json` document alone, so text never shows what a script
cannot read. ``rich`` is imported only when a terminal view is drawn: `status` piped into a file
or a script pays nothing for it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TextIO

from runner.checkoutcomes import FlakyPhase
from runner.phaseview import PhaseView, first_line, phase_lines
from runner.tasklist import first_line as one_line
from runner.tasklist import printable

if TYPE_CHECKING:
    from rich.console import RenderableType

# Queued tasks listed in text, the most urgent first; `--json` lists every one.
QUEUE_SHOWN = 40
COUNT_LABELS = {"open": "Open", "in_progress": "In progress", "verified": "Verified",
                "done": "Done", "needs_help": "Needs help", "cancelled": "Cancelled"}  # fmt: skip


def dollars(cents: float) -> str:
    """A cost in cents as dollars with cents: ``$1.23``."""
    return f"${cents / 100:,.2f}"


def use_rich(stream: TextIO, *, no_color: bool, env: Mapping[str, str]) -> bool:
    """Whether to draw with rich: only on a terminal, and never when asked for no colour
    (``--no-color``, or ``NO_COLOR`` set to anything but empty, as no-color.org says)."""
    if no_color or env.get("NO_COLOR", ""):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream
        return False


def elapsed(seconds: float) -> str:
    """A duration as a person reads it: ``45s``, ``12m05s``, ``3h02m``."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def render_plain(doc: dict[str, Any], now: float | None = None) -> str:
    """The status document as plain text: no escape sequence, whatever the tasks and logs hold."""
    now = time.time() if now is None else now
    if not doc["initialized"]:
        return (
            f"No pipeline state at {doc['root']} yet: nothing has been queued or run.\n"
            "Add a task with `pipeline-runner task add TITLE` or import some with "
            "`pipeline-runner task import FILE`, then `pipeline-runner run`."
        )
    lines = [f"Pipeline status (root={doc['root']}, base={doc['base']})", "", "Tasks:"]
    lines += [f"  {label + ':':<13}{doc.get(key, 0)}" for key, label in COUNT_LABELS.items()]
    lines += ["", f"Active dev runs: {doc['active_dev_runs']}"]
    if doc["active_runs"]:
        lines.append("Active runs:")
    for run in doc["active_runs"]:
        lines.append(
            f"  {run['task_id']}  {run['phase']}  patchset {run['patchset']}  "
            f"for {elapsed(run.get('elapsed', 0.0))} (since {run['started_at'][:19]})  "
            f"cost so far {dollars(run.get('task_cost_cents', run.get('cost_cents', 0.0)))}"
        )
        if run.get("last_line"):
            lines.append(f"      > {run['last_line']}")
        lines += phase_lines([PhaseView.from_json(p) for p in run["phases"]], now=now)
        if run.get("log_path"):
            lines.append(f"      log: {run['log_path']}")
    lines.append(f"Cost so far: {dollars(doc['cost_cents'])}")
    lines += fleet_lines(doc.get("runners", []))
    if doc.get("queue"):
        lines += ["", "Queue (not running, and why):"]
        for item in doc["queue"][:QUEUE_SHOWN]:
            lines.append(f"  {item['id']}  {item['status']}  {item['priority']}  {one_line(item['title'])}")
            lines.append(f"      {item['why']}: {item['detail']}")
        lines += _more(doc["queue"])
    if doc["needs_help_tasks"]:
        lines += ["", "Needs help:"]
        for task in doc["needs_help_tasks"]:
            lines.append(f"  {task['id']}  {one_line(task['title'])}  (cost {dollars(task['cost_cents'])})")
            if task["reason"]:
                lines.append(f"      last reason: {first_line(task['reason'], 300)}")
        lines.append("Resume one with `pipeline-runner task set-status ID open`.")
    if doc["faults"]:
        lines += ["", "Paused by faults that are no task's (nothing is charged; retried by itself):"]
        for fault in doc["faults"]:
            lines.append(f"  {fault['area']}: since {fault['since']}, next try {fault['retry_at']}")
            lines.append(f"      {fault['message']}")
    if doc["held_integrations"]:
        lines += ["", "Verified, integration held back:"]
        for task in doc["held_integrations"]:
            lines.append(f"  {task['id']}  {one_line(task['title'])}")
            lines.append(f"      {first_line(task['reason'], 300)}")
    if doc["skipped_verifications"]:
        lines += ["", "Verification skipped (no full check ran):"]
        for task in doc["skipped_verifications"]:
            lines.append(f"  {task['id']}  {task['status']}  {one_line(task['title'])}")
            if task["reason"]:
                lines.append(f"      {first_line(task['reason'], 300)}")
    if doc.get("flaky_checks"):
        lines += ["", "Flaky checks (passed and failed on the same content; a failure after a pass is checked once more):"]
        lines += [f"  {flaky_line(f)}" for f in doc["flaky_checks"]]
    lines += ["", f"Logs: {doc['root']}/logs/tasks/TASK/ (`pipeline-runner logs TASK`); the runner's: "
              f"{doc.get('log_file', '')}"]  # fmt: skip
    return "\n".join(printable(part) for line in lines for part in line.split("\n"))


def fleet_lines(runners: list[dict[str, Any]]) -> list[str]:
    """The runners sharing the state, when there is more than one: where each runs and on what."""
    if len(runners) < 2:
        return []
    lines = ["", f"Runners sharing this state: {len(runners)}"]
    for runner in runners:
        marks = [] if runner["alive"] else [f"lease expired at {runner['expires_at'][:19]}: its work is taken over"]
        if runner["integrating"]:
            marks.append("integrating")
        work = ", ".join(runner["tasks"]) or "idle"
        extra = f"  ({'; '.join(marks)})" if marks else ""
        lines.append(f"  {runner['id']}  {runner['host']}  pid {runner['pid']}  {runner['root']}: {work}{extra}")
    return lines


def flaky_line(flaky: dict[str, Any]) -> str:
    """One line of a flaky phase (runner.flaky.FlakyPhase, as the status document has it)."""
    return FlakyPhase(**flaky).describe()


def _more(queue: list[dict[str, Any]]) -> list[str]:
    """The line saying how many queued tasks the text leaves out, if any."""
    left = len(queue) - QUEUE_SHOWN
    return [f"  ... and {left} more (`status --json` lists them all)"] if left > 0 else []


def render_rich(doc: dict[str, Any], now: float | None = None) -> RenderableType:
    """The status document as rich tables, for a terminal."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    now = time.time() if now is None else now
    if not doc["initialized"]:
        return Text(render_plain(doc, now))

    def text(value: object, style: str = "") -> Text:
        # Always Text, never markup: a title holding "[red]" is shown as written.
        return Text(printable(str(value)), style=style)

    parts: list[RenderableType] = []
    header = Text.assemble(("pipeline-runner ", "bold"), text(f"root {doc['root']}  base {doc['base']}  "))
    header.append_text(text(f"cost so far {dollars(doc['cost_cents'])}", "bold"))
    parts.append(header)
    counts = Text("  ".join(f"{label}: {doc.get(key, 0)}" for key, label in COUNT_LABELS.items()))
    parts.append(counts)

    runs = Table(title="Active runs", title_justify="left", expand=True)
    for column in ("Task", "Phase", "Elapsed", "Cost", "Last output"):
        runs.add_column(column, overflow="fold" if column == "Last output" else "ellipsis",
                        no_wrap=column != "Last output")  # fmt: skip
    for run in doc["active_runs"]:
        detail = Text()
        detail.append_text(text(run.get("last_line") or "(no output yet)", "dim" if not run.get("last_line") else ""))
        for phase in run["phases"]:
            detail.append("\n")
            detail.append_text(text(PhaseView.from_json(phase).describe(now), "cyan"))
        runs.add_row(
            text(run["task_id"], "bold"), text(f"{run['phase']} ps{run['patchset']}"),
            text(elapsed(run.get("elapsed", 0.0))),
            text(dollars(run.get("task_cost_cents", run.get("cost_cents", 0.0)))), detail,
        )  # fmt: skip
    if not doc["active_runs"]:
        runs.add_row(text("-", "dim"), "", "", "", text("nothing running", "dim"))
    parts.append(runs)

    if doc.get("queue"):
        queue = Table(title="Queue", title_justify="left", expand=True)
        for column in ("Task", "Status", "Prio", "Why"):
            queue.add_column(column, overflow="fold")
        styles = {"ready": "green", "backoff": "yellow", "dependency": "", "blocked": "red", "cycle": "red",
                  "limit": "red", "fault": "red", "held": "yellow"}  # fmt: skip
        for item in doc["queue"][:QUEUE_SHOWN]:
            why = text(f"{item['why']}: ", styles.get(item["why"], ""))
            why.append_text(text(item["detail"]))
            queue.add_row(text(f"{item['id']}  {one_line(item['title'])}"), text(item["status"]), text(item["priority"]), why)
        parts.append(queue)
        parts += [text(line, "dim") for line in _more(doc["queue"])]

    attention = Table(title="Needs a person / paused", title_justify="left", expand=True, show_header=False)
    attention.add_column("What", no_wrap=True)
    attention.add_column("Why", overflow="fold")
    for task in doc["needs_help_tasks"]:
        reason = first_line(task["reason"], 300)
        attention.add_row(text(f"{task['id']} needs help", "red"),
                          text(f"{task['title']}: {reason}" if reason else task["title"]))  # fmt: skip
    for fault in doc["faults"]:
        attention.add_row(text(f"{fault['area']} paused", "red"),
                          text(f"{first_line(fault['message'], 300)} (next try {fault['retry_at']})"))  # fmt: skip
    for task in doc["held_integrations"]:
        attention.add_row(text(f"{task['id']} held", "yellow"), text(first_line(task["reason"], 300)))
    for task in doc["skipped_verifications"]:
        attention.add_row(text(f"{task['id']} unchecked", "yellow"), text(first_line(task["reason"], 300)))
    for flaky in doc.get("flaky_checks", []):
        attention.add_row(text(f"{flaky['phase']} flaky", "yellow"), text(flaky_line(flaky)))
    if attention.row_count:
        parts.append(attention)
    parts.append(text(f"Logs: {doc['root']}/logs/tasks/TASK/ (pipeline-runner logs TASK)", "dim"))
    return Group(*parts)
