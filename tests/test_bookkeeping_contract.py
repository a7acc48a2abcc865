"""Contract suite for bulk writes and aggregate queries: the same assertions on SQLite and PostgreSQL.

The aggregates are checked against a full scan of the base tables (the ground truth that the
production queries avoid), after random sequences of updates.
"""

from __future__ import annotations

import random

import pytest
from sqlalchemy import func, select, text

from bookkeeping.campaigns import attach_datasets, create_campaign
from bookkeeping.database import Database
from bookkeeping.files import FileRow, get_or_create_dataset, register_files, set_replica_states
from bookkeeping.jobs import AttemptRow, add_attempts, add_jobs, data_id_key, set_job_states, step_profiles
from bookkeeping.models import Attempt, Dataset, Event, File, Job, Replica
from bookkeeping.queries import campaign_status, replica_totals
from bookkeeping.sites import SiteRow, upsert_sites
from bookkeeping.states import DURATION_BUCKETS, JobState, ReplicaState, TransferState
from bookkeeping.transfers import TransferRow, add_transfers, set_transfer_states
from common.errors import InvalidInputError, NotFoundError


def _setup(db: Database) -> tuple[dict[str, int], int]:
    with db.session() as s:
        ids = upsert_sites(
            s,
            [
                SiteRow("ncsa", "lead", 0.5, "file:///data/ncsa", "local"),
                SiteRow("in2p3", "satellite", 0.5, "file:///data/in2p3", "local"),
            ],
        )
        camp = create_campaign(s, "dr1-test", "dr1")
    return ids, camp


def _files(prefix: str, n: int, size0: int = 100) -> list[FileRow]:
    return [FileRow(f"{prefix}/f{i:05d}.fits", size0 + i, f"{i:08x}") for i in range(n)]


def _assert_aggregates_exact(db: Database) -> None:
    with db.session() as s:
        truth = {
            (d, site, st): (n, b)
            for d, site, st, n, b in s.execute(
                text(
                    "SELECT f.dataset_id, r.site_id, r.state, count(*), sum(f.size) FROM replicas r "
                    "JOIN files f ON f.id = r.file_id GROUP BY f.dataset_id, r.site_id, r.state"
                )
            )
        }
        agg = {
            (d, site, st): (n, b)
            for d, site, st, n, b in s.execute(
                text("SELECT dataset_id, site_id, state, n_files, n_bytes FROM replica_counts")
            )
        }
        assert agg == truth
        jobs_truth = {
            (c, si, st, js): n
            for c, si, st, js, n in s.execute(
                text("SELECT campaign_id, site_id, step, state, count(*) FROM jobs GROUP BY 1, 2, 3, 4")
            )
        }
        jobs_agg = {
            (c, si, st, js): n
            for c, si, st, js, n in s.execute(
                text("SELECT campaign_id, site_id, step, state, n_jobs FROM job_counts")
            )
        }
        assert jobs_agg == jobs_truth
        xfer_truth = {
            (c, a, b, st): (n, nb)
            for c, a, b, st, n, nb in s.execute(
                text(
                    "SELECT coalesce(campaign_id, 0), source_site_id, dest_site_id, state, count(*), "
                    "sum(bytes) FROM transfers GROUP BY 1, 2, 3, 4"
                )
            )
        }
        xfer_agg = {
            (c, a, b, st): (n, nb)
            for c, a, b, st, n, nb in s.execute(
                text(
                    "SELECT campaign_id, source_site_id, dest_site_id, state, n_transfers, n_bytes "
                    "FROM transfer_counts"
                )
            )
        }
        assert xfer_agg == xfer_truth
        attempt_cols = (
            "count(*), sum(CASE WHEN a.exit_code = 0 THEN 1 ELSE 0 END), count(a.ended_at - a.started_at), "
            "coalesce(sum(a.ended_at - a.started_at), 0), max(a.ended_at - a.started_at), "
            "coalesce(sum(coalesce(a.cpu_user, 0) + coalesce(a.cpu_sys, 0)), 0), count(a.peak_rss), "
            "coalesce(sum(a.peak_rss), 0), max(a.peak_rss), coalesce(sum(a.read_bytes), 0), "
            "coalesce(sum(a.write_bytes), 0), min(a.started_at), max(a.ended_at)"
        )
        attempts_truth = {
            tuple(r[:3]): tuple(r[3:])
            for r in s.execute(
                text(
                    f"SELECT j.campaign_id, j.site_id, j.step, {attempt_cols} FROM attempts a "
                    "JOIN jobs j ON j.id = a.job_id GROUP BY 1, 2, 3"
                )
            )
        }
        attempts_agg = {
            tuple(r[:3]): tuple(r[3:])
            for r in s.execute(
                text(
                    "SELECT campaign_id, site_id, step, n_attempts, n_succeeded, n_wall, wall_s, wall_max, "
                    "cpu_s, n_rss, rss_sum, rss_max, read_bytes, write_bytes, first_started, last_ended "
                    "FROM attempt_counts"
                )
            )
        }
        assert attempts_agg.keys() == attempts_truth.keys()
        for key, row in attempts_truth.items():
            assert attempts_agg[key] == pytest.approx(row), key
        walls = [
            (c, si, st, w)
            for c, si, st, w in s.execute(
                text(
                    "SELECT j.campaign_id, j.site_id, j.step, a.ended_at - a.started_at FROM attempts a "
                    "JOIN jobs j ON j.id = a.job_id WHERE a.ended_at IS NOT NULL AND a.started_at IS NOT NULL"
                )
            )
        ]
        hist_truth: dict[tuple[int, int, str, int], int] = {}
        for c, si, st, w in walls:
            bucket = next((i for i, b in enumerate(DURATION_BUCKETS) if w <= b), len(DURATION_BUCKETS))
            hist_truth[(c, si, st, bucket)] = hist_truth.get((c, si, st, bucket), 0) + 1
        hist_agg = {
            (c, si, st, b): n
            for c, si, st, b, n in s.execute(
                text("SELECT campaign_id, site_id, step, bucket, n_attempts FROM attempt_durations")
            )
        }
        assert hist_agg == hist_truth
        for ds in s.scalars(select(Dataset)):
            n, b = s.execute(
                select(func.count(), func.coalesce(func.sum(File.size), 0)).where(File.dataset_id == ds.id)
            ).one()
            assert (ds.n_files, ds.n_bytes) == (n, b)


