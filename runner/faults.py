"""Faults that are nobody's task's: a stale lock, a missing tool, a full disk, a dead host.

They pause the work they block (never charged to a task, never redone every cycle) and are kept in
a small file under the root so that `status`, run from another process, can name them.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from runner.logs import logger


@dataclass(frozen=True)
class Fault:
    """What is paused, why, since when, how often it recurred, and when it is tried again."""

    area: str  # "dev", "verify" or "integrate"
    message: str
    since: float
    count: int
    retry_at: float
    data: dict[str, str] = field(default_factory=dict)  # what clearing it needs (a path, a sha)


def read_faults(path: Path) -> list[Fault]:
    """The faults recorded at ``path`` (none when the file is missing or unreadable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [Fault(**item) for item in data]
    except (OSError, ValueError, TypeError):
        return []


def write_faults(path: Path, faults: list[Fault]) -> None:
    """Replace the recorded faults atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps([asdict(f) for f in faults], indent=1), encoding="utf-8")
    os.replace(tmp, path)


class FaultBoard:
    """The faults in force for one root: recorded, cleared, and kept in its faults file.

    The file is the truth: it is read again at every cycle, so `pipeline-runner resume`, run from
    another process, clears a fault for a daemon too.
    """

    def __init__(self, path: Path, delay: Callable[[int], float], *, writable: bool = True) -> None:
        self.path = path
        self.delay = delay  # seconds to wait after the n-th recurrence (n from 0)
        self.writable = writable
        self.faults: dict[str, Fault] = {}
        # Called with ("paused", fault) when an area becomes paused and ("resumed", the fault that
        # ended) when it resumes, whoever records or clears it, so notifications need no caller.
        self.listeners: list[Callable[[str, Fault], None]] = []
        self.reload()

    def reload(self) -> None:
        """Read the faults file again; a fault another process cleared (`resume`) has resumed."""
        before = self.faults
        self.faults = {f.area: f for f in read_faults(self.path)}
        for area, fault in before.items():
            if area not in self.faults:
                self._tell("resumed", fault)
        for area, fault in self.faults.items():
            if area not in before:
                self._tell("paused", fault)

    def get(self, area: str) -> Fault | None:
        """The fault that pauses ``area``, if any."""
        return self.faults.get(area)

    def __contains__(self, area: str) -> bool:
        return area in self.faults

    def record(
        self, area: str, message: str, data: dict[str, str] | None = None, *, until: float | None = None
    ) -> None:
        """A fault of the machine or the repository (not of any task) pauses ``area``.

        The work is retried after a delay that doubles with each recurrence (or at ``until``, a
        time), so the same failing work is not redone every cycle; `status` shows the fault until
        it clears.
        """
        previous = self.faults.get(area)
        count = previous.count + 1 if previous else 1
        now = time.time()
        retry_at = now + self.delay(count - 1) if until is None else until
        wait = max(0.0, retry_at - now)
        since = previous.since if previous else now
        self.faults[area] = Fault(area, message, since, count, retry_at, data or {})
        logger.error("{} paused (not charged to any task; retrying in {:.0f}s): {}", area, wait, message)
        self._save()
        if previous is None:
            self._tell("paused", self.faults[area])

    def clear(self, area: str) -> None:
        """The work of ``area`` went through: its fault, if any, is over."""
        fault = self.faults.pop(area, None)
        if fault is not None:
            logger.info("{} resumed: the fault has cleared", area)
            self._save()
            self._tell("resumed", fault)

    def retry_at(self, area: str) -> float | None:
        """When ``area`` may be tried again, while it waits out a fault's delay; else None."""
        fault = self.faults.get(area)
        if fault is None or time.time() >= fault.retry_at:
            return None
        return fault.retry_at

    def _tell(self, change: str, fault: Fault) -> None:
        for listener in self.listeners:
            listener(change, fault)

    def _save(self) -> None:
        if self.writable:
            write_faults(self.path, list(self.faults.values()))
