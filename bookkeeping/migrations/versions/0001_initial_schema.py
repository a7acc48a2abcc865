"""initial schema: sites, datasets, files, replicas, rules, transfers, campaigns, jobs, attempts,
validations, events and the aggregate tables.

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-22 14:14:35.537782
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("release", sa.String(length=128), nullable=False),
        sa.Column("state", sa.SmallInteger(), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
        sa.UniqueConstraint("name", name=op.f("uq_campaigns_name")),
    )
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("n_files", sa.BigInteger(), nullable=False),
        sa.Column("n_bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_datasets")),
        sa.UniqueConstraint("scope", "name", name=op.f("uq_datasets_scope_name")),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("ts", sa.Double(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_events_campaign_id_ts"), ["campaign_id", "ts"], unique=False)

    op.create_table(
        "sites",
        sa.Column("id", sa.SmallInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("share", sa.Double(), nullable=False),
        sa.Column("storage_url", sa.Text(), nullable=False),
        sa.Column("compute_backend", sa.String(length=32), nullable=False),
        sa.Column("available", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sites")),
        sa.UniqueConstraint("name", name=op.f("uq_sites_name")),
    )
    op.create_table(
        "campaign_datasets",
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_campaign_datasets_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["datasets.id"],
            name=op.f("fk_campaign_datasets_dataset_id_datasets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("campaign_id", "dataset_id", name=op.f("pk_campaign_datasets")),
    )
    with op.batch_alter_table("campaign_datasets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_campaign_datasets_dataset_id"), ["dataset_id"], unique=False)

    op.create_table(
        "files",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("adler32", sa.String(length=8), nullable=False),
        sa.CheckConstraint("length(adler32) = 8", name=op.f("ck_files_adler32_len")),
        sa.CheckConstraint("size >= 0", name=op.f("ck_files_size_nonneg")),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"], name=op.f("fk_files_dataset_id_datasets")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_files")),
        sa.UniqueConstraint("name", name=op.f("uq_files_name")),
    )
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_files_dataset_id_id"), ["dataset_id", "id"], unique=False)

    op.create_table(
        "job_counts",
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.SmallInteger(), nullable=False),
        sa.Column("step", sa.String(length=32), nullable=False),
        sa.Column("state", sa.SmallInteger(), nullable=False),
        sa.Column("n_jobs", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name=op.f("fk_job_counts_campaign_id_campaigns")
        ),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_job_counts_site_id_sites")),
        sa.PrimaryKeyConstraint("campaign_id", "site_id", "step", "state", name=op.f("pk_job_counts")),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.SmallInteger(), nullable=False),
        sa.Column("step", sa.String(length=32), nullable=False),
        sa.Column("data_id", sa.Text(), nullable=False),
        sa.Column("state", sa.SmallInteger(), nullable=False),
        sa.Column("n_attempts", sa.SmallInteger(), nullable=False),
        sa.Column("request_memory_mb", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name=op.f("fk_jobs_campaign_id_campaigns")
        ),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_jobs_site_id_sites")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint(
            "campaign_id", "site_id", "step", "data_id", name=op.f("uq_jobs_campaign_id_site_id_step_data_id")
        ),
    )
    op.create_table(
        "replica_counts",
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.SmallInteger(), nullable=False),
        sa.Column("state", sa.SmallInteger(), nullable=False),
        sa.Column("n_files", sa.BigInteger(), nullable=False),
        sa.Column("n_bytes", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name=op.f("fk_replica_counts_dataset_id_datasets")
        ),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_replica_counts_site_id_sites")),
        sa.PrimaryKeyConstraint("dataset_id", "site_id", "state", name=op.f("pk_replica_counts")),
    )
    op.create_table(
        "rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=True),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("site_expression", sa.Text(), nullable=False),
        sa.Column("copies", sa.SmallInteger(), nullable=False),
        sa.Column("state", sa.SmallInteger(), nullable=False),
        sa.Column("stuck_reason", sa.Text(), nullable=True),
        sa.Column("external_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name=op.f("fk_rules_campaign_id_campaigns")
        ),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"], name=op.f("fk_rules_dataset_id_datasets")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rules")),
    )
    with op.batch_alter_table("rules", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_rules_campaign_id_state"), ["campaign_id", "state"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_rules_dataset_id"), ["dataset_id"], unique=False)

    op.create_table(
        "transfer_counts",
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("source_site_id", sa.SmallInteger(), nullable=False),
        sa.Column("dest_site_id", sa.SmallInteger(), nullable=False),
        sa.Column("state", sa.SmallInteger(), nullable=False),
        sa.Column("n_transfers", sa.BigInteger(), nullable=False),
        sa.Column("n_bytes", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["dest_site_id"], ["sites.id"], name=op.f("fk_transfer_counts_dest_site_id_sites")
        ),
        sa.ForeignKeyConstraint(
            ["source_site_id"], ["sites.id"], name=op.f("fk_transfer_counts_source_site_id_sites")
        ),
        sa.PrimaryKeyConstraint(
            "campaign_id", "source_site_id", "dest_site_id", "state", name=op.f("pk_transfer_counts")
        ),
    )
    op.create_table(
        "validations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("tract", sa.Integer(), nullable=False),
        sa.Column("sites", sa.String(length=255), nullable=False),
        sa.Column("quantity", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("threshold", sa.Double(), nullable=True),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name=op.f("fk_validations_campaign_id_campaigns")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_validations")),
    )
    with op.batch_alter_table("validations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_validations_campaign_id_tract"), ["campaign_id", "tract"], unique=False
        )

    op.create_table(
        "attempts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("number", sa.SmallInteger(), nullable=False),
        sa.Column("exit_code", sa.SmallInteger(), nullable=True),
        sa.Column("signal", sa.SmallInteger(), nullable=True),
        sa.Column("started_at", sa.Double(), nullable=True),
        sa.Column("ended_at", sa.Double(), nullable=True),
        sa.Column("cpu_user", sa.Double(), nullable=True),
        sa.Column("cpu_sys", sa.Double(), nullable=True),
        sa.Column("peak_rss", sa.BigInteger(), nullable=True),
        sa.Column("read_bytes", sa.BigInteger(), nullable=True),
        sa.Column("write_bytes", sa.BigInteger(), nullable=True),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("stderr_tail", sa.Text(), nullable=True),
        sa.Column("report_path", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_attempts_job_id_jobs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attempts")),
        sa.UniqueConstraint("job_id", "number", name=op.f("uq_attempts_job_id_number")),
    )
    op.create_table(
        "replicas",
        sa.Column("file_id", sa.BigInteger(), nullable=False),
        sa.Column("site_id", sa.SmallInteger(), nullable=False),
        sa.Column("state", sa.SmallInteger(), nullable=False),
        sa.ForeignKeyConstraint(["file_id"], ["files.id"], name=op.f("fk_replicas_file_id_files")),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_replicas_site_id_sites")),
        sa.PrimaryKeyConstraint("file_id", "site_id", name=op.f("pk_replicas")),
        sqlite_with_rowid=False,
    )
    with op.batch_alter_table("replicas", schema=None) as batch_op:
        batch_op.create_index(
            "ix_replicas_site_state_not_available",
            ["site_id", "state"],
            unique=False,
            sqlite_where=sa.text("state <> 1"),
            postgresql_where=sa.text("state <> 1"),
        )

    op.create_table(
        "transfers",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=True),
        sa.Column("rule_id", sa.Integer(), nullable=True),
        sa.Column("file_id", sa.BigInteger(), nullable=False),
        sa.Column("source_site_id", sa.SmallInteger(), nullable=False),
        sa.Column("dest_site_id", sa.SmallInteger(), nullable=False),
        sa.Column("state", sa.SmallInteger(), nullable=False),
        sa.Column("attempts", sa.SmallInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("mover", sa.String(length=16), nullable=False),
        sa.Column("external_id", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("started_at", sa.Double(), nullable=True),
        sa.Column("finished_at", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name=op.f("fk_transfers_campaign_id_campaigns")
        ),
        sa.ForeignKeyConstraint(["dest_site_id"], ["sites.id"], name=op.f("fk_transfers_dest_site_id_sites")),
        sa.ForeignKeyConstraint(["file_id"], ["files.id"], name=op.f("fk_transfers_file_id_files")),
        sa.ForeignKeyConstraint(["rule_id"], ["rules.id"], name=op.f("fk_transfers_rule_id_rules")),
        sa.ForeignKeyConstraint(
            ["source_site_id"], ["sites.id"], name=op.f("fk_transfers_source_site_id_sites")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transfers")),
    )
    with op.batch_alter_table("transfers", schema=None) as batch_op:
        batch_op.create_index(
            "ix_transfers_active",
            ["campaign_id", "state"],
            unique=False,
            sqlite_where=sa.text("state IN (1, 2, 3)"),
            postgresql_where=sa.text("state IN (1, 2, 3)"),
        )
        batch_op.create_index(batch_op.f("ix_transfers_file_id"), ["file_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_transfers_rule_id"), ["rule_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("transfers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_transfers_rule_id"))
        batch_op.drop_index(batch_op.f("ix_transfers_file_id"))
        batch_op.drop_index(
            "ix_transfers_active",
            sqlite_where=sa.text("state IN (1, 2, 3)"),
            postgresql_where=sa.text("state IN (1, 2, 3)"),
        )

    op.drop_table("transfers")
    with op.batch_alter_table("replicas", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_replicas_site_state_not_available",
            sqlite_where=sa.text("state <> 1"),
            postgresql_where=sa.text("state <> 1"),
        )

    op.drop_table("replicas")
    op.drop_table("attempts")
    with op.batch_alter_table("validations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_validations_campaign_id_tract"))

    op.drop_table("validations")
    op.drop_table("transfer_counts")
    with op.batch_alter_table("rules", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rules_dataset_id"))
        batch_op.drop_index(batch_op.f("ix_rules_campaign_id_state"))

    op.drop_table("rules")
    op.drop_table("replica_counts")
    op.drop_table("jobs")
    op.drop_table("job_counts")
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_files_dataset_id_id"))

    op.drop_table("files")
    with op.batch_alter_table("campaign_datasets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_campaign_datasets_dataset_id"))

    op.drop_table("campaign_datasets")
    op.drop_table("sites")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_events_campaign_id_ts"))

    op.drop_table("events")
    op.drop_table("datasets")
    op.drop_table("campaigns")