def test_register_files_with_replicas_at_two_sites(db: Database) -> None:
    ids, camp = _setup(db)
    with db.session() as s:
        ds = get_or_create_dataset(s, "dr1", "raw/tract0001")
        res = register_files(
            s,
            ds,
            _files("dr1/raw/t1", 500),
            replicas_at=[(ids["ncsa"], ReplicaState.AVAILABLE), (ids["in2p3"], ReplicaState.COPYING)],
        )
        attach_datasets(s, camp, [ds])
    assert (res.n_files, res.n_bytes, res.n_replicas) == (500, sum(100 + i for i in range(500)), 1000)
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Replica)) == 1000
        status = campaign_status(s, "dr1-test")
        assert s.scalar(select(func.count()).select_from(Event).where(Event.kind == "files.registered")) == 1
    by = {(r.site, r.state): (r.files, r.bytes) for r in status.replicas}
    assert by == {("ncsa", "AVAILABLE"): (500, res.n_bytes), ("in2p3", "COPYING"): (500, res.n_bytes)}
    _assert_aggregates_exact(db)


def test_second_registration_attaches_replicas_only_to_new_files(db: Database) -> None:
    ids, _ = _setup(db)
    with db.session() as s:
        a = get_or_create_dataset(s, "dr1", "a")
        b = get_or_create_dataset(s, "dr1", "b")
        register_files(s, a, _files("a", 10), replicas_at=[(ids["ncsa"], ReplicaState.AVAILABLE)])
        register_files(s, b, _files("b", 7), replicas_at=[(ids["in2p3"], ReplicaState.AVAILABLE)])
        register_files(s, a, _files("a2", 5), replicas_at=[(ids["in2p3"], ReplicaState.BAD)])
    with db.session() as s:
        rows = s.execute(
            select(File.dataset_id, Replica.site_id, Replica.state, func.count())
            .join(Replica, Replica.file_id == File.id)
            .group_by(File.dataset_id, Replica.site_id, Replica.state)
        ).all()
    assert sorted((d, si, st.name, n) for d, si, st, n in rows) == sorted(
        [(a, ids["ncsa"], "AVAILABLE", 10), (b, ids["in2p3"], "AVAILABLE", 7), (a, ids["in2p3"], "BAD", 5)]
    )
    _assert_aggregates_exact(db)


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        (FileRow("../etc/passwd", 1, "00000001"), "'..'"),
        (FileRow("a/../../x", 1, "00000001"), "'..'"),
        (FileRow("/abs/path", 1, "00000001"), "relative"),
        (FileRow("ok/name", -5, "00000001"), "negative size"),
        (FileRow("ok/name", 5, "xyz"), "adler32"),
        (FileRow("ok/name", 5, "0000000G"), "adler32"),
    ],
)
def test_bad_rows_are_rejected_and_nothing_is_written(db: Database, bad_row: FileRow, message: str) -> None:
    ids, _ = _setup(db)
    with db.session() as s:
        ds = get_or_create_dataset(s, "dr1", "raw")
    rows = [*_files("good", 50), bad_row, *_files("more", 3)]
    with pytest.raises(InvalidInputError, match=message), db.session() as s:
        register_files(s, ds, rows, replicas_at=[(ids["ncsa"], ReplicaState.AVAILABLE)])
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(File)) == 0
        assert s.scalar(select(Dataset.n_files).where(Dataset.id == ds)) == 0
    _assert_aggregates_exact(db)


