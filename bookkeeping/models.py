"""SQLAlchemy 2 models of the bookkeeping database.

Design notes (scale: 25 to 200 million files per site):
- ``files`` holds one row per logical file; ``replicas`` one narrow row per (file, site), clustered on
  that key (``WITHOUT ROWID`` on SQLite) and filled by set-based ``INSERT … SELECT`` rather than one
  insert per replica.
- Operators' every-minute questions are answered from small aggregate tables (``replica_counts``,
  ``job_counts``, ``transfer_counts``, ``attempt_counts``, ``attempt_durations``) kept exact by the
  bulk functions in :mod:`bookkeeping.bulk`, never by scanning the big tables.
- Times are UNIX epoch seconds (float) so that SQLite and PostgreSQL agree and Prometheus can use them.
"""

from __future__ import annotations

import enum
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from .states import CampaignState, JobState, ReplicaState, RuleState, TransferState

# BigInteger primary keys autoincrement on PostgreSQL; on SQLite only INTEGER PRIMARY KEY is the rowid.
BigId = BigInteger().with_variant(Integer(), "sqlite")
SmallId = SmallInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class IntEnumType(TypeDecorator[Any]):
    """Stores an :class:`enum.IntEnum` as SMALLINT and gives the enum back."""

    impl = SmallInteger
    cache_ok = True

    def __init__(self, enum_cls: type[enum.IntEnum]) -> None:
        super().__init__()
        self.enum_cls = enum_cls

    def process_bind_param(self, value: Any, dialect: Dialect) -> int | None:
        return None if value is None else int(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> enum.IntEnum | None:
        return None if value is None else self.enum_cls(value)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Site(Base):
    __tablename__ = "sites"
    id: Mapped[int] = mapped_column(SmallId, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    share: Mapped[float] = mapped_column(Double)
    storage_url: Mapped[str] = mapped_column(Text)
    compute_backend: Mapped[str] = mapped_column(String(32))
    available: Mapped[bool] = mapped_column(default=True)


class Campaign(Base):
    __tablename__ = "campaigns"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    release: Mapped[str] = mapped_column(String(128))
    state: Mapped[CampaignState] = mapped_column(IntEnumType(CampaignState))
    config: Mapped[str] = mapped_column(Text, default="{}")
    message: Mapped[str | None] = mapped_column(Text)  # why it FAILED or PAUSED; what the last tick did
    created_at: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)


class CampaignPhase(Base):
    """One phase of a campaign's state machine: when it started and ended, ticks spent, failures."""

    __tablename__ = "campaign_phases"
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True)
    phase: Mapped[CampaignState] = mapped_column(IntEnumType(CampaignState), primary_key=True)
    started_at: Mapped[float] = mapped_column(Double)
    finished_at: Mapped[float | None] = mapped_column(Double)
    ticks: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str | None] = mapped_column(Text)


class Dataset(Base):
    """A named set of files (Rucio DID ``scope:name``); ``n_files``/``n_bytes`` are kept by bulk code."""

    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("scope", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scope: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32), default="raw")
    n_files: Mapped[int] = mapped_column(BigInteger, default=0)
    n_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[float] = mapped_column(Double)


class CampaignDataset(Base):
    __tablename__ = "campaign_datasets"
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True)
    role: Mapped[str] = mapped_column(String(16), default="input")
    __table_args__ = (Index(None, "dataset_id"),)


