"""The one object that owns the bookkeeping engine, its sessions and its schema revision."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from drp.errors import ConfigError, DatabaseError, SchemaOutOfDateError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
DEFAULT_DB_URL = "sqlite:///drp.sqlite"


def redact(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


def alembic_config(url: str | None = None) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # ConfigParser interpolation would eat '%' in passwords.
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def expected_head() -> str:
    """The Alembic revision this code was written for (the head of the bundled migration tree)."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the tree always has a head
        raise DatabaseError("the bundled migration tree has no head revision")
    return head


class Database:
    """Owns the engine; hands out sessions; upgrades, downgrades and checks the schema.

    SQLite is opened in WAL mode with ``synchronous=NORMAL`` (durable at checkpoints, safe against
    application crashes) and a busy timeout so that a cron tick and an operator command can share it.
    """

    def __init__(self, url: str, *, sqlite_cache_mib: int = 64, echo: bool = False) -> None:
        self.url = url
        try:
            parsed = make_url(url)
        except ArgumentError as err:
            raise ConfigError("database URL", None, f"cannot parse {url!r}: {err}") from err
        self.dialect = parsed.get_backend_name()
        kwargs: dict[str, Any] = {"echo": echo}
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                parent = Path(parsed.database).expanduser().resolve().parent
                if not parent.is_dir():
                    raise ConfigError("database URL", None, f"directory {parent} does not exist")
            kwargs["connect_args"] = {"timeout": 30}
        elif self.dialect == "postgresql":
            if parsed.drivername == "postgresql":
                parsed = parsed.set(drivername="postgresql+psycopg")
            kwargs["pool_pre_ping"] = True
        else:
            reason = f"unsupported database {self.dialect!r} (use sqlite or postgresql)"
            raise ConfigError("database URL", None, reason)
        self.engine: Engine = create_engine(parsed, **kwargs)
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
    def from_env(cls, url: str | None = None) -> Database:
        return cls(url or os.environ.get("DRP_DB_URL") or DEFAULT_DB_URL)

    def __repr__(self) -> str:
        return f"Database({redact(self.url)!r})"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session inside one transaction: committed on success, rolled back on any error."""
        try:
            with self._sessions() as session, session.begin():
                yield session
        except OperationalError as err:
            raise DatabaseError(f"bookkeeping database {redact(self.url)}: {err.orig}") from err

    # --- schema -----------------------------------------------------------------------------------
    def current_revision(self) -> str | None:
        try:
            with self.engine.connect() as conn:
                return MigrationContext.configure(conn).get_current_revision()
        except SQLAlchemyError as err:
            raise DatabaseError(f"cannot read the schema revision of {redact(self.url)}: {err}") from err

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
        self._alembic(command.upgrade, revision)

    def downgrade(self, revision: str) -> None:
        self._alembic(command.downgrade, revision)

    def _alembic(self, fn: Any, revision: str) -> None:
        cfg = alembic_config(self.url)
        try:
            with self.engine.begin() as conn:
                cfg.attributes["connection"] = conn
                fn(cfg, revision)
        except SQLAlchemyError as err:
            raise DatabaseError(f"migration of {redact(self.url)} to {revision} failed: {err}") from err

    def dispose(self) -> None:
        self.engine.dispose()
