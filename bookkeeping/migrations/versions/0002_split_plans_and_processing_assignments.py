"""split plans and processing assignments (which site processes which tract, per plan version)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 15:48:31.320384
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "split_plans",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("shares", sa.Text(), nullable=False),
        sa.Column("overlap", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_split_plans_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_split_plans")),
        sa.UniqueConstraint("campaign_id", "version", name=op.f("uq_split_plans_campaign_id_version")),
    )
    op.create_table(
        "assignments",
        sa.Column("plan_id", sa.Integer(), nullable=False),
        sa.Column("tract", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.SmallInteger(), nullable=False),
        sa.Column("overlap", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["split_plans.id"],
            name=op.f("fk_assignments_plan_id_split_plans"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_assignments_site_id_sites")),
        sa.PrimaryKeyConstraint("plan_id", "tract", "site_id", name=op.f("pk_assignments")),
    )
    with op.batch_alter_table("assignments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_assignments_plan_id_site_id"), ["plan_id", "site_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("assignments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_assignments_plan_id_site_id"))

    op.drop_table("assignments")
    op.drop_table("split_plans")
