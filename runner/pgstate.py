"""The state on PostgreSQL: a psycopg 3 connection that answers as the sqlite3 one the code uses.

``PgConnection.execute`` takes the code's SQL (``?`` placeholders) and returns a cursor with
``fetchone``, ``fetchall``, iteration and ``lastrowid``; rows are read by position or by column
name, as sqlite3.Row allows. psycopg is imported here only, and this module only when a state
URL names PostgreSQL: SQLite users and the CLI's start-up never load it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from runner.errors import StateError
from runner.sqldialect import to_pyformat

if TYPE_CHECKING:
    import psycopg

# The key of the transaction-level advisory lock every write transaction takes first (see
# PgConnection.begin_write). Any constant would do; this one spells "pipeline" in hex letters.
WRITE_LOCK_KEY = 0x0919E11E

_INSERT_INTO = re.compile(r"\s*INSERT\s+INTO\s+(\w+)", re.I)


class Row:
    """One result row, by position (``row[0]``), by column name (``row["id"]``) or unpacked."""

    __slots__ = ("_index", "_values")

    def __init__(self, values: Sequence[Any], index: dict[str, int]) -> None:
        self._values = tuple(values)
        self._index = index

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, str):
            return self._values[self._index[key]]
        return self._values[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def keys(self) -> list[str]:
        """The column names, in order."""
        return list(self._index)

    def __repr__(self) -> str:
        return f"Row({self._values!r})"


class PgCursor:
    """The rows of one statement, and the id an INSERT gave its row."""

    def __init__(self, rows: list[Row], lastrowid: int | None, rowcount: int) -> None:
        self._rows = rows
        self._next = 0
        self.lastrowid = lastrowid
        self.rowcount = rowcount

    def fetchone(self) -> Row | None:
        """The next row, or None."""
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    def fetchall(self) -> list[Row]:
        """The rows not fetched yet."""
        rest = self._rows[self._next :]
        self._next = len(self._rows)
        return rest

    def __iter__(self) -> Iterator[Row]:
        return iter(self.fetchall())


class PgConnection:
    """A psycopg connection in autocommit mode (transactions are opened explicitly, as with sqlite3)."""

    def __init__(self, conn: psycopg.Connection[Any], url: str) -> None:
        self.raw = conn
        self.url = url
        # The identity column of each table that has one (at most one a table): an INSERT into
        # such a table returns its value as ``lastrowid``, as SQLite's rowid (id, or tasks' seq).
        self.identities: dict[str, str] = {}

    def refresh_identity_tables(self) -> None:
        """Read which tables have an identity column (after the schema changed)."""
        rows = self._run(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND is_identity = 'YES'",
            None,
        )
        self.identities = {str(r[0]): str(r[1]) for r in rows}

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> PgCursor:
        """Run one statement written for sqlite3 (``?`` placeholders)."""
        lastrowid = None
        match = _INSERT_INTO.match(sql)
        identity = self.identities.get(match.group(1)) if match is not None else None
        wants_id = identity is not None and "RETURNING" not in sql.upper()
        if wants_id:
            sql = f"{sql.rstrip().rstrip(';')} RETURNING {identity}"
        with self._errors():
            cur = self.raw.execute((to_pyformat(sql) if params else sql).encode(), params or None)
            rows = _rows(cur)
            if wants_id and rows:
                lastrowid = int(rows[0][0])
            return PgCursor(rows, lastrowid, cur.rowcount)

    def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> None:
        """Run one statement for each parameter tuple."""
        params = list(seq)
        if not params:
            return
        with self._errors(), self.raw.cursor() as cur:
            cur.executemany(to_pyformat(sql).encode(), params)

    def script(self, sql: str) -> None:
        """Run several statements given as one text, with no parameters (a migration)."""
        with self._errors():
            self.raw.execute(sql.encode())

    def close(self) -> None:
        """Close the connection."""
        self.raw.close()

    def _run(self, sql: str, params: Sequence[Any] | None) -> list[Row]:
        with self._errors():
            return _rows(self.raw.execute((to_pyformat(sql) if params else sql).encode(), params))

    def _errors(self) -> _Translated:
        return _Translated(self.url)


class _Translated:
    """Turns psycopg's operational errors (a server gone, a lock not had in time) into a
    StateError naming the database; an error in the SQL stays what it is (a bug)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            return
        import psycopg

        if isinstance(exc, psycopg.errors.LockNotAvailable):
            raise StateError(
                f"State database {safe_url(self.url)} is locked by another process: its write lock was "
                f"not free in time ({str(exc).strip()}). Nothing was written; try again."
            ) from None
        if isinstance(exc, psycopg.OperationalError):
            raise StateError(f"State database {safe_url(self.url)} cannot be used: {str(exc).strip()}") from None


def _rows(cur: psycopg.Cursor[Any]) -> list[Row]:
    if cur.description is None:
        return []
    index: dict[str, int] = {}
    for i, column in enumerate(cur.description):
        index.setdefault(column.name, i)  # the first of equal names, as sqlite3.Row
    return [Row(values, index) for values in cur.fetchall()]


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def connect(url: str, *, readonly: bool = False, lock_wait: float = 30.0, idle_wait: float | None = None) -> PgConnection:
    """A connection to the PostgreSQL database at ``url``; a StateError when it cannot be made.
    ``idle_wait``: seconds the server lets it sit idle inside a transaction before ending it
    (at most, and by default, ``lock_wait``)."""
    try:
        import psycopg
        from psycopg.adapt import Loader
    except ImportError:
        raise StateError(
            f"The state is configured on PostgreSQL ({safe_url(url)}) but psycopg is not installed: "
            "pip install 'psycopg[binary]'."
        ) from None

    class _NumericLoader(Loader):
        """SUM and AVG of integers are numeric in PostgreSQL: as int when whole, float otherwise,
        as SQLite gives them (a Decimal would not mix with the floats the code adds it to)."""

        def load(self, data: Any) -> int | float:
            value = Decimal(bytes(data).decode())
            return int(value) if value == value.to_integral_value() else float(value)

    # A process frozen or cut off inside a write transaction holds the one write lock: every other
    # runner's writes wait, none can take its work over. Past what they wait for it (or past its
    # lease), the server ends its session, and with it the lock.
    idle = lock_wait if idle_wait is None else min(idle_wait, lock_wait)
    options = f"-c lock_timeout={int(lock_wait * 1000)} -c idle_in_transaction_session_timeout={max(1, int(idle * 1000))}"
    if readonly:
        options += " -c default_transaction_read_only=on"
    try:
        # Values bound in the client, into the statement's text: a parameter then takes its type
        # from where it stands, as in SQLite ("? IS NULL OR finished_at > ?" with a None), where
        # server-side binding cannot tell the type of a NULL.
        conn = psycopg.connect(
            url, autocommit=True, options=options, connect_timeout=10, cursor_factory=psycopg.ClientCursor
        )
    except psycopg.Error as exc:
        raise StateError(f"State database {safe_url(url)} cannot be reached: {str(exc).strip()}") from None
    conn.adapters.register_loader("numeric", _NumericLoader)
    return PgConnection(conn, url)
