"""The one object that owns the bookkeeping engine, its sessions and its schema revision."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from common.errors import ConfigError, DatabaseError, DatabaseUnavailableError, SchemaOutOfDateError
from common.permissions import PRIVATE, Modes, create_file
from common.plugins import POSTGRES, MissingClientError

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
DEFAULT_DB_URL = "sqlite:///drp.sqlite"
# The head of the bundled migration tree. Every command checks the schema against it, so it is a
# constant rather than a walk of the tree with Alembic (which costs ~0.1 s of imports per command);
# tests/test_migrations.py fails when a migration is added without moving it.
SCHEMA_HEAD = "0008"
VERSION_TABLE = "alembic_version"
# What the drivers say when the server is not there (psycopg, sqlite3), as opposed to refusing a query.
_UNREACHABLE = (
    "connection refused",
    "could not connect",
    "connection failed",
    "server closed the connection",
    "terminating connection",
    "connection timed out",
    "timeout expired",
    "could not translate host name",
    "no route to host",
    "connection reset",
    "consuming input failed",
    "the connection is closed",
    "unable to open database file",
)


def redact(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


def alembic_config(url: str | None = None) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # ConfigParser interpolation would eat '%' in passwords.
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def expected_head() -> str:
    """The Alembic revision this code was written for (the head of the bundled migration tree)."""
    return SCHEMA_HEAD


def migration_tree_head() -> str | None:
    """The head as Alembic reads it from the migration files (what :data:`SCHEMA_HEAD` must equal)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


class Database:
    """Owns the engine; hands out sessions; upgrades, downgrades and checks the schema.

    SQLite is opened in WAL mode with ``synchronous=NORMAL`` (durable at checkpoints, safe against
    application crashes) and a busy timeout so that a cron tick and an operator command can share it.
    """

    def __init__(
        self, url: str, *, sqlite_cache_mib: int = 64, echo: bool = False, modes: Modes = PRIVATE
    ) -> None:
        self.url = url
        try:
            parsed = make_url(url)
        except ArgumentError as err:
            raise ConfigError("database URL", None, f"cannot parse {url!r}: {err}") from err
        self.dialect = parsed.get_backend_name()
        kwargs: dict[str, Any] = {"echo": echo}
        sqlite_file: Path | None = None
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                parent = Path(parsed.database).expanduser().resolve().parent
                if not parent.is_dir():
                    raise ConfigError("database URL", None, f"directory {parent} does not exist")
                sqlite_file = Path(parsed.database).expanduser()
            kwargs["connect_args"] = {"timeout": 30}
        elif self.dialect == "postgresql":
            if not POSTGRES.installed():
                raise MissingClientError("database URL", None, "a postgresql:// database", POSTGRES)
            if parsed.drivername == "postgresql":
                parsed = parsed.set(drivername="postgresql+psycopg")
            kwargs["pool_pre_ping"] = True
        else:
            reason = f"unsupported database {self.dialect!r} (use sqlite or postgresql)"
            raise ConfigError("database URL", None, reason)
        self.engine: Engine = create_engine(parsed, **kwargs)
        if sqlite_file is not None:
            path = sqlite_file

            @event.listens_for(self.engine, "do_connect")
            def _private(_dialect: Any, _record: Any, _args: Any, _params: Any) -> None:
                # created private before SQLite creates it (its -wal and -shm files take the same mode),
                # at the first connection only: `drp doctor` must not leave a database behind
                create_file(path, modes)

        if self.dialect == "sqlite":
            cache_kib = sqlite_cache_mib * 1024

            @event.listens_for(self.engine, "connect")
            def _pragmas(dbapi_con: Any, _record: Any) -> None:
                cur = dbapi_con.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute(f"PRAGMA cache_size=-{cache_kib:d}")
                cur.execute("PRAGMA temp_store=MEMORY")
                cur.close()

        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def from_env(cls, url: str | None = None, *, modes: Modes = PRIVATE) -> Database:
        return cls(url or os.environ.get("DRP_DB_URL") or DEFAULT_DB_URL, modes=modes)

    def __repr__(self) -> str:
        return f"Database({redact(self.url)!r})"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session inside one transaction: committed on success, rolled back on any error."""
        try:
            with self._sessions() as session, session.begin():
                yield session
        except (OperationalError, InterfaceError) as err:
            raise self.error(err, "the transaction was rolled back") from err

    def error(self, err: SQLAlchemyError, context: str) -> DatabaseError:
        """One line naming the database (password hidden) and the driver's reason; a server that is
        not there is :class:`DatabaseUnavailableError` (exit 2), whatever the call was."""
        orig = getattr(err, "orig", None) or err
        text_ = str(orig).strip()
        reason = text_.splitlines()[0].strip() if text_ else type(orig).__name__
        if getattr(err, "connection_invalidated", False) or any(w in text_.lower() for w in _UNREACHABLE):
            return DatabaseUnavailableError(
                f"bookkeeping database {redact(self.url)} cannot be reached: {reason} ({context}; "
                "nothing was half-written: run again once it answers)"
            )
        return DatabaseError(f"bookkeeping database {redact(self.url)}: {reason} ({context})")

    # --- schema -----------------------------------------------------------------------------------
    def current_revision(self) -> str | None:
        """The revision recorded in Alembic's version table (None for an empty database)."""
        try:
            with self.engine.connect() as conn:
                if not inspect(conn).has_table(VERSION_TABLE):
                    return None
                rows = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
        except SQLAlchemyError as err:
            raise self.error(err, "reading the schema revision") from err
        if len(rows) > 1:  # a branched history: this code never makes one
            raise DatabaseError(f"{redact(self.url)} has several schema heads: {', '.join(sorted(rows))}")
        return rows[0] if rows else None

    def check_schema(self) -> None:
        """Raise :class:`SchemaOutOfDateError` unless the database is at :func:`expected_head`."""
        current = self.current_revision()
        head = expected_head()
        if current != head:
            state = "empty (no schema)" if current is None else f"at revision {current}"
            raise SchemaOutOfDateError(
                f"bookkeeping database {redact(self.url)} is {state}, this satdrp expects {head}: "
                "run `drp db upgrade`"
            )

    def upgrade(self, revision: str = "head") -> None:
        from alembic import command

        self._alembic(command.upgrade, revision)

    def downgrade(self, revision: str) -> None:
        from alembic import command

        self._alembic(command.downgrade, revision)

    def _alembic(self, fn: Any, revision: str) -> None:
        cfg = alembic_config(self.url)
        try:
            with self.engine.begin() as conn:
                cfg.attributes["connection"] = conn
                fn(cfg, revision)
        except SQLAlchemyError as err:
            raise self.error(err, f"migration to {revision} failed") from err

    def dispose(self) -> None:
        self.engine.dispose()
