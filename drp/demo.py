"""The main job on embedded defaults: `drp demo`.

At this stage of the product it sets up a two-site deployment (lead ``ncsa`` and satellite ``in2p3``,
50/50 as in the IN2P3–LSST–NCSA agreement) under a work directory, writes a raw release into the lead
site's storage, registers it in bookkeeping with verified adler32 checksums, audits the storage
against the catalogue and reports the campaign status from the aggregates. Later stages (processing,
transfers, validation) extend this same command.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from bookkeeping import bulk
from bookkeeping.database import Database
from bookkeeping.models import File
from bookkeeping.queries import CampaignStatus, campaign_status
from bookkeeping.states import ReplicaState
from drp.errors import ConfigError, DrpError
from instrumentation.progress import ProgressFactory, no_progress
from sites.catalogue import SiteCatalogue, load_catalogue
from transfer.checksum import adler32_file, write_atomic

MARKER = ".drp-demo"
RELEASE = "dr-demo"

SITES_TOML = """\
# Demo deployment written by `drp demo`: the 2015 IN2P3–LSST–NCSA model, 50/50.
[[site]]
name = "ncsa"
role = "lead"
share = 0.5
storage = "file://{root}/storage/ncsa"
[site.compute]
backend = "local"
max_workers = 2

[[site]]
name = "in2p3"
role = "satellite"
share = 0.5
storage = "file://{root}/storage/in2p3"
[site.compute]
backend = "local"
max_workers = 2
"""


@dataclass(frozen=True)
class DemoSettings:
    workdir: Path
    tracts: int = 4
    visits_per_tract: int = 24
    file_kib: int = 256
    seed: int = 2013


@dataclass
class DemoResult:
    workdir: Path
    db_url: str
    sites_file: Path
    files_written: int = 0
    bytes_written: int = 0
    files_verified: int = 0
    mismatches: list[str] = field(default_factory=list)
    status: CampaignStatus | None = None


def prepare_workdir(workdir: Path) -> None:
    """Start from a clean work directory, deleting only one that an earlier demo created."""
    if workdir.exists() and any(workdir.iterdir()):
        if not (workdir / MARKER).exists():
            raise ConfigError(
                str(workdir),
                None,
                "directory is not empty and was not made by `drp demo`; choose another --workdir",
            )
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).write_text("created by drp demo; deleted and recreated by the next `drp demo`\n")


def run_demo(settings: DemoSettings, *, progress: ProgressFactory = no_progress) -> DemoResult:
    workdir = settings.workdir.resolve()
    prepare_workdir(workdir)
    sites_file = workdir / "sites.toml"
    sites_file.write_text(SITES_TOML.format(root=workdir))
    catalogue: SiteCatalogue = load_catalogue(sites_file)
    db_url = f"sqlite:///{workdir / 'drp.sqlite'}"
    result = DemoResult(workdir=workdir, db_url=db_url, sites_file=sites_file)

    db = Database(db_url)
    try:
        db.upgrade()
        db.check_schema()
        lead = catalogue.lead
        root = lead.storage_path
        if root is None:  # pragma: no cover - the demo catalogue is posix
            raise DrpError("the demo lead site needs file:// storage")
        rng = random.Random(settings.seed)
        with db.session() as session:
            ids = bulk.upsert_sites(session, [s.to_row() for s in catalogue.sites])
            campaign_id = bulk.create_campaign(session, "demo", RELEASE, {"seed": settings.seed})

        total = settings.tracts * settings.visits_per_tract
        dataset_ids: list[int] = []
        with progress("writing raw release", total) as advance:
            for tract in range(settings.tracts):
                rows: list[bulk.FileRow] = []
                for visit in range(settings.visits_per_tract):
                    name = f"{RELEASE}/raw/tract{tract:04d}/visit{tract * 1000 + visit:06d}.dat"
                    data = rng.randbytes(settings.file_kib * 1024)
                    checksum = write_atomic(root / name, data)
                    rows.append(bulk.FileRow(name, len(data), checksum))
                    result.files_written += 1
                    result.bytes_written += len(data)
                    advance(1)
                with db.session() as session:
                    ds = bulk.get_or_create_dataset(session, RELEASE, f"raw/tract{tract:04d}")
                    bulk.register_files(
                        session, ds, rows, replicas_at=[(ids[lead.name], ReplicaState.AVAILABLE)]
                    )
                dataset_ids.append(ds)
        with db.session() as session:
            bulk.attach_datasets(session, campaign_id, dataset_ids)

        # Audit: every catalogued file is read back from storage and its adler32 compared.
        with db.session() as session:
            catalogued = session.execute(select(File.name, File.size, File.adler32)).all()
        with progress("verifying adler32 on storage", len(catalogued)) as advance:
            for name, size, checksum in catalogued:
                got, got_size = adler32_file(root / name)
                if (got, got_size) == (checksum, size):
                    result.files_verified += 1
                else:
                    result.mismatches.append(name)
                advance(1)
        with db.session() as session:
            result.status = campaign_status(session, "demo")
    finally:
        db.dispose()
    return result
