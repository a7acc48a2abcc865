"""no foreign keys on files and replicas

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 19:50:00.000000

PostgreSQL checks a foreign key with a trigger per inserted row: registering 1,000,000 files with a
replica at two sites took 49 s, 37 of them in those triggers (12 s without; issue 22's 25,400,000-file
release could not fit in 5 minutes with them). ``files.dataset_id``, ``replicas.file_id`` and
``replicas.site_id`` lose their foreign keys; the bulk functions of :mod:`bookkeeping.files`, the only
writers of these tables, check the same things set-wise (the dataset row is locked before its files
are added, a replica is made from a ``files`` row or after every file of the update was found, and
site ids are checked against ``sites``); rows of these tables are never deleted.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_FKS = (
    ("files", "fk_files_dataset_id_datasets", ["dataset_id"], "datasets"),
    ("replicas", "fk_replicas_file_id_files", ["file_id"], "files"),
    ("replicas", "fk_replicas_site_id_sites", ["site_id"], "sites"),
)
_PARTIAL = "ix_replicas_site_state_not_available"


def _batch(table: str) -> Any:
    """SQLite rebuilds the table (its foreign keys are part of CREATE TABLE); replicas stay WITHOUT ROWID."""
    kwargs = {"sqlite_with_rowid": False} if table == "replicas" else {}
    return op.batch_alter_table(table, recreate="auto", table_kwargs=kwargs)


def _partial_index(create: bool) -> None:
    """The partial index is dropped around a SQLite rebuild and made again as 0001 made it."""
    if op.get_bind().dialect.name != "sqlite":
        return
    if create:
        op.create_index(
            _PARTIAL,
            "replicas",
            ["site_id", "state"],
            unique=False,
            sqlite_where=sa.text("state <> 1"),
            postgresql_where=sa.text("state <> 1"),
        )
    else:
        op.drop_index(_PARTIAL, table_name="replicas")


def upgrade() -> None:
    _partial_index(create=False)
    for table in ("files", "replicas"):
        with _batch(table) as batch_op:
            for t, name, _, _ in _FKS:
                if t == table:
                    batch_op.drop_constraint(name, type_="foreignkey")
    _partial_index(create=True)


def downgrade() -> None:
    _partial_index(create=False)
    for table in ("files", "replicas"):
        with _batch(table) as batch_op:
            for t, name, cols, parent in _FKS:
                if t == table:
                    batch_op.create_foreign_key(name, parent, cols, ["id"])
    _partial_index(create=True)
