"""`state migrate --to postgresql://...`: copy a SQLite state into PostgreSQL, ids and all.

Both are opened (and so brought to the same schema version) by runner.state; every table of the
SQLite file is copied row by row, in one transaction of the target, with its row ids (SQLite's
rowid as ``seq`` where the code orders by it); the target's identity sequences are then set past
the highest id copied (or, for an AUTOINCREMENT table, past the highest SQLite ever gave), so that
no id is handed out twice. A target that already holds exactly this state is left as it is (the
command is idempotent); one that holds anything else is refused.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.errors import StateError
from runner.sqldialect import is_postgresql_url
from runner.state import Database, Row, open_db

# Kept by triggers from pipeline_runs: copied last, over what the triggers counted meanwhile, and
# not a sign that a target holds a state (a new one has its row, at zero).
_TOTALS = "run_totals"
# The identity column standing for SQLite's rowid (where the code orders by it) on PostgreSQL.
_SEQ = "seq"


class Outcome(enum.Enum):
    """What `state migrate` did."""

    COPIED = "copied"
    ALREADY_THERE = "already there"


@dataclass
class MigrateResult:
    """The outcome and the rows of each table (copied, or found there already)."""

    outcome: Outcome
    rows: dict[str, int] = field(default_factory=dict)


def migrate_state(source: Path, target_url: str) -> MigrateResult:
    """Copy the SQLite state at ``source`` into the PostgreSQL database at ``target_url``."""
    if not is_postgresql_url(target_url):
        raise StateError(f"--to {target_url!r} is not a PostgreSQL URL: write postgresql://USER@HOST[:PORT]/DATABASE.")
    if not source.exists():
        raise StateError(f"No pipeline state at {source}: there is nothing to migrate.")
    src = open_db(source)
    try:
        dst = open_db(target_url)
        try:
            return _migrate(src, dst)
        finally:
            dst.close()
    finally:
        src.close()


def _migrate(src: Database, dst: Database) -> MigrateResult:
    tables = [
        str(r[0]) for r in src.query(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
    ]  # fmt: skip
    # Parents before the rows that refer to them; the totals after the rows their triggers count.
    tables.sort(key=lambda name: (name != "tasks", name == _TOTALS, name))
    # Both were brought to the same schema version by open_db: the same tables and columns.
    columns = {table: [str(r[1]) for r in src.query(f"PRAGMA table_info({table})")] for table in tables}
    seq = _seq_tables(dst)
    # A snapshot of the source: a runner may be writing the SQLite file meanwhile.
    with src.snapshot(), dst.write() as conn:
            counts = {t: int(dst.scalar(f"SELECT COUNT(*) FROM {t}")) for t in tables}
            if any(n for t, n in counts.items() if t != _TOTALS):
                return _compare(src, dst, tables, columns, seq)
            copied: dict[str, int] = {}
            # The totals' triggers would update their one row once per attempt copied, each update
            # a new version of that row in this one transaction: quadratic (a store of 100,000
            # tasks did not finish in 10 minutes). Off for the copy, which sets the totals itself;
            # the change is part of this transaction, so no other writer ever sees them off.
            conn.execute("ALTER TABLE pipeline_runs DISABLE TRIGGER USER")
            for table in tables:
                if table == _TOTALS:
                    conn.execute(f"DELETE FROM {_TOTALS}")
                copied[table] = _copy(src, dst, table, columns[table], table in seq)
            conn.execute("ALTER TABLE pipeline_runs ENABLE TRIGGER USER")
            _set_sequences(src, dst)
    return MigrateResult(Outcome.COPIED, copied)


def _seq_tables(dst: Database) -> set[str]:
    """The tables whose rows the code orders by SQLite's rowid: ``seq`` on PostgreSQL."""
    from runner.pgstate import PgConnection

    assert isinstance(dst.conn, PgConnection)
    return {table for table, column in dst.conn.identities.items() if column == _SEQ}


def _copied_columns(columns: list[str], with_seq: bool) -> list[str]:
    """The target's names for the columns read (rowid first, as seq, where it stands for it)."""
    return ([_SEQ] if with_seq else []) + columns


def _select(table: str, columns: list[str], with_seq: bool) -> str:
    return f"SELECT {', '.join((['rowid'] if with_seq else []) + columns)} FROM {table}"


def _copy(src: Database, dst: Database, table: str, columns: list[str], with_seq: bool) -> int:
    """Copy every row of ``table``; how many. COPY, not an INSERT per row: a store of 100,000 tasks
    has half a million rows of history."""
    from runner.pgstate import PgConnection

    conn = dst.conn
    assert isinstance(conn, PgConnection)
    count = 0
    names = ", ".join(_copied_columns(columns, with_seq))
    with conn.raw.cursor() as cur, cur.copy(f"COPY {table} ({names}) FROM STDIN".encode()) as copy:
        for row in src.conn.execute(_select(table, columns, with_seq)):
            copy.write_row(tuple(row))
            count += 1
    return count


def _set_sequences(src: Database, dst: Database) -> None:
    """Each identity past the highest value copied, and past the highest id SQLite handed out."""
    handed_out: dict[str, int] = {}
    if src.scalar("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'"):
        handed_out = {str(r[0]): int(r[1]) for r in src.query("SELECT name, seq FROM sqlite_sequence")}
    from runner.pgstate import PgConnection

    assert isinstance(dst.conn, PgConnection)
    for table, column in dst.conn.identities.items():
        highest = max(int(dst.scalar(f"SELECT COALESCE(MAX({column}), 0) FROM {table}")),
                      handed_out.get(table, 0) if column == "id" else 0)  # fmt: skip
        if highest > 0:
            dst.scalar(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), ?, true)", (highest,))


def _compare(
    src: Database, dst: Database, tables: list[str], columns: dict[str, list[str]], seq: set[str]
) -> MigrateResult:
    """A target that holds rows already: this same state (nothing to do), else a refusal."""
    counts: dict[str, int] = {}
    for table in tables:
        names = _copied_columns(columns[table], table in seq)
        # Sorted here, not by ORDER BY: the engines may collate text differently.
        mine = _normal(src.query(_select(table, columns[table], table in seq)))
        theirs = _normal(dst.query(f"SELECT {', '.join(names)} FROM {table}"))
        if mine != theirs:
            raise StateError(
                f"{dst.path} already holds a pipeline state, not this one (table {table} has {len(theirs)} "
                f"rows there, {len(mine)} here, and they differ). Nothing was copied; give an empty database."
            )
        counts[table] = len(mine)
    return MigrateResult(Outcome.ALREADY_THERE, counts)


def _normal(rows: Iterable[Row]) -> list[tuple[Any, ...]]:
    """Rows as sorted tuples whose numbers compare as numbers (an int and a float of one value)."""
    return sorted(
        (tuple(float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v for v in r) for r in rows),
        key=repr,
    )


def render_result(result: MigrateResult, target_url: str) -> str:
    """What `state migrate` prints."""
    from runner.pgstate import safe_url

    shown = ", ".join(f"{n} {t}" for t, n in result.rows.items() if t != _TOTALS)
    if result.outcome is Outcome.ALREADY_THERE:
        return f"{safe_url(target_url)} already holds this state ({shown}); nothing was copied."
    return (
        f"Copied the state into {safe_url(target_url)}: {shown}.\n"
        "To use it, set the key state.url in pipeline.yaml to that URL (state: {url: ...})."
    )
