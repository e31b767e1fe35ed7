"""Receipts: what a landed commit passed, kept on it as a git note under ``refs/notes/pipeline``.

The note opens with lines a person reads in ``git log --notes=pipeline`` and ends with the same
facts as JSON, which ``pipeline-runner receipt --json`` prints back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

MARK = "pipeline-runner receipt"


def phase_entries(outcomes: Sequence[Any]) -> list[dict[str, Any]]:
    """The receipt's entry for each phase outcome (phases.checks.PhaseOutcome)."""
    entries = []
    for o in outcomes:
        entry: dict[str, Any] = {
            "phase": o.name,
            "state": o.state.value,
            "recipes": list(o.recipes),
            "exit_code": o.exit_code,
            "duration": round(o.duration, 3),
            "reused": o.cached is not None,
            "optional": o.optional,
        }
        if o.cached is not None:
            entry["reused_from_run"] = o.cached.run_id
            entry["original_duration"] = round(o.cached.duration, 3)
            entry["passed_at"] = o.cached.passed_at
        if o.row is not None:
            entry["run"] = o.row
        if o.rerun_of is not None:
            entry["rerun_of"] = o.rerun_of  # run once more after a flaky failure of that row
        entries.append(entry)
    return entries


def render(data: Mapping[str, Any]) -> str:
    """The note's text for receipt ``data``."""
    lines = [f"{MARK}: task {data['task']} (patchset {data['patchset']}), landed on {data['base']}"]
    lines.append(f"agent run {data.get('agent_run') or '-'}, cost {float(data.get('cost_cents') or 0) / 100:.2f} USD")
    for stage in data.get("checks", []):
        lines.append(f"{stage['stage']} on tree {stage['tree']}:")
        for p in stage["phases"]:
            reused = (" (reused)" if p["reused"] else "") + (" (rerun)" if p.get("rerun_of") else "")
            code = f", exit {p['exit_code']}" if p["exit_code"] is not None else ""
            lines.append(f"  {p['phase']}: {p['state']}{reused}{code}, {p['duration']:.1f}s: {'; '.join(p['recipes'])}")
        if not stage["phases"]:
            lines.append("  (no phase runs here)")
    return "\n".join(lines) + "\n\n" + json.dumps(data, indent=2, sort_keys=True) + "\n"


def parse(text: str) -> dict[str, Any] | None:
    """The data of a receipt note, or None when the note is not one."""
    if not text.startswith(MARK):
        return None
    start = text.find("\n{")
    if start < 0:
        return None
    try:
        data = json.loads(text[start + 1 :])
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


# A phase row's status as the phase's state, in the words the receipt uses for the phases it ran
# itself (phases.checks.PhaseState), so that both stages of one receipt read alike.
_ROW_STATES = {"success": "passed", "failure": "failed", "skipped": "skipped", "cancelled": "not_run"}


def _row_state(record: Any) -> str:
    if record.cached_from is not None:
        return "cached"
    status = str(record.status)
    if status == "cancelled" and not (record.error_summary or "").startswith("not run"):
        return "fault"
    return _ROW_STATES.get(status, status)


def record_entries(records: Sequence[Any]) -> list[dict[str, Any]]:
    """The receipt's entry for each phase row (runner.state.CheckRecord) of an earlier attempt."""
    entries = []
    for r in records:
        entry: dict[str, Any] = {
            "phase": r.phase,
            "state": _row_state(r),
            "exit_code": r.exit_code,
            "duration": round(r.duration or 0.0, 3),
            "reused": r.cached_from is not None,
            "run": r.id,
            "recipes": [],
        }
        if r.cached_from is not None:
            # None: the pass was recorded by `pipeline-runner check`, which keeps no row.
            entry["reused_from_run"] = r.cached_from or None
        if r.rerun_of is not None:
            entry["rerun_of"] = r.rerun_of  # run once more after a flaky failure of that row
        entries.append(entry)
    return entries