def test_duplicate_name_rolls_back_whole_registration(db: Database) -> None:
    ids, _ = _setup(db)
    with db.session() as s:
        ds = get_or_create_dataset(s, "dr1", "raw")
        register_files(s, ds, _files("x", 5), replicas_at=[(ids["ncsa"], ReplicaState.AVAILABLE)])
    with pytest.raises(InvalidInputError, match="rejected by the database"), db.session() as s:
        register_files(s, ds, [*_files("y", 5), _files("x", 1)[0]])
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(File)) == 5
    _assert_aggregates_exact(db)


def test_unknown_dataset_is_not_found(db: Database) -> None:
    _setup(db)
    with pytest.raises(NotFoundError, match="dataset id 999"), db.session() as s:
        register_files(s, 999, _files("x", 1))


def test_random_replica_state_changes_keep_counts_exact(db: Database) -> None:
    ids, camp = _setup(db)
    with db.session() as s:
        dss = [get_or_create_dataset(s, "dr1", f"ds{i}") for i in range(3)]
        for i, ds in enumerate(dss):
            register_files(
                s,
                ds,
                _files(f"d{i}", 40, size0=1000 * (i + 1)),
                replicas_at=[(ids["ncsa"], ReplicaState.AVAILABLE)],
            )
        attach_datasets(s, camp, dss)
        file_ids = list(s.scalars(select(File.id)))
    rng = random.Random(7)
    for _ in range(12):
        picked = rng.sample(file_ids, 25)
        site = rng.choice(list(ids.values()))
        with db.session() as s:
            n = set_replica_states(s, [(f, site, rng.choice(list(ReplicaState))) for f in picked])
        assert n == 25
        _assert_aggregates_exact(db)
    with db.session() as s:
        status = campaign_status(s, camp)
        totals = replica_totals(s)
    assert sum(r.files for r in status.replicas) == sum(r.files for r in totals)


def test_replica_update_with_unknown_file_or_duplicate_key_changes_nothing(db: Database) -> None:
    ids, _ = _setup(db)
    with db.session() as s:
        ds = get_or_create_dataset(s, "dr1", "raw")
        register_files(s, ds, _files("x", 3), replicas_at=[(ids["ncsa"], ReplicaState.AVAILABLE)])
        fid = s.scalar(select(func.min(File.id)))
    assert fid is not None
    with pytest.raises(NotFoundError, match="1 of 2 files"), db.session() as s:
        set_replica_states(
            s, [(fid, ids["in2p3"], ReplicaState.COPYING), (10**9, ids["in2p3"], ReplicaState.COPYING)]
        )
    with pytest.raises(InvalidInputError, match="twice"), db.session() as s:
        set_replica_states(s, [(fid, ids["ncsa"], ReplicaState.BAD), (fid, ids["ncsa"], ReplicaState.LOST)])
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Replica)) == 3
        assert set(s.scalars(select(Replica.state))) == {ReplicaState.AVAILABLE}
    _assert_aggregates_exact(db)


