"""Passes of the check graph, kept by content: the Make rule "up to date" over git trees.

A phase's pass is keyed by the tree it checked, the phase's name, its recipes after substitution,
its environment and where it runs (``on``). The same key later means the same check on the same
files, so the pass is reused instead of run. Only passes are kept: a failure is always run again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from runner.state import Database, now_iso, parse_iso


def cache_key(
    tree: str, phase: str, argvs: Sequence[Sequence[str]], env: Mapping[str, str], on: Sequence[str]
) -> str:
    """The content key of one phase's check of ``tree``: equal keys mean the same check of the same files."""
    import hashlib  # here: `status` reads this module, and hashlib (OpenSSL) is a noticeable part of its start-up

    material = json.dumps(
        {"tree": tree, "phase": phase, "recipes": [list(a) for a in argvs], "env": dict(sorted(env.items())),
         "on": sorted(on)},
        sort_keys=True,
    )  # fmt: skip
    return hashlib.sha256(material.encode()).hexdigest()


# The ``cached_from`` of a phase row that reused a pass `pipeline-runner check` recorded: such a
# pass has no row of its own, and no row has id 0, so the row still says it was reused, not run.
FROM_CHECK = 0


@dataclass(frozen=True)
class CachedPass:
    """A pass that can stand in for running the phase again."""

    run_id: int | None  # the phase row that passed; None for a pass by `pipeline-runner check`
    duration: float
    exit_code: int
    passed_at: str

    def describe(self, now: float | None = None) -> str:
        """"cached from run N, 3 min ago", as every report shows a reuse."""
        return describe_reuse(self.run_id, self.passed_at, now)

    @property
    def source_row(self) -> int:
        """What a phase row reusing this pass records as its ``cached_from``."""
        return self.run_id if self.run_id is not None else FROM_CHECK


def describe_reuse(run_id: int | None, passed_at: str | None, now: float | None = None) -> str:
    """"cached from run N, 3 min ago": the pass of phase row ``run_id`` (None: a pass by
    `pipeline-runner check`) made at ``passed_at``, its age left out when that is not known."""
    source = f"run {run_id}" if run_id not in (None, FROM_CHECK) else "`pipeline-runner check`"
    if passed_at is None:
        return f"cached from {source}"
    ago = max(0.0, (time.time() if now is None else now) - parse_iso(passed_at).timestamp())
    return f"cached from {source}, {_ago(ago)}"


def _ago(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} days ago"


class CheckCache:
    """The ``check_results`` table of the state database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def lookup(self, key: str) -> CachedPass | None:
        """The pass recorded under ``key``, if any."""
        rows = self.db.query(
            "SELECT run_id, duration, exit_code, passed_at FROM check_results WHERE key = ?", (key,)
        )
        if not rows:
            return None
        run_id, duration, exit_code, passed_at = rows[0]
        return CachedPass(run_id, float(duration), int(exit_code), str(passed_at))

    def store(self, key: str, *, phase: str, tree: str, run_id: int | None, duration: float) -> None:
        """Record a pass under ``key`` (the newest pass of a key wins)."""
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO check_results (key, phase, tree, run_id, duration, exit_code, passed_at) "
                "VALUES (?, ?, ?, ?, ?, 0, ?) ON CONFLICT (key) DO UPDATE SET phase = excluded.phase, "
                "tree = excluded.tree, run_id = excluded.run_id, duration = excluded.duration, "
                "exit_code = excluded.exit_code, passed_at = excluded.passed_at",
                (key, phase, tree, run_id, duration, now_iso()),
            )
