"""Runners sharing one state: leases, their renewal, the takeover of a dead runner's work, fencing.

Each runner process joins the fleet under an id (a row of ``runners``: host, root, pid, expiry)
and renews its lease from a thread of its own while it lives. A runner whose lease expired (its
host lost power, everything was SIGKILLed) is taken over by any other runner: its running rows are
cancelled (a cancelled attempt is never charged to the task) and its tasks in progress go back to
open, to be started again wherever a slot is free. Its id is then spent: every write transaction of
a runner first checks that its own id was not taken over (``Database.fence``), so a runner that
comes back late (a frozen process, a network partition) writes nothing over newer state; it stops
with a clear error and starts again under a new id.

The same (host, root) keeps its id across restarts while its lease was not taken over, so that
`run --once` from cron harvests what the last invocation started. Named leases (the integrator's)
are held by one runner at a time and end with the runner's own lease.

Times are the runners' clocks (UTC, ISO strings that sort in time order): hosts sharing a state
must keep their clocks in step (NTP), to well within the lease's length.
"""

from __future__ import annotations

import enum
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from runner.errors import StateError
from runner.logs import logger
from runner.state import Database, RunRecord, now_iso

T = TypeVar("T")

# The integration lease: one runner at a time moves base.
INTEGRATOR = "integrator"
# Renewals per lease length: a runner must miss this many in a row before it is taken over.
RENEWALS_PER_LEASE = 3


class LeaseLost(StateError):
    """This runner's lease was taken over by another runner: it may write nothing more."""


class Place(enum.StrEnum):
    """How a runner came by its id when it joined."""

    NEW = "new"  # first start on this host and root, or the last id there was taken over
    RESUMED = "resumed"  # the id the last runner on this host and root held


@dataclass(frozen=True)
class Member:
    """One runner of the fleet, as its row says."""

    id: int
    host: str
    root: str
    pid: int
    renewed_at: str
    expires_at: str
    taken_at: str | None
    taken_by: int | None

    @classmethod
    def from_row(cls, row: Any) -> Member:
        """Build from a ``runners`` row."""
        return cls(*(row[name] for name in cls.__dataclass_fields__))


@dataclass(frozen=True)
class Takeover:
    """What taking over a dead runner changed."""

    member: Member
    cancelled_runs: list[int]
    reopened: list[str]


def share_of_queue(queue: list[T], rank: int, share: int) -> list[T]:
    """The queue (in the order tasks should start) as the runner of place ``rank`` among several
    takes it: from its own share onwards (``share`` tasks each, in place order), then the head.
    Runners that read the queue at the same moment thus claim different tasks instead of racing
    for the same first ones; a task waits at most until the runners ahead of it have a free slot."""
    start = rank * share
    if start <= 0 or start >= len(queue):
        return queue
    return queue[start:] + queue[:start]


def later(seconds: float) -> str:
    """The ISO time ``seconds`` from now (UTC), as now_iso writes it."""
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(timespec="microseconds")


