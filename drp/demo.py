"""The main job on embedded defaults: `drp demo`.

Sets up a two-site deployment (lead ``ncsa`` and satellite ``in2p3``, 50/50 as in the IN2P3–LSST–NCSA
agreement) under a work directory, generates the demo release into the lead's storage, writes a
``campaign.toml`` and drives the whole campaign on the embedded defaults (SQLite bookkeeping, posix
storage, the local executor, embedded replication): plan, register, replicate, process, collect,
cross-validate the overlap tract, consolidate. At the end every catalogued file is read back at every
site and its adler32 compared with the catalogue.

With ``--replication FILE`` the same campaign runs with another replication back-end, e.g. a Rucio
server whose conveyor and FTS3 move the data (see docs/data.md and scripts/demo-rucio.sh); with
``--satellite-compute FILE`` the satellite runs its DAG on another compute back-end, e.g. an HTCondor
pool (docs/workflow.md, scripts/demo-htcondor.sh).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bookkeeping import campaigns, files, jobs
from bookkeeping.database import Database
from bookkeeping.queries import CampaignStatus, campaign_status
from common.errors import ConfigError, DrpError
from drp.campaign import CampaignDriver, TickResult
from drp.campaign_config import load_campaign
from instrumentation.progress import ProgressFactory, no_progress
from science.synth import ReleaseConfig, generate_release
from sites.catalogue import SiteCatalogue, load_catalogue
from transfer.checksum import adler32_file

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
{satellite_compute}
[transfer]
backoff_s = 1
"""

CAMPAIGN_TOML = """\
# Demo campaign written by `drp demo`.
[campaign]
name = "demo"
release = "{release}"
sites = "sites.toml"
workdir = "."

[split]
overlap = [{overlap}]

[ticks]
transfer_seconds = 30
poll_seconds = 0.5
"""

SMALL = ReleaseConfig(
    name=RELEASE,
    skymap=ReleaseConfig().skymap.model_copy(update={"tracts_x": 2, "tracts_y": 1}),
    bands=("g", "r"),
    image_pix=900,
)


@dataclass(frozen=True)
class DemoSettings:
    workdir: Path
    small: bool = False  # a 2-tract, 2-band release for a quick look
    overlap: tuple[int, ...] = (0,)
    replication: Path | None = None  # a TOML file with a [replication] table, e.g. Rucio in conveyor mode
    release: str = RELEASE  # with Rucio, the DID scope of the release's files
    satellite_compute: Path | None = None  # a TOML file with a [compute] table, e.g. HTCondor for in2p3


LOCAL_COMPUTE = 'backend = "local"\nmax_workers = 2\n'


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise ValueError(f"cannot write {v!r} as TOML")


def compute_table(path: Path) -> str:
    """The body of a ``[compute]`` table read from ``path``, to become the satellite's ``[site.compute]``
    (its settings are validated with the rest of the site catalogue)."""
    import tomllib

    try:
        data = tomllib.loads(path.read_text())
    except OSError as err:
        raise ConfigError(str(path), None, f"cannot read: {err.strerror or err}") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(str(path), None, f"not valid TOML: {err}") from err
    table = data.get("compute")
    if not isinstance(table, dict) or "backend" not in table:
        raise ConfigError(str(path), "compute", 'the file needs a [compute] table with a backend = "…" key')
    extra = sorted(set(data) - {"compute"})
    if extra:
        raise ConfigError(str(path), extra[0], "only a [compute] table belongs in this file")
    return "".join(f"{k} = {_toml_value(v)}\n" for k, v in table.items())


def replication_table(path: Path) -> str:
    """The text of a TOML file holding only a ``[replication]`` table, to append to the demo's sites."""
    import tomllib

    try:
        content = path.read_text()
        data = tomllib.loads(content)
    except OSError as err:
        raise ConfigError(str(path), None, f"cannot read: {err.strerror or err}") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(str(path), None, f"not valid TOML: {err}") from err
    if not isinstance(data.get("replication"), dict):
        raise ConfigError(str(path), "replication", "the file needs a [replication] table")
    extra = sorted(set(data) - {"replication"})
    if extra:
        raise ConfigError(str(path), extra[0], "only a [replication] table belongs in this file")
    return content


