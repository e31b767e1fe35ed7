"""How often each check passed and failed, by its content key (the ``check_outcomes`` table).

Kept apart from the rerun itself (runner.flaky) so that `status`, which lists the flaky phases,
does not import the check graph.
"""

from __future__ import annotations

from dataclasses import dataclass

from runner.state import Database, now_iso

# Phases listed by `status`, most recent first: a few lines.
SHOWN = 5


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
                f"ON CONFLICT(key) DO UPDATE SET {column} = check_outcomes.{column} + 1, last_at = excluded.last_at",
                (key, phase, now_iso()),
            )

    def passed_before(self, key: str) -> bool:
        """Whether the check ``key`` has passed at least once: counted here, or kept as a reusable
        pass (``check_results``, which `pipeline-runner check` also fills)."""
        return bool(
            self.db.query("SELECT 1 FROM check_outcomes WHERE key = ? AND passes > 0", (key,))
            or self.db.query("SELECT 1 FROM check_results WHERE key = ?", (key,))
        )

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
            "(SELECT * FROM check_outcomes WHERE passes > 0 AND fails > 0 ORDER BY last_at DESC LIMIT 1000) AS recent "
            "GROUP BY phase ORDER BY MAX(last_at) DESC LIMIT ?",
            (limit,),
        )
        return [FlakyPhase(str(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4]), str(r[5])) for r in rows]
