"""rule placement, bad replicas, transfer retry back-off

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 20:12:38.858668
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bad_replicas",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("file_id", sa.BigInteger(), nullable=False),
        sa.Column("site_id", sa.SmallInteger(), nullable=False),
        sa.Column("state", sa.SmallInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["file_id"], ["files.id"], name=op.f("fk_bad_replicas_file_id_files")),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_bad_replicas_site_id_sites")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bad_replicas")),
    )
    with op.batch_alter_table("bad_replicas", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_bad_replicas_file_id_site_id"), ["file_id", "site_id"], unique=False
        )

    op.create_table(
        "rule_sites",
        sa.Column("rule_id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.SmallInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["rule_id"], ["rules.id"], name=op.f("fk_rule_sites_rule_id_rules"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_rule_sites_site_id_sites")),
        sa.PrimaryKeyConstraint("rule_id", "site_id", name=op.f("pk_rule_sites")),
    )
    with op.batch_alter_table("transfers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("failure", sa.String(length=24), nullable=True))
        batch_op.add_column(sa.Column("next_attempt_at", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("transfers", schema=None) as batch_op:
        batch_op.drop_column("next_attempt_at")
        batch_op.drop_column("failure")

    op.drop_table("rule_sites")
    with op.batch_alter_table("bad_replicas", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bad_replicas_file_id_site_id"))

    op.drop_table("bad_replicas")
