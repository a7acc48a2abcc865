"""Alembic tree: upgrade from empty to head and back, on SQLite and PostgreSQL; models never drift."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from bookkeeping.campaigns import create_campaign
from bookkeeping.database import Database, expected_head, migration_tree_head
from bookkeeping.jobs import add_jobs
from bookkeeping.models import Base
from bookkeeping.sites import SiteRow, upsert_sites
from bookkeeping.states import JobState
from common.errors import SchemaOutOfDateError

TABLES = {t.name for t in Base.metadata.sorted_tables}


def _tables(db: Database) -> set[str]:
    return set(inspect(db.engine).get_table_names()) - {"alembic_version"}


def test_expected_head_is_the_migration_trees_head() -> None:
    assert expected_head() == migration_tree_head(), "a migration was added: move SCHEMA_HEAD to it"


def test_current_revision_is_what_alembic_reads(empty_db: Database) -> None:
    for revision in ("0001", "0003", None):
        if revision is None:
            empty_db.downgrade("base")
        else:
            empty_db.upgrade(revision)
        with empty_db.engine.connect() as conn:
            assert empty_db.current_revision() == MigrationContext.configure(conn).get_current_revision()


def test_upgrade_from_empty_then_downgrade_to_base(empty_db: Database) -> None:
    assert empty_db.current_revision() is None
    empty_db.upgrade()
    assert empty_db.current_revision() == expected_head()
    assert _tables(empty_db) == TABLES
    empty_db.check_schema()
    empty_db.downgrade("base")
    assert empty_db.current_revision() is None
    assert _tables(empty_db) == set()
    empty_db.upgrade()  # and up again: downgrade left nothing behind that blocks a re-create
    assert _tables(empty_db) == TABLES


def test_models_match_migrations(db: Database) -> None:
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], f"models and migrations differ; write a migration: {diff}"


def test_empty_database_says_run_upgrade(empty_db: Database) -> None:
    with pytest.raises(SchemaOutOfDateError, match=r"empty .*run `drp db upgrade`"):
        empty_db.check_schema()


def test_older_revision_says_run_upgrade(db: Database) -> None:
    # Simulate a database last migrated by an older satdrp: its recorded revision is not our head.
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0000_older'"))
    with pytest.raises(SchemaOutOfDateError) as err:
        db.check_schema()
    assert "0000_older" in str(err.value) and "drp db upgrade" in str(err.value)
    assert err.value.exit_code == 4


def test_upgrade_is_idempotent(db: Database) -> None:
    db.upgrade()
    db.upgrade()
    assert db.current_revision() == expected_head()


def test_0007_fills_the_attempt_aggregates_from_recorded_attempts(empty_db: Database) -> None:
    """A database with attempts from before 0007 gets aggregates that match them, then stays exact."""
    empty_db.upgrade("0006")
    with empty_db.session() as s:
        ids = upsert_sites(s, [SiteRow("ncsa", "lead", 1.0, "file:///data/ncsa", "local")])
        camp = create_campaign(s, "c", "r")
        add_jobs(s, camp, [(ids["ncsa"], "warp", "{}", JobState.FAILED)])
        s.execute(
            text(
                "INSERT INTO attempts (job_id, number, exit_code, started_at, ended_at, cpu_user, peak_rss) "
                "SELECT id, 1, 1, 10, 10.3, 0.2, 100 FROM jobs "
                "UNION ALL SELECT id, 2, 0, 20, 27, 6.5, 300 FROM jobs"
            )
        )
    empty_db.upgrade()
    with empty_db.session() as s:
        counts = s.execute(
            text(
                "SELECT n_attempts, n_succeeded, wall_max, cpu_s, rss_max, first_started FROM attempt_counts"
            )
        ).all()
        buckets = sorted(s.execute(text("SELECT bucket, n_attempts FROM attempt_durations")).all())
    assert [tuple(r) for r in counts] == [(2, 1, pytest.approx(7.0), pytest.approx(6.7), 300, 10.0)]
    assert [tuple(r) for r in buckets] == [(1, 1), (5, 1)]  # 0.3 s: bound 0.5 (index 1); 7 s: bound 10