@dataclass
class DemoResult:
    workdir: Path
    db_url: str
    sites_file: Path
    campaign_file: Path
    state: str = ""
    message: str = ""
    seconds: float = 0.0
    files: int = 0
    bytes: int = 0
    verified: dict[str, int] = field(default_factory=dict)  # site -> catalogued files verified there
    mismatches: list[str] = field(default_factory=list)  # "site: name" that differ from the catalogue
    jobs: int = 0
    attempts: int = 0
    validations: int = 0
    validations_passed: int = 0
    status: CampaignStatus | None = None
    report: Path | None = None


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


def run_demo(
    settings: DemoSettings,
    *,
    progress: ProgressFactory = no_progress,
    on_tick: Callable[[TickResult], None] | None = None,
) -> DemoResult:
    started = time.monotonic()
    workdir = settings.workdir.resolve()
    prepare_workdir(workdir)
    sites_file = workdir / "sites.toml"
    satellite = (
        LOCAL_COMPUTE if settings.satellite_compute is None else compute_table(settings.satellite_compute)
    )
    sites_text = SITES_TOML.format(root=workdir, satellite_compute=satellite)
    if settings.replication is not None:
        sites_text += f"\n# from {settings.replication}\n" + replication_table(settings.replication)
    sites_file.write_text(sites_text)
    catalogue: SiteCatalogue = load_catalogue(sites_file)
    release_cfg = (SMALL if settings.small else ReleaseConfig()).model_copy(update={"name": settings.release})
    campaign_file = workdir / "campaign.toml"
    campaign_file.write_text(
        CAMPAIGN_TOML.format(release=release_cfg.name, overlap=", ".join(str(t) for t in settings.overlap))
    )
    db_url = f"sqlite:///{workdir / 'drp.sqlite'}"
    result = DemoResult(workdir=workdir, db_url=db_url, sites_file=sites_file, campaign_file=campaign_file)
    lead_root = catalogue.lead.storage_path
    if lead_root is None:  # pragma: no cover - the demo catalogue is posix
        raise DrpError("the demo lead site needs file:// storage")
    generate_release(release_cfg, lead_root, progress=progress)
    db = Database(db_url)
    try:
        db.upgrade()
        driver = CampaignDriver(db, load_campaign(campaign_file), catalogue)
        driver.create()
        final = driver.run(on_tick=on_tick)
        result.state, result.message = final.after, final.message
        with db.session() as session:
            catalogued = files.catalogued(session)
            camp = driver.campaign().id
            result.jobs, result.attempts = jobs.totals(session, camp)
            result.validations, result.validations_passed = campaigns.validation_totals(session, camp)
        result.files = len(catalogued)
        result.bytes = sum(size for _, size, _ in catalogued)
        # Audit: every catalogued file is read back at every site and its adler32 compared.
        for site in catalogue.sites:
            root = site.storage_path
            assert root is not None
            result.verified[site.name] = 0
            with progress(f"verifying adler32 at {site.name}", len(catalogued)) as advance:
                for name, size, checksum in catalogued:
                    try:
                        ok = adler32_file(root / name) == (checksum, size)
                    except FileNotFoundError:
                        ok = False
                    if ok:
                        result.verified[site.name] += 1
                    else:
                        result.mismatches.append(f"{site.name}: {name}")
                    advance(1)
        with db.session() as session:
            result.status = campaign_status(session, "demo")
        from drp.report import build_report

        result.report = build_report(db, driver.cfg, catalogue).html
    finally:
        db.dispose()
    result.seconds = time.monotonic() - started
    return result
