"""The bulk write machinery every repository module uses (and nothing else writes around it).

Rows go through the driver's fastest path (PostgreSQL ``COPY``, SQLite ``executemany`` with tuples);
derived data (aggregate counts) is written set-based in SQL, so the cost per row stays close to the raw
driver's. Functions run inside the caller's transaction (its ``session``); aggregate tables are updated
in the same transaction, so they are exact whenever a transaction commits.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from common.errors import InvalidInputError, NotFoundError


def driver(session: Session) -> tuple[str, Any]:
    conn = session.connection()
    return conn.dialect.name, conn.connection.driver_connection


def copy_rows(
    session: Session,
    table: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    what: str = "",
    constants: dict[str, int] | None = None,
) -> None:
    """Append rows to ``table`` through the driver's bulk path, inside the session's transaction.

    ``constants``: integer columns with the same value in every row, not in ``rows`` (SQLite takes
    them as literals, so the rows reach the driver untouched: a tuple rebuilt per row cost a fifth
    of a registration). A constraint violation (duplicate name, unknown foreign key, failed check)
    becomes an :class:`InvalidInputError` naming ``what``; the caller's transaction then rolls back
    whole.
    """
    dialect, raw = driver(session)
    fixed = {k: int(v) for k, v in (constants or {}).items()}
    cols = ", ".join([*fixed, *columns])
    integrity: tuple[type[Exception], ...] = (sqlite3.IntegrityError,)
    if dialect == "postgresql":
        import psycopg  # the [postgres] extra; only a PostgreSQL session gets here

        integrity = (psycopg.IntegrityError,)
    try:
        if dialect == "postgresql":
            head = tuple(fixed.values())
            with raw.cursor() as cur, cur.copy(f"COPY {table} ({cols}) FROM STDIN") as cp:
                for row in rows:
                    cp.write_row((*head, *row) if head else row)
        else:
            marks = ", ".join([*(f"{v:d}" for v in fixed.values()), *("?" * len(columns))])
            cur = raw.cursor()
            try:
                cur.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks})", rows)
            finally:
                cur.close()
    except integrity as err:
        first = str(err).splitlines()[0]
        raise InvalidInputError(f"{what or table}: rejected by the database: {first}") from err


def bump_counts(
    session: Session,
    table: str,
    key_cols: Sequence[str],
    value_cols: Sequence[str],
    deltas: dict[tuple[Any, ...], tuple[int, ...]],
) -> None:
    """Add ``deltas`` (key → values) to an aggregate table with one upsert per key; drop zero rows."""
    if not deltas:
        return
    cols = [*key_cols, *value_cols]
    sets = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in value_cols)
    stmt = text(
        f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)}) "
        f"ON CONFLICT ({', '.join(key_cols)}) DO UPDATE SET {sets}"
    )
    session.execute(stmt, [dict(zip(cols, (*k, *v), strict=True)) for k, v in deltas.items()])
    session.execute(text(f"DELETE FROM {table} WHERE {value_cols[0]} = 0"))


def load_temp(
    session: Session, name: str, ddl: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> int:
    session.execute(text(f"DROP TABLE IF EXISTS {name}"))
    session.execute(text(f"CREATE TEMPORARY TABLE {name} ({ddl})"))
    copy_rows(session, name, columns, rows, what="bulk update (is a key given twice?)")
    return int(session.execute(text(f"SELECT count(*) FROM {name}")).scalar_one())


def transitions(session: Session, sql: str, loaded: int, what: str) -> list[tuple[Any, ...]]:
    rows = [tuple(r) for r in session.execute(text(sql))]
    matched = sum(int(r[-2]) for r in rows)
    if matched != loaded:
        raise NotFoundError(f"{loaded - matched} of {loaded} {what} in the update do not exist")
    return rows
