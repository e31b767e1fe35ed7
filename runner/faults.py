"""Faults that are nobody's task's: a stale lock, a missing tool, a full disk, a dead host.

They pause the work they block (never charged to a task, never redone every cycle) and are kept in
a small file under the root so that `status`, run from another process, can name them.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path


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
