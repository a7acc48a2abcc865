"""audits, audit findings and failovers

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 23:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "audits",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.SmallInteger(), nullable=False),
        sa.Column("prefix", sa.Text(), nullable=False),
        sa.Column("checksums", sa.Boolean(), nullable=False),
        sa.Column("sample", sa.Double(), nullable=True),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("started_at", sa.Double(), nullable=False),
        sa.Column("finished_at", sa.Double(), nullable=True),
        sa.Column("n_checked", sa.BigInteger(), nullable=False),
        sa.Column("n_bytes_read", sa.BigInteger(), nullable=False),
        sa.Column("n_lost", sa.BigInteger(), nullable=False),
        sa.Column("n_corrupt", sa.BigInteger(), nullable=False),
        sa.Column("n_dark", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_audits_site_id_sites")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audits")),
    )
    op.create_table(
        "audit_findings",
        sa.Column("id", _BIG_ID, nullable=False),
        sa.Column("audit_id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.SmallInteger(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("file_id", sa.BigInteger(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["audit_id"], ["audits.id"], name=op.f("fk_audit_findings_audit_id_audits"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_audit_findings_site_id_sites")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_findings")),
    )
    op.create_index(op.f("ix_audit_findings_audit_id_kind"), "audit_findings", ["audit_id", "kind"])
    op.create_index(op.f("ix_audit_findings_site_id_name"), "audit_findings", ["site_id", "name"])
    op.create_table(
        "failovers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("from_site_id", sa.SmallInteger(), nullable=False),
        sa.Column("to_site_id", sa.SmallInteger(), nullable=False),
        sa.Column("tracts", sa.Text(), nullable=False),
        sa.Column("rules", sa.Text(), nullable=False),
        sa.Column("plan_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("failed_back_at", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_failovers_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["from_site_id"], ["sites.id"], name=op.f("fk_failovers_from_site_id_sites")),
        sa.ForeignKeyConstraint(["to_site_id"], ["sites.id"], name=op.f("fk_failovers_to_site_id_sites")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_failovers")),
    )


def downgrade() -> None:
    op.drop_table("failovers")
    op.drop_index(op.f("ix_audit_findings_site_id_name"), table_name="audit_findings")
    op.drop_index(op.f("ix_audit_findings_audit_id_kind"), table_name="audit_findings")
    op.drop_table("audit_findings")
    op.drop_table("audits")