class Fleet:
    """This runner's membership: its id, its lease and the named leases it holds."""

    def __init__(self, db: Database, *, root: Path, lease_seconds: float, host: str | None = None) -> None:
        self.db = db
        self.host = host or socket.gethostname()
        self.root = str(root)
        self.lease_seconds = lease_seconds
        self.id: int | None = None
        self.place: Place | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self.lost: LeaseLost | None = None  # what the renewal found: this runner was taken over

    # -- joining and leaving -------------------------------------------------------------------

    def join(self) -> Place:
        """Take this runner's id: the one its host and root held while it was not taken over, or a
        new one. Attempts running from before the fleet existed (no owner) become this runner's."""
        with self.db.write() as conn:
            row = conn.execute(
                "SELECT id FROM runners WHERE host = ? AND root = ? AND taken_at IS NULL ORDER BY id DESC LIMIT 1",
                (self.host, self.root),
            ).fetchone()
            now = now_iso()
            if row is not None:
                self.id, self.place = int(row[0]), Place.RESUMED
                conn.execute(
                    "UPDATE runners SET pid = ?, renewed_at = ?, expires_at = ? WHERE id = ?",
                    (os.getpid(), now, later(self.lease_seconds), self.id),
                )
            else:
                self.id = int(conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM runners").fetchone()[0])
                self.place = Place.NEW
                conn.execute(
                    "INSERT INTO runners (id, host, root, pid, started_at, renewed_at, expires_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (self.id, self.host, self.root, os.getpid(), now, now, later(self.lease_seconds)),
                )
            # Only the running ones: finished rows keep what they hold.
            conn.execute("UPDATE pipeline_runs SET owner = ? WHERE owner IS NULL AND status = 'running'", (self.id,))
        self.attach(self.db)
        return self.place

    def attach(self, db: Database) -> None:
        """Fence every write transaction of ``db`` (another connection of this runner's)."""
        db.fence = self.fence

    def check(self) -> None:
        """Raise LeaseLost when the renewal found this runner's lease taken over."""
        if self.lost is not None:
            raise self.lost

    def fence(self, conn: Any) -> None:
        """Refuse a write transaction of a runner whose lease another took over (its first statement)."""
        if self.id is None:
            return
        lost = self._lost(conn.execute("SELECT taken_at, taken_by FROM runners WHERE id = ?", (self.id,)).fetchone())
        if lost is not None:
            raise lost

    def explain(self, error: StateError, connect: Callable[[], Database]) -> StateError:
        """What to report for ``error``, a failure of this runner's state: that its lease was taken
        over, when it was, else ``error`` itself. A runner frozen inside a transaction past its
        lease finds its connection closed by the server's idle timeout, which says only that."""
        if isinstance(error, LeaseLost) or self.id is None:
            return error
        if self.lost is not None:
            return self.lost
        try:
            db = connect()
        except StateError:
            return error  # the database itself is away: that is what the runner says
        try:
            lost = self._lost(next(iter(db.query("SELECT taken_at, taken_by FROM runners WHERE id = ?", (self.id,))), None))
        except StateError:
            return error
        finally:
            db.close()
        return lost or error

    def _lost(self, row: Any) -> LeaseLost | None:
        """The error of a runner whose ``runners`` row (taken_at, taken_by) says it was taken over."""
        if row is not None and row[0] is None:
            return None
        by = f"runner {row[1]}" if row is not None and row[1] is not None else "another runner"
        when = f" at {row[0]}" if row is not None and row[0] else ""
        return LeaseLost(
            f"This runner's lease (runner {self.id} on {self.host}, root {self.root}) was taken over by "
            f"{by}{when}: it had not renewed it for over {self.lease_seconds:g} s (key 'lease'), so its work "
            "was handed to other runners. Nothing more is written by it; start it again to rejoin."
        )

    def start_renewing(self, connect: Callable[[], Database]) -> None:
        """Renew the lease (and the named leases held) from a thread with its own connection,
        ``RENEWALS_PER_LEASE`` times per lease length, until ``leave``."""
        if self.id is None or self._renewer is not None:
            return
        self._renewer = threading.Thread(target=self._renew_loop, args=(connect,), name="lease", daemon=True)
        self._renewer.start()

    def _renew_loop(self, connect: Callable[[], Database]) -> None:
        db: Database | None = None
        try:
            while not self._stop.wait(self.lease_seconds / RENEWALS_PER_LEASE):
                try:
                    if db is None:
                        db = connect()
                        self.attach(db)
                    self.renew(db)
                except LeaseLost as exc:
                    # Said by the loop's next cycle: a runner with nothing to write would not learn it.
                    self.lost = exc
                    return
                except Exception as exc:  # a database that cannot be reached now: try at the next turn
                    logger.warning("could not renew this runner's lease: {}", exc)
                    if db is not None:
                        db.close()
                        db = None
        finally:
            if db is not None:
                db.close()

    def renew(self, db: Database | None = None) -> None:
        """Push this runner's lease, and the named leases it holds, a lease length ahead."""
        db = db or self.db
        until = later(self.lease_seconds)
        with db.write() as conn:
            conn.execute("UPDATE runners SET renewed_at = ?, expires_at = ? WHERE id = ?", (now_iso(), until, self.id))
            conn.execute("UPDATE leases SET expires_at = ? WHERE holder = ?", (until, self.id))

    def leave(self) -> None:
        """Stop renewing and give back the named leases (another runner may integrate at once).
        The runner's own lease stays: agents it started run on, and its next start resumes them."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=10)
            self._renewer = None
        if self.id is None:
            return
        try:
            with self.db.write() as conn:
                conn.execute("DELETE FROM leases WHERE holder = ?", (self.id,))
        except StateError as exc:
            logger.debug("leases not given back: {}", exc)

    # -- named leases ---------------------------------------------------------------------------

    def hold(self, name: str) -> bool:
        """Whether this runner holds the lease ``name`` now, taking it when it is free or expired.
        Costs a write only when it changes hands."""
        row = self.db.query("SELECT holder, expires_at FROM leases WHERE name = ?", (name,))
        now = now_iso()
        if row and row[0][0] == self.id and row[0][1] > now:
            return True
        if row and row[0][1] > now:
            return False
        with self.db.write() as conn:
            current = conn.execute("SELECT holder, expires_at FROM leases WHERE name = ?", (name,)).fetchone()
            if current is not None and current[0] != self.id and current[1] > now_iso():
                return False
            if current is None:
                conn.execute(
                    "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?)",
                    (name, self.id, later(self.lease_seconds)),
                )
            else:
                conn.execute(
                    "UPDATE leases SET holder = ?, expires_at = ? WHERE name = ?",
                    (self.id, later(self.lease_seconds), name),
                )
        if current is None or current[0] != self.id:
            logger.info("took the {} lease (runner {} on {})", name, self.id, self.host)
        return True

    def orphans(self) -> list[RunRecord]:
        """Agent runs that earlier ids of this host and root had going when another runner took
        them over (a process frozen past its lease, a host cut off and back): their agents may
        still run here, on tasks that now belong to others. A run whose pid was never recorded
        (frozen between starting the agent and committing its row) is one too: its agent may
        have started, and its workspace may hold what that agent did since."""
        rows = self.db.query(
            "SELECT r.* FROM runners AS m JOIN pipeline_runs AS r ON r.owner = m.id WHERE m.host = ? AND m.root = ? "
            "AND m.taken_at IS NOT NULL AND r.status = 'cancelled' AND r.finished_at = m.taken_at "
            "AND r.phase = 'dev' AND r.parent_id IS NULL ORDER BY r.id",
            (self.host, self.root),
        )
        return [RunRecord.from_row(r) for r in rows]

    # -- the others ----------------------------------------------------------------------------

    def rank(self) -> tuple[int, int]:
        """This runner's place among the runners whose leases hold (by id), and how many they are."""
        live = [int(r[0]) for r in self.db.query(
            "SELECT id FROM runners WHERE taken_at IS NULL AND expires_at > ? ORDER BY id", (now_iso(),)
        )]  # fmt: skip
        if self.id not in live:
            return 0, max(1, len(live))
        return live.index(self.id), len(live)

    def expired(self) -> list[Member]:
        """The other runners whose leases ran out without being taken over."""
        rows = self.db.query(
            "SELECT * FROM runners WHERE taken_at IS NULL AND expires_at < ? AND id != ? ORDER BY id",
            (now_iso(), self.id),
        )
        return [Member.from_row(r) for r in rows]

    def take_over(self, member: Member, reopen: Callable[[str], None]) -> Takeover | None:
        """Take a dead runner's work over, in one transaction: its id is spent, its running rows
        are cancelled (uncharged) and each of its tasks in progress is handed to ``reopen`` (the
        task store's move back to open, with its note, in the same transaction). Its integrations are
        left cancelled with their candidates recorded: whoever holds the integration lease looks
        whether they landed (runner.recovery.finish_landings). None when it renewed meanwhile."""
        reason = (
            f"runner {member.id} on {member.host} stopped renewing its lease (last at {member.renewed_at}); "
            f"its work was taken over by runner {self.id} on {self.host}"
        )
        with self.db.write() as conn:
            current = conn.execute("SELECT expires_at, taken_at FROM runners WHERE id = ?", (member.id,)).fetchone()
            now = now_iso()
            if current is None or current[1] is not None or current[0] >= now:
                return None
            conn.execute("UPDATE runners SET taken_at = ?, taken_by = ? WHERE id = ?", (now, self.id, member.id))
            conn.execute("DELETE FROM leases WHERE holder = ?", (member.id,))
            rows = conn.execute(
                "SELECT id, task_id, parent_id FROM pipeline_runs WHERE owner = ? AND status = 'running'", (member.id,)
            ).fetchall()
            conn.execute(
                "UPDATE pipeline_runs SET status = 'cancelled', finished_at = ?, error_summary = ? "
                "WHERE owner = ? AND status = 'running'",
                (now, reason, member.id),
            )
            # A task in progress is the runner's whose attempt it was last: open again, uncharged.
            tasks = [
                str(r[0])
                for r in conn.execute(
                    "SELECT t.id FROM tasks AS t WHERE t.status = 'in_progress' AND (SELECT r.owner FROM "
                    "pipeline_runs AS r WHERE r.task_id = t.id AND r.parent_id IS NULL ORDER BY r.id DESC LIMIT 1) = ?",
                    (member.id,),
                ).fetchall()
            ]
            for task_id in tasks:
                reopen(task_id)
        logger.warning("{}", reason)
        return Takeover(member, [int(r[0]) for r in rows if r[2] is None], tasks)


def fleet_view(db: Database) -> list[dict[str, Any]]:
    """The runners sharing the state that were not taken over, for `status`: where each runs, its
    lease, whether it integrates and which tasks it works on now (oldest runner first)."""
    now = now_iso()
    leases = db.query("SELECT holder FROM leases WHERE name = ? AND expires_at > ?", (INTEGRATOR, now))
    integrator = leases[0][0] if leases else None
    working: dict[int, list[str]] = {}
    for row in db.query(
        "SELECT owner, task_id FROM pipeline_runs WHERE status = 'running' AND parent_id IS NULL ORDER BY id"
    ):
        if row[0] is not None:
            working.setdefault(int(row[0]), []).append(str(row[1]))
    return [
        {
            "id": m.id, "host": m.host, "root": m.root, "pid": m.pid, "renewed_at": m.renewed_at,
            "expires_at": m.expires_at, "alive": m.expires_at > now, "integrating": m.id == integrator,
            "tasks": working.get(m.id, []),
        }
        for m in (Member.from_row(r) for r in db.query("SELECT * FROM runners WHERE taken_at IS NULL ORDER BY id"))
    ]