def test_jobs_attempts_and_transfers_in_bulk(db: Database) -> None:
    ids, camp = _setup(db)
    with db.session() as s:
        n = add_jobs(
            s,
            camp,
            [
                (ids[site], step, data_id_key({"visit": v}), JobState.PENDING)
                for site in ids
                for step in ("calibrate", "warp")
                for v in range(30)
            ],
        )
        assert n == 120
    with db.session() as s:
        job_ids = list(s.scalars(select(Job.id).order_by(Job.id)))
        set_job_states(s, [(j, JobState.RUNNING) for j in job_ids[:50]])
        set_job_states(s, [(j, JobState.SUCCEEDED) for j in job_ids[:20]] + [(job_ids[20], JobState.FAILED)])
        add_attempts(
            s,
            [
                AttemptRow(
                    j, 1, 0, None, 100.0, 100.0 + 0.7 * k, 1.5, peak_rss=2**20 + k, read_bytes=k, host="h"
                )
                for k, j in enumerate(job_ids[:20])
            ]
            + [AttemptRow(job_ids[20], 1, 137, signal=9), AttemptRow(job_ids[20], 2, 1)],
        )
    _assert_aggregates_exact(db)
    with db.session() as s:  # a second batch lands on the same aggregate rows: sums add, extremes move
        add_attempts(
            s,
            [
                AttemptRow(job_ids[30 + k], 1, k % 2, None, 50.0, 50.0 + 9000.0 * k, 0.5, 0.25, 2**30)
                for k in range(3)
            ],
        )
    _assert_aggregates_exact(db)
    with db.session() as s:
        assert s.scalar(select(Job.n_attempts).where(Job.id == job_ids[20])) == 2
        assert s.scalar(select(func.count()).select_from(Attempt)) == 25
        status = campaign_status(s, "dr1-test")
        warp = {(p.site, p.step): p for p in step_profiles(s, "dr1-test")}[("ncsa", "warp")]
    assert (warp.attempts, warp.failed, warp.wall_max_s, warp.wall_mean_s) == (3, 1, 18000.0, 9000.0)
    assert (warp.cpu_s, warp.peak_rss_max, warp.peak_rss_mean) == (2.25, 2**30, 2**30)
    cal = {(x.site, x.step): x for x in status.steps}[("ncsa", "calibrate")]
    assert (cal.attempts, cal.failed_attempts, cal.started_at, cal.ended_at) == (
        22,
        2,
        100.0,
        100.0 + 0.7 * 19,
    )
    by = {(j.site, j.step, j.state): j.jobs for j in status.jobs}
    assert sum(by.values()) == 120
    assert by[("ncsa", "calibrate", "SUCCEEDED")] == 20
    assert by[("ncsa", "calibrate", "FAILED")] == 1
    # Same job and attempt number twice is refused, not duplicated.
    with pytest.raises(InvalidInputError), db.session() as s:
        add_attempts(s, [AttemptRow(job_ids[0], 1, 0)])
    # Same job (campaign, site, step, data id) twice is refused.
    with pytest.raises(InvalidInputError), db.session() as s:
        add_jobs(s, camp, [(ids["ncsa"], "calibrate", data_id_key({"visit": 0}), JobState.PENDING)])
    _assert_aggregates_exact(db)

    with db.session() as s:
        ds = get_or_create_dataset(s, "dr1", "raw")
        register_files(s, ds, _files("t", 10), replicas_at=[(ids["ncsa"], ReplicaState.AVAILABLE)])
        fids = list(s.scalars(select(File.id)))
        add_transfers(s, camp, [TransferRow(f, ids["ncsa"], ids["in2p3"], 1000) for f in fids])
    with db.session() as s:
        tids = list(s.scalars(text("SELECT id FROM transfers ORDER BY id")))
        set_transfer_states(s, [(t, TransferState.ACTIVE, None) for t in tids])
        set_transfer_states(
            s,
            [(t, TransferState.DONE, None) for t in tids[:6]]
            + [(tids[6], TransferState.FAILED, "checksum mismatch")],
        )
    _assert_aggregates_exact(db)
    with db.session() as s:
        status = campaign_status(s, "dr1-test")
        err, attempts, finished = s.execute(
            text("SELECT error, attempts, finished_at FROM transfers WHERE id = :i"), {"i": tids[6]}
        ).one()
    assert status.bytes_transferred() == 6000
    assert (err, attempts) == ("checksum mismatch", 1) and finished is not None


def test_status_of_unknown_campaign(db: Database) -> None:
    with pytest.raises(NotFoundError), db.session() as s:
        campaign_status(s, "nope")


def test_data_id_key_is_canonical() -> None:
    assert data_id_key({"visit": 1, "band": "r"}) == data_id_key({"band": "r", "visit": 1})


def test_replicas_naming_unknown_files_or_sites_are_refused(db: Database) -> None:
    """The replicas table has no foreign keys (migration 0008): the writers refuse what they would."""
    ids, _ = _setup(db)
    with db.session() as s:
        ds = get_or_create_dataset(s, "dr1", "raw")
        register_files(s, ds, _files("k", 3), replicas_at=[(ids["ncsa"], ReplicaState.AVAILABLE)])
        fid = s.scalar(select(func.min(File.id)))
    with pytest.raises(NotFoundError, match="site ids"), db.session() as s:
        register_files(s, ds, _files("k2", 2), replicas_at=[(999, ReplicaState.AVAILABLE)])
    with pytest.raises(NotFoundError, match="site ids"), db.session() as s:
        set_replica_states(s, [(fid, 999, ReplicaState.COPYING)])
    with pytest.raises(NotFoundError), db.session() as s:
        set_replica_states(s, [(10**9, ids["in2p3"], ReplicaState.COPYING)])
    with pytest.raises(NotFoundError), db.session() as s:
        register_files(s, 10**6, _files("k3", 2))
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Replica)) == 3
        assert s.scalar(select(func.count()).select_from(File)) == 3
    _assert_aggregates_exact(db)