class File(Base):
    """One logical file. ``name`` is its logical file name, unique and relative to any site root."""

    __tablename__ = "files"
    __table_args__ = (
        CheckConstraint("size >= 0", name="size_nonneg"),
        CheckConstraint("length(adler32) = 8", name="adler32_len"),
        Index(None, "dataset_id", "id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(Integer)  # datasets.id; no foreign key: see migration 0008
    name: Mapped[str] = mapped_column(Text, unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    adler32: Mapped[str] = mapped_column(String(8))


class Replica(Base):
    """One file at one site. Narrow on purpose; state changes are logged as bulk events, not per row."""

    __tablename__ = "replicas"
    __table_args__ = (
        # Operators ask "what at site S is not AVAILABLE": a partial index stays small once the
        # release is complete, whereas a full (site, state) index would have 50 million entries.
        Index(
            "ix_replicas_site_state_not_available",
            "site_id",
            "state",
            sqlite_where=CheckConstraint("state <> 1").sqltext,
            postgresql_where=CheckConstraint("state <> 1").sqltext,
        ),
        {"sqlite_with_rowid": False},
    )
    # files.id and sites.id, without foreign keys: a trigger per row made PostgreSQL's bulk registration
    # 4x slower; the writers in bookkeeping.files check the same (migration 0008).
    file_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    site_id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    state: Mapped[ReplicaState] = mapped_column(IntEnumType(ReplicaState))


class ReplicaCount(Base):
    """Exact aggregate of ``replicas`` by dataset, site and state (files and bytes)."""

    __tablename__ = "replica_counts"
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), primary_key=True)
    site_id: Mapped[int] = mapped_column(SmallInteger, ForeignKey("sites.id"), primary_key=True)
    state: Mapped[ReplicaState] = mapped_column(IntEnumType(ReplicaState), primary_key=True)
    n_files: Mapped[int] = mapped_column(BigInteger, default=0)
    n_bytes: Mapped[int] = mapped_column(BigInteger, default=0)


class Rule(Base):
    """ "Keep ``copies`` copies of a dataset on sites matching ``site_expression``" (Rucio semantics)."""

    __tablename__ = "rules"
    __table_args__ = (Index(None, "dataset_id"), Index(None, "campaign_id", "state"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id"))
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    site_expression: Mapped[str] = mapped_column(Text)
    copies: Mapped[int] = mapped_column(SmallInteger, default=1)
    state: Mapped[RuleState] = mapped_column(IntEnumType(RuleState))
    stuck_reason: Mapped[str | None] = mapped_column(Text)
    external_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)


class RuleSite(Base):
    """Where a rule placed its copies (Rucio's DATASET grouping: every file of the dataset on the same
    ``copies`` sites). A file's lock state at a site is its replica's state there."""

    __tablename__ = "rule_sites"
    rule_id: Mapped[int] = mapped_column(ForeignKey("rules.id", ondelete="CASCADE"), primary_key=True)
    site_id: Mapped[int] = mapped_column(SmallInteger, ForeignKey("sites.id"), primary_key=True)


class BadReplica(Base):
    """A replica declared BAD or LOST, with who declared it, when and why (Rucio's bad_replicas)."""

    __tablename__ = "bad_replicas"
    __table_args__ = (Index(None, "file_id", "site_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    file_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("files.id"))
    site_id: Mapped[int] = mapped_column(SmallInteger, ForeignKey("sites.id"))
    state: Mapped[ReplicaState] = mapped_column(IntEnumType(ReplicaState))
    reason: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(32))  # transfer | audit | operator
    created_at: Mapped[float] = mapped_column(Double)


class Audit(Base):
    """One audit of a site's storage against the catalogue (``drp dr audit``) and what it found."""

    __tablename__ = "audits"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[int] = mapped_column(SmallInteger, ForeignKey("sites.id"))
    prefix: Mapped[str] = mapped_column(Text, default="")
    checksums: Mapped[bool] = mapped_column(default=False)
    sample: Mapped[float | None] = mapped_column(Double)  # fraction of catalogued files checked; None: all
    dry_run: Mapped[bool] = mapped_column(default=False)
    started_at: Mapped[float] = mapped_column(Double)
    finished_at: Mapped[float | None] = mapped_column(Double)
    n_checked: Mapped[int] = mapped_column(BigInteger, default=0)
    n_bytes_read: Mapped[int] = mapped_column(BigInteger, default=0)
    n_lost: Mapped[int] = mapped_column(BigInteger, default=0)
    n_corrupt: Mapped[int] = mapped_column(BigInteger, default=0)
    n_dark: Mapped[int] = mapped_column(BigInteger, default=0)


class AuditFinding(Base):
    """A LOST, CORRUPT or DARK file found by an audit, with the reason (sizes, checksums seen)."""

    __tablename__ = "audit_findings"
    __table_args__ = (Index(None, "audit_id", "kind"), Index(None, "site_id", "name"))
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    audit_id: Mapped[int] = mapped_column(ForeignKey("audits.id", ondelete="CASCADE"))
    site_id: Mapped[int] = mapped_column(SmallInteger, ForeignKey("sites.id"))
    kind: Mapped[str] = mapped_column(String(8))  # LOST | CORRUPT | DARK
    name: Mapped[str] = mapped_column(Text)
    file_id: Mapped[int | None] = mapped_column(BigInteger)  # None for a dark file not in the catalogue
    size: Mapped[int | None] = mapped_column(BigInteger)  # on storage (None: absent)
    reason: Mapped[str] = mapped_column(Text)
    action: Mapped[str | None] = mapped_column(String(32))  # declared | deleted | kept: last copy | …
    created_at: Mapped[float] = mapped_column(Double)


class Failover(Base):
    """A site's processing moved to another site (``drp dr failover``); ``failed_back_at`` when reversed."""

    __tablename__ = "failovers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    from_site_id: Mapped[int] = mapped_column(SmallInteger, ForeignKey("sites.id"))
    to_site_id: Mapped[int] = mapped_column(SmallInteger, ForeignKey("sites.id"))
    tracts: Mapped[str] = mapped_column(Text)  # JSON [tract, ...] moved
    rules: Mapped[str] = mapped_column(Text, default="{}")  # JSON {old rule id: new rule id}
    plan_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Double)
    failed_back_at: Mapped[float | None] = mapped_column(Double)


class SplitPlan(Base):
    """One version of a campaign's split: shares and overlap in force; a new version per re-plan."""

    __tablename__ = "split_plans"
    __table_args__ = (UniqueConstraint("campaign_id", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    shares: Mapped[str] = mapped_column(Text)  # JSON {site: share}
    overlap: Mapped[str] = mapped_column(Text)  # JSON [tract, ...]
    created_at: Mapped[float] = mapped_column(Double)


class Assignment(Base):
    """A processing assignment: this site processes this tract under this plan (overlap: every site)."""

    __tablename__ = "assignments"
    __table_args__ = (Index(None, "plan_id", "site_id"),)
    plan_id: Mapped[int] = mapped_column(ForeignKey("split_plans.id", ondelete="CASCADE"), primary_key=True)
    tract: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[int] = mapped_column(SmallInteger, ForeignKey("sites.id"), primary_key=True)
    overlap: Mapped[bool] = mapped_column(default=False)


class Transfer(Base):
    __tablename__ = "transfers"
    __table_args__ = (
        Index(None, "file_id"),
        Index(None, "rule_id"),
        Index(
            "ix_transfers_active",
            "campaign_id",
            "state",
            sqlite_where=CheckConstraint("state IN (1, 2, 3)").sqltext,
            postgresql_where=CheckConstraint("state IN (1, 2, 3)").sqltext,
        ),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id"))
    rule_id: Mapped[int | None] = mapped_column(ForeignKey("rules.id"))
    file_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("files.id"))
    source_site_id: Mapped[int] = mapped_column(SmallInteger, ForeignKey("sites.id"))
    dest_site_id: Mapped[int] = mapped_column(SmallInteger, ForeignKey("sites.id"))
    state: Mapped[TransferState] = mapped_column(IntEnumType(TransferState))
    attempts: Mapped[int] = mapped_column(SmallInteger, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    mover: Mapped[str] = mapped_column(String(16), default="local")
    external_id: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(36), index=True, unique=True)  # a Rucio request
    error: Mapped[str | None] = mapped_column(Text)
    failure: Mapped[str | None] = mapped_column(String(24))  # kind of the last failure (FailureKind)
    next_attempt_at: Mapped[float | None] = mapped_column(Double)  # retry back-off: not before this
    created_at: Mapped[float] = mapped_column(Double)
    started_at: Mapped[float | None] = mapped_column(Double)
    finished_at: Mapped[float | None] = mapped_column(Double)


class TransferCount(Base):
    """Exact aggregate of ``transfers`` by campaign, link and state (files and bytes)."""

    __tablename__ = "transfer_counts"
    campaign_id: Mapped[int] = mapped_column(Integer, primary_key=True)  # 0 = no campaign
    source_site_id: Mapped[int] = mapped_column(SmallInteger, ForeignKey("sites.id"), primary_key=True)
    dest_site_id: Mapped[int] = mapped_column(SmallInteger, ForeignKey("sites.id"), primary_key=True)
    state: Mapped[TransferState] = mapped_column(IntEnumType(TransferState), primary_key=True)
    n_transfers: Mapped[int] = mapped_column(BigInteger, default=0)
    n_bytes: Mapped[int] = mapped_column(BigInteger, default=0)


class Job(Base):
    """One pipeline step on one data id at one site. ``data_id`` is canonical JSON (sorted keys)."""

    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("campaign_id", "site_id", "step", "data_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    site_id: Mapped[int] = mapped_column(SmallInteger, ForeignKey("sites.id"))
    step: Mapped[str] = mapped_column(String(32))
    data_id: Mapped[str] = mapped_column(Text)
    state: Mapped[JobState] = mapped_column(IntEnumType(JobState))
    n_attempts: Mapped[int] = mapped_column(SmallInteger, default=0)
    request_memory_mb: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)


class JobCount(Base):
    """Exact aggregate of ``jobs`` by campaign, site, step and state."""

    __tablename__ = "job_counts"
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), primary_key=True)
    site_id: Mapped[int] = mapped_column(SmallInteger, ForeignKey("sites.id"), primary_key=True)
    step: Mapped[str] = mapped_column(String(32), primary_key=True)
    state: Mapped[JobState] = mapped_column(IntEnumType(JobState), primary_key=True)
    n_jobs: Mapped[int] = mapped_column(BigInteger, default=0)


class Attempt(Base):
    """One execution of a job with its resource profile, ingested from the job report."""

    __tablename__ = "attempts"
    __table_args__ = (UniqueConstraint("job_id", "number"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("jobs.id"))
    number: Mapped[int] = mapped_column(SmallInteger)
    exit_code: Mapped[int | None] = mapped_column(SmallInteger)
    signal: Mapped[int | None] = mapped_column(SmallInteger)
    started_at: Mapped[float | None] = mapped_column(Double)
    ended_at: Mapped[float | None] = mapped_column(Double)
    cpu_user: Mapped[float | None] = mapped_column(Double)
    cpu_sys: Mapped[float | None] = mapped_column(Double)
    peak_rss: Mapped[int | None] = mapped_column(BigInteger)
    read_bytes: Mapped[int | None] = mapped_column(BigInteger)
    write_bytes: Mapped[int | None] = mapped_column(BigInteger)
    host: Mapped[str | None] = mapped_column(String(255))
    stderr_tail: Mapped[str | None] = mapped_column(Text)
    report_path: Mapped[str | None] = mapped_column(Text)


class AttemptCount(Base):
    """Exact aggregate of ``attempts`` by campaign, site and step: what status, step profiles and the
    exporter read instead of joining every attempt to its job (sums, and counts of the non-null values
    the means are taken over)."""

    __tablename__ = "attempt_counts"
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), primary_key=True)
    site_id: Mapped[int] = mapped_column(SmallInteger, ForeignKey("sites.id"), primary_key=True)
    step: Mapped[str] = mapped_column(String(32), primary_key=True)
    n_attempts: Mapped[int] = mapped_column(BigInteger, default=0)
    n_succeeded: Mapped[int] = mapped_column(BigInteger, default=0)  # exit code 0
    n_wall: Mapped[int] = mapped_column(BigInteger, default=0)  # attempts with a start and an end
    wall_s: Mapped[float] = mapped_column(Double, default=0.0)
    wall_max: Mapped[float | None] = mapped_column(Double)
    cpu_s: Mapped[float] = mapped_column(Double, default=0.0)
    n_rss: Mapped[int] = mapped_column(BigInteger, default=0)
    rss_sum: Mapped[int] = mapped_column(BigInteger, default=0)
    rss_max: Mapped[int | None] = mapped_column(BigInteger)
    read_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    write_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    first_started: Mapped[float | None] = mapped_column(Double)
    last_ended: Mapped[float | None] = mapped_column(Double)


class AttemptDuration(Base):
    """Exact histogram of attempts' wall times by campaign, site and step: ``bucket`` is the index of
    the first bound of :data:`bookkeeping.states.DURATION_BUCKETS` at or above the wall time (its
    length: above them all); attempts without a wall time are left out."""

    __tablename__ = "attempt_durations"
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), primary_key=True)
    site_id: Mapped[int] = mapped_column(SmallInteger, ForeignKey("sites.id"), primary_key=True)
    step: Mapped[str] = mapped_column(String(32), primary_key=True)
    bucket: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    n_attempts: Mapped[int] = mapped_column(BigInteger, default=0)


class Validation(Base):
    """One cross-validation result: a quantity compared on one tract between sites."""

    __tablename__ = "validations"
    __table_args__ = (Index(None, "campaign_id", "tract"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    tract: Mapped[int] = mapped_column(Integer)
    sites: Mapped[str] = mapped_column(String(255))
    quantity: Mapped[str] = mapped_column(String(64))
    value: Mapped[float | None] = mapped_column(Double)
    threshold: Mapped[float | None] = mapped_column(Double)
    passed: Mapped[bool]
    details: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[float] = mapped_column(Double)


class Event(Base):
    """Append-only log of what happened: one row per operation (a bulk call is one event)."""

    __tablename__ = "events"
    __table_args__ = (Index(None, "campaign_id", "ts"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ts: Mapped[float] = mapped_column(Double)
    campaign_id: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(Text, default="")
    message: Mapped[str] = mapped_column(Text, default="")
    payload: Mapped[str] = mapped_column(Text, default="{}")


AGGREGATE_TABLES = (
    ReplicaCount.__table__,
    JobCount.__table__,
    TransferCount.__table__,
    AttemptCount.__table__,
    AttemptDuration.__table__,
)
