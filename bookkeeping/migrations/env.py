"""Alembic environment: runs on the connection handed over by :class:`bookkeeping.database.Database`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from bookkeeping.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is None:  # plain `alembic` CLI use
        engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
        with engine.begin() as connection:
            _run(connection)
    else:
        _run(connection)


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode rebuilds tables
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
