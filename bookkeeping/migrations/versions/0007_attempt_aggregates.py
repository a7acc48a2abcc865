"""attempt aggregates

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 19:30:00.000000

``attempt_counts`` and ``attempt_durations`` hold per (campaign, site, step) what status, the step
profiles and the exporter used to compute by joining every attempt to its job: O(attempts) on every
call (248 ms at 1 M attempts). They are filled here from the attempts already recorded, then kept exact
by :func:`bookkeeping.jobs.add_attempts`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# The bounds of bookkeeping.states.DURATION_BUCKETS when this revision was written (a migration must not
# change meaning when the code moves on).
_BOUNDS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)


def _key_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.SmallInteger(), nullable=False),
        sa.Column("step", sa.String(length=32), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "attempt_counts",
        *_key_columns(),
        sa.Column("n_attempts", sa.BigInteger(), nullable=False),
        sa.Column("n_succeeded", sa.BigInteger(), nullable=False),
        sa.Column("n_wall", sa.BigInteger(), nullable=False),
        sa.Column("wall_s", sa.Double(), nullable=False),
        sa.Column("wall_max", sa.Double(), nullable=True),
        sa.Column("cpu_s", sa.Double(), nullable=False),
        sa.Column("n_rss", sa.BigInteger(), nullable=False),
        sa.Column("rss_sum", sa.BigInteger(), nullable=False),
        sa.Column("rss_max", sa.BigInteger(), nullable=True),
        sa.Column("read_bytes", sa.BigInteger(), nullable=False),
        sa.Column("write_bytes", sa.BigInteger(), nullable=False),
        sa.Column("first_started", sa.Double(), nullable=True),
        sa.Column("last_ended", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name=op.f("fk_attempt_counts_campaign_id_campaigns")
        ),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_attempt_counts_site_id_sites")),
        sa.PrimaryKeyConstraint("campaign_id", "site_id", "step", name=op.f("pk_attempt_counts")),
    )
    op.create_table(
        "attempt_durations",
        *_key_columns(),
        sa.Column("bucket", sa.SmallInteger(), nullable=False),
        sa.Column("n_attempts", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name=op.f("fk_attempt_durations_campaign_id_campaigns")
        ),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_attempt_durations_site_id_sites")),
        sa.PrimaryKeyConstraint(
            "campaign_id", "site_id", "step", "bucket", name=op.f("pk_attempt_durations")
        ),
    )
    op.execute(
        "INSERT INTO attempt_counts SELECT j.campaign_id, j.site_id, j.step, count(*), "
        "sum(CASE WHEN a.exit_code = 0 THEN 1 ELSE 0 END), count(a.ended_at - a.started_at), "
        "coalesce(sum(a.ended_at - a.started_at), 0), max(a.ended_at - a.started_at), "
        "coalesce(sum(coalesce(a.cpu_user, 0) + coalesce(a.cpu_sys, 0)), 0), count(a.peak_rss), "
        "coalesce(sum(a.peak_rss), 0), max(a.peak_rss), coalesce(sum(a.read_bytes), 0), "
        "coalesce(sum(a.write_bytes), 0), min(a.started_at), max(a.ended_at) "
        "FROM attempts a JOIN jobs j ON j.id = a.job_id GROUP BY j.campaign_id, j.site_id, j.step"
    )
    wall = "a.ended_at - a.started_at"
    case = (
        "CASE "
        + " ".join(f"WHEN {wall} <= {b!r} THEN {i}" for i, b in enumerate(_BOUNDS))
        + f" ELSE {len(_BOUNDS)} END"
    )
    op.execute(
        f"INSERT INTO attempt_durations SELECT j.campaign_id, j.site_id, j.step, {case}, count(*) "
        f"FROM attempts a JOIN jobs j ON j.id = a.job_id WHERE {wall} IS NOT NULL "
        f"GROUP BY j.campaign_id, j.site_id, j.step, {case}"
    )


def downgrade() -> None:
    op.drop_table("attempt_durations")
    op.drop_table("attempt_counts")
