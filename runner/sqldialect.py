"""The differences between the two SQL engines the state runs on, SQLite and PostgreSQL, in one place.

The code writes SQLite's SQL with ``?`` placeholders (and ``:name`` ones in the report's queries);
``to_pyformat`` turns it into psycopg's form. What cannot be written once for both (a JSON list as
a set of values, the implicit row id, "no limit", the seconds between two ISO times) is a fragment
of the ``Dialect`` the database was opened with. Schema migrations are written in SQLite's DDL;
``postgresql_ddl`` maps its types (64-bit integers, doubles, identity keys) for PostgreSQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any


@dataclass(frozen=True)
class Dialect:
    """The SQL fragments that differ between engines."""

    name: str
    # The column that orders rows of tasks and task_dependencies by insertion (a tie-break of
    # equal creation times): SQLite's implicit rowid; on PostgreSQL an identity column ``seq``.
    rowid: str
    # A LIMIT that does not limit.
    no_limit: Any
    # A subquery of the text values of a JSON list given as one parameter (one parameter per
    # value would overflow SQLite's cap on a large store).
    json_texts: str
    # The same for a list of integers.
    json_ints: str

    # Put before a column in a condition, keeps SQLite from using that column's index where a
    # scan is faster (its unary "+"); PostgreSQL's planner needs no such hint.
    no_index: str
    # Ends a SELECT of rows about to be claimed: on PostgreSQL they are locked, and rows another
    # transaction holds are passed over rather than waited for; SQLite locks the whole file.
    skip_locked: str
    # A join SQLite's planner must do in the order written (its CROSS JOIN); a plain one elsewhere.
    ordered_join: str

    def count_if(self, condition: str) -> str:
        """How many rows of a group meet ``condition``, as SQL."""
        if self.name == "sqlite":
            return f"SUM({condition})"
        return f"COUNT(*) FILTER (WHERE {condition})"

    def total(self, column: str) -> str:
        """The sum of a column of a group, 0.0 when it has none, as SQL."""
        return f"TOTAL({column})" if self.name == "sqlite" else f"COALESCE(SUM({column}), 0)"

    def concat_distinct(self, column: str) -> str:
        """The distinct values of a column of a group joined with commas, as SQL."""
        if self.name == "sqlite":
            return f"group_concat(DISTINCT {column})"
        return f"string_agg(DISTINCT {column}, ',')"

    def number(self, expression: str) -> str:
        """``expression`` as a number ROUND(x, digits) takes (PostgreSQL's takes no double)."""
        return expression if self.name == "sqlite" else f"CAST({expression} AS NUMERIC)"

    def seconds_between(self, start: str, end: str) -> str:
        """Seconds from the ISO time in column ``start`` to the one in ``end``, as SQL."""
        if self.name == "sqlite":
            return f"(julianday({end}) - julianday({start})) * 86400.0"
        return f"(EXTRACT(EPOCH FROM (CAST({end} AS timestamptz) - CAST({start} AS timestamptz))))"


SQLITE = Dialect(
    name="sqlite",
    rowid="rowid",
    no_limit=-1,
    json_texts="(SELECT value FROM json_each(?))",
    json_ints="(SELECT value FROM json_each(?))",
    no_index="+",
    ordered_join="CROSS JOIN",
    skip_locked="",
)

POSTGRESQL = Dialect(
    name="postgresql",
    rowid="seq",
    no_limit=None,
    json_texts="(SELECT json_array_elements_text(CAST(? AS json)))",
    json_ints="(SELECT CAST(json_array_elements_text(CAST(? AS json)) AS BIGINT))",
    no_index="",
    ordered_join="JOIN",
    skip_locked=" FOR UPDATE SKIP LOCKED",
)


def is_postgresql_url(target: object) -> bool:
    """Whether ``target`` (a config value or path) names a PostgreSQL database."""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


@lru_cache(maxsize=1024)
def to_pyformat(sql: str) -> str:
    """SQLite's placeholders (``?``, ``:name``) as psycopg's (``%s``, ``%(name)s``), with a
    literal ``%`` doubled; nothing inside quotes or a ``--`` comment is taken for a placeholder.
    Cached: the code's statements are a few hundred constant strings."""
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in ("'", '"') or sql.startswith("--", i):
            # A doubled quote inside a literal ends one span and starts the next: still inside.
            end = sql.find("\n" if c == "-" else c, i + 1)
            end = n if end < 0 else end + 1
            out.append(sql[i:end].replace("%", "%%"))
            i = end
        elif c == "?":
            out.append("%s")
            i += 1
        elif c == "%":
            out.append("%%")
            i += 1
        elif c == ":" and i + 1 < n and sql[i + 1] == ":":
            out.append("::")  # a PostgreSQL cast, not a name
            i += 2
        elif c == ":" and i + 1 < n and (sql[i + 1].isalpha() or sql[i + 1] == "_"):
            match = re.match(r"[A-Za-z_]\w*", sql[i + 1 :])
            assert match is not None
            out.append(f"%({match.group(0)})s")
            i += 1 + match.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


_DDL_TYPES = [
    # SQLite's INTEGER PRIMARY KEY is the rowid, given on insert when left out: an identity.
    # BY DEFAULT, so that `state migrate` can insert the ids it copies.
    (re.compile(r"\bINTEGER\s+PRIMARY\s+KEY(\s+AUTOINCREMENT)?\b", re.I), "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    # SQLite's integers are 64-bit and its reals doubles; PostgreSQL's INTEGER and REAL are not.
    (re.compile(r"\bINTEGER\b", re.I), "BIGINT"),
    (re.compile(r"\bREAL\b", re.I), "DOUBLE PRECISION"),
]


def postgresql_ddl(script: str) -> str:
    """A migration written in SQLite's DDL, with its types as PostgreSQL needs them."""
    for pattern, replacement in _DDL_TYPES:
        script = pattern.sub(replacement, script)
    return script
