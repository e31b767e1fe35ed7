"""The phases of a verification or integration as `status` and `task show` show them.

Each attempt (a pipeline_runs row without a parent) has a row per phase of the check graph under
it (runner.state.CheckRecord), written as the phase starts and ends. An attempt recorded before
the check graph, or a dev attempt, has none and shows as itself.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from phases.outcomes import NOT_RUN_MARK
from runner.checkcache import describe_reuse
from runner.state import CheckRecord, RunRecord, Runs, RunStatus, parse_iso


class PhaseShown(enum.StrEnum):
    """A phase's state as the reports name it: its row's status, told apart where a person needs it."""

    RUNNING = "running"
    PASSED = "passed"
    CACHED = "cached"  # a pass of the same content was reused; nothing ran
    FAILED = "failed"
    SKIPPED = "skipped"  # a skip code ended its recipes, or none of them applied
    NOT_RUN = "not_run"  # a phase it needs did not pass, or the attempt was already rejected
    CANCELLED = "cancelled"  # the runner stopped while it ran, or it could not start


@dataclass(frozen=True)
class PhaseView:
    """One phase of one attempt, as reported."""

    name: str
    state: PhaseShown
    exit_code: int | None
    duration: float | None  # seconds it ran; for a running phase, so far
    cached_from: int | None  # the phase row whose pass was reused
    cached_at: str | None  # when that pass was made
    log_path: str | None
    error: str | None  # why it failed, did not run or was cancelled
    rerun_of: int | None = None  # on a rerun after a flaky failure: the first run's row of the phase

    @classmethod
    def from_record(cls, record: CheckRecord, source: CheckRecord | None, now: float) -> PhaseView:
        """The view of a phase row; ``source`` is the row its reused pass came from, if any."""
        state = {
            RunStatus.RUNNING: PhaseShown.RUNNING,
            RunStatus.SUCCESS: PhaseShown.PASSED,
            RunStatus.FAILURE: PhaseShown.FAILED,
            RunStatus.SKIPPED: PhaseShown.SKIPPED,
            RunStatus.CANCELLED: PhaseShown.CANCELLED,
        }[record.status]
        duration = record.duration
        # A pass that ran has its own log; a reused one ran nothing (and `pipeline-runner check`'s
        # passes have no row to point to).
        if state is PhaseShown.PASSED and (record.cached_from is not None or record.log_path is None):
            state = PhaseShown.CACHED
        elif state is PhaseShown.CANCELLED and (record.error_summary or "").startswith(NOT_RUN_MARK):
            state = PhaseShown.NOT_RUN
        elif state is PhaseShown.RUNNING:
            duration = max(0.0, now - parse_iso(record.started_at).timestamp())
        return cls(
            name=record.phase, state=state, exit_code=record.exit_code,
            duration=None if duration is None else round(duration, 3), cached_from=record.cached_from,
            cached_at=source.finished_at if source is not None else None, log_path=record.log_path,
            error=record.error_summary, rerun_of=record.rerun_of,
        )  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PhaseView:
        """Inverse of ``to_json`` (the text of `status` is drawn from its JSON document)."""
        return cls(
            name=data["name"], state=PhaseShown(data["status"]), exit_code=data["exit_code"],
            duration=data["duration"], cached_from=data["cached_from"], cached_at=data["cached_at"],
            log_path=data["log_path"], error=data["error"], rerun_of=data.get("rerun_of"),
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        """The keys `status --json` and `task show --json` give for a phase (see README)."""
        return {
            "name": self.name,
            "status": self.state.value,
            "exit_code": self.exit_code,
            "duration": self.duration,
            "cached_from": self.cached_from,
            "cached_at": self.cached_at,
            "log_path": self.log_path,
            "error": self.error,
            "rerun_of": self.rerun_of,
        }

    def describe(self, now: float | None = None) -> str:
        """One line: state, duration, exit code, reuse, and the first line of the reason; a rerun
        after a flaky failure says so."""
        line = self._describe(now)
        return line if self.rerun_of is None else f"{line} [rerun of run {self.rerun_of}]"

    def _describe(self, now: float | None) -> str:
        if self.state is PhaseShown.CACHED:
            return f"{self.name}: passed ({describe_reuse(self.cached_from, self.cached_at, now)})"
        reason = first_line(self.error)
        if self.state is PhaseShown.NOT_RUN:
            return f"{self.name}: {reason}"
        if self.state is PhaseShown.CANCELLED:
            return f"{self.name}: cancelled" + (f": {reason}" if reason else "")
        if self.state is PhaseShown.RUNNING:
            return f"{self.name}: running for {self.duration or 0.0:.1f}s"
        code = f", exit {self.exit_code}" if self.exit_code is not None else ""
        line = f"{self.name}: {self.state.value} in {self.duration or 0.0:.1f}s{code}"
        return f"{line}: {reason}" if reason and self.state is not PhaseShown.PASSED else line


def first_line(text: str | None, limit: int = 200) -> str:
    """The first line of a reason, cut to ``limit`` characters ("" for none)."""
    lines = (text or "").strip().splitlines()
    return lines[0][:limit] if lines else ""


def phase_views(
    runs: Runs, attempts: Sequence[RunRecord], now: float | None = None
) -> dict[int, list[PhaseView]]:
    """The phases of each of ``attempts`` so far, in the order they started (none for a dev
    attempt, or one recorded before the check graph)."""
    now = time.time() if now is None else now
    rows = runs.checks([a.id for a in attempts])
    reused = {r.cached_from for records in rows.values() for r in records if r.cached_from is not None}
    sources = runs.checks_by_id(sorted(reused))
    return {
        parent: [
            PhaseView.from_record(r, sources.get(r.cached_from) if r.cached_from is not None else None, now)
            for r in records
        ]
        for parent, records in rows.items()
    }


def phase_lines(phases: Sequence[PhaseView], indent: str = "      ", now: float | None = None) -> list[str]:
    """The text lines of an attempt's phases, nested under its own line; under a failure, the
    last line of its output (a test runner's tally, say), which its first line only announces."""
    lines = []
    for phase in phases:
        lines.append(f"{indent}{phase.describe(now)}")
        output = (phase.error or "").strip().splitlines()[1:]
        if phase.state is PhaseShown.FAILED and output:
            lines.append(f"{indent}    {first_line(output[-1])}")
    return lines


def attempt_json(record: RunRecord, phases: Sequence[PhaseView]) -> dict[str, Any]:
    """An attempt with its phases, as `task show --json` gives it."""
    data = {k: (str(v) if isinstance(v, enum.Enum) else v) for k, v in vars(record).items()}
    data["phases"] = [p.to_json() for p in phases]
    return data
