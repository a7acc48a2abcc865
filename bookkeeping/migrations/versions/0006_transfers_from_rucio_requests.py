"""transfers mirrored from Rucio requests

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 04:00:00.000000

In conveyor mode Rucio's daemons move the data; every transfer row then mirrors one Rucio request and
carries its id (unique), so the row is found again on every poll and never invented.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("transfers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("request_id", sa.String(length=36), nullable=True))
        batch_op.create_index(batch_op.f("ix_transfers_request_id"), ["request_id"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("transfers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_transfers_request_id"))
        batch_op.drop_column("request_id")
