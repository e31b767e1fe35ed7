"""Flaky checks, told apart from real failures.

Every check that runs is counted by its content key (the tree it checked, the phase, its recipes
after substitution, its environment and ``on``: runner.checkcache.cache_key), passed or failed. A
failure of a check whose very content passed before is flaky evidence: the files and the commands
are the same, so something outside them (time, the network, a race in the tests) decided. Such a
failure is checked once more, on a fresh checkout, before anything is rejected (runner.verifier);
only if the rerun fails too is it the task's. `status` lists the phases that have both passed and
failed on one content, with their counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from runner.state import Database, now_iso

if TYPE_CHECKING:
    from phases.verify import VerifyResult

# Phases listed by `status`, most recent first.
SHOWN = 10


@dataclass(frozen=True)
class FlakyPhase:
    """A phase that both passed and failed on the same content, summed over its contents."""

    phase: str
    passes: int
    fails: int
    reruns: int  # failures checked once more
    cleared: int  # reruns that passed (the task was not charged)
    last_at: str

    def describe(self) -> str:
        """One line for `status`."""
        return (
            f"{self.phase}: {self.passes} passed, {self.fails} failed on the same content; "
            f"{self.cleared} of {self.reruns} reruns cleared (last {self.last_at[:19].replace('T', ' ')} UTC)"
        )


class CheckOutcomes:
    """The ``check_outcomes`` table of the state database: passes and failures per content key."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def record(self, key: str, phase: str, passed: bool) -> None:
        """Count one run of the check ``key`` of ``phase``."""
        column = "passes" if passed else "fails"
        with self.db.write() as conn:
            conn.execute(
                f"INSERT INTO check_outcomes (key, phase, {column}, last_at) VALUES (?, ?, 1, ?) "
                f"ON CONFLICT(key) DO UPDATE SET {column} = {column} + 1, last_at = excluded.last_at",
                (key, phase, now_iso()),
            )

    def passed_before(self, key: str) -> bool:
        """Whether the check ``key`` has passed at least once."""
        return bool(self.db.query("SELECT 1 FROM check_outcomes WHERE key = ? AND passes > 0", (key,)))

    def rerun(self, key: str, cleared: bool) -> None:
        """Count a rerun of the check ``key`` after a flaky failure, and whether it passed."""
        with self.db.write() as conn:
            conn.execute(
                "UPDATE check_outcomes SET reruns = reruns + 1, cleared = cleared + ? WHERE key = ?",
                (int(cleared), key),
            )

    def flaky(self, limit: int = SHOWN) -> list[FlakyPhase]:
        """The phases that passed and failed on one content, most recently run first."""
        rows = self.db.query(
            "SELECT phase, SUM(passes), SUM(fails), SUM(reruns), SUM(cleared), MAX(last_at) FROM "
            "(SELECT * FROM check_outcomes WHERE passes > 0 AND fails > 0 ORDER BY last_at DESC LIMIT 1000) "
            "GROUP BY phase ORDER BY MAX(last_at) DESC LIMIT ?",
            (limit,),
        )
        return [FlakyPhase(str(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4]), str(r[5])) for r in rows]


def failed_phase(result: VerifyResult) -> str | None:
    """The required phase whose failure rejected ``result``, if one did."""
    # Compared by value: `status` imports this module, and must not import the check graph.
    for outcome in result.phases:
        if outcome.state.value == "failed" and not outcome.optional:
            return outcome.name
    return None
