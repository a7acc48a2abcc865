"""`drp`: the operators' command line. Thin on purpose: each command parses options and calls one
function of a package. Logging is configured here and nowhere else.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from bookkeeping.states import JobState
from common import __version__
from common.errors import EXIT_FAILED, EXIT_IN_PROGRESS, EXIT_SCHEMA, DrpError, SchemaOutOfDateError

EPILOG = """\b
Exit codes: 0 done, 1 failed, 2 usage or configuration error,
3 in progress (campaign tick), 4 database schema out of date.
Environment: DRP_DB_URL (bookkeeping database), DRP_SITES (site catalogue)."""


class DrpGroup(click.Group):
    """Turns :class:`DrpError` into one line on stderr and the error's exit code (no traceback)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DrpError as err:
            click.echo(f"drp: error: {err}", err=True)
            ctx.exit(err.exit_code)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if level != "debug":  # Alembic narrates every plugin and migration step at INFO
        logging.getLogger("alembic").setLevel(logging.WARNING)


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def _table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(
            col, justify="right" if col in ("share", "files", "bytes", "jobs", "transfers") else "left"
        )
    for row in rows:
        table.add_row(*(f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v) for v in row))
    Console(soft_wrap=True).print(table)


@click.group(cls=DrpGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="drp")
@click.option(
    "--db",
    "db_url",
    envvar="DRP_DB_URL",
    default=None,
    metavar="URL",
    help="Bookkeeping database URL (default sqlite:///drp.sqlite; env DRP_DB_URL).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="Log verbosity (logs go to stderr).",
)
@click.pass_context
def cli(ctx: click.Context, db_url: str | None, log_level: str) -> None:
    """satdrp: run a survey's data release across a lead centre and satellite centres.

    Split the release between sites, move data with verified transfers, process it, keep books of
    every file, replica, job and attempt, and cross-validate the overlap between sites.
    """
    _setup_logging(log_level)
    ctx.obj = {"db_url": db_url}


def _database(ctx: click.Context) -> Any:
    from bookkeeping.database import Database

    return Database.from_env(ctx.obj["db_url"])


_campaign_opt = click.option("--campaign", required=True, help="Campaign name.")
_sites_opt = click.option(
    "--sites",
    "sites_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Site catalogue (default ./sites.toml or env DRP_SITES).",
)
_workdir_opt = click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="DRP_WORKDIR",
    default=Path("drp-work"),
    show_default=True,
    help="Where workflows and back-end files are written (env DRP_WORKDIR).",
)


def _checked_db(ctx: click.Context) -> Any:
    database = _database(ctx)
    database.check_schema()
    return database


# --- db ----------------------------------------------------------------------------------------
@cli.group(cls=DrpGroup)
def db() -> None:
    """Create and migrate the bookkeeping database."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target Alembic revision.")
@click.pass_context
def db_upgrade(ctx: click.Context, revision: str) -> None:
    """Create the schema or migrate it to REVISION (safe to repeat)."""
    database = _database(ctx)
    before = database.current_revision()
    database.upgrade(revision)
    after = database.current_revision()
    click.echo(f"{database!r}: {before or 'empty'} -> {after}")


@db.command("downgrade")
@click.argument("revision")
@click.option("--yes", is_flag=True, help="Confirm: downgrading drops tables and their data.")
@click.pass_context
def db_downgrade(ctx: click.Context, revision: str, yes: bool) -> None:
    """Migrate the schema down to REVISION ('base' drops everything)."""
    if not yes:
        raise click.UsageError("downgrading drops data; pass --yes to confirm")
    database = _database(ctx)
    database.downgrade(revision)
    click.echo(f"{database!r}: now at {database.current_revision() or 'base'}")


@db.command("current")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def db_current(ctx: click.Context, as_json: bool) -> None:
    """Show the schema revision and whether it is the one this satdrp expects (exit 4 if not)."""
    from bookkeeping.database import expected_head

    database = _database(ctx)
    current, head = database.current_revision(), expected_head()
    if as_json:
        _emit_json(
            {"database": repr(database), "current": current, "expected": head, "up_to_date": current == head}
        )
    else:
        click.echo(
            f"{database!r}: current {current or 'empty'}, expected {head}"
            + ("" if current == head else " (run `drp db upgrade`)")
        )
    if current != head:
        ctx.exit(EXIT_SCHEMA)


# --- sites -------------------------------------------------------------------------------------
@cli.group(cls=DrpGroup)
def sites() -> None:
    """Inspect the site catalogue (sites.toml)."""


@sites.command("list")
@click.option(
    "--sites",
    "sites_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Site catalogue (default ./sites.toml or env DRP_SITES).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def sites_list(sites_path: Path | None, as_json: bool) -> None:
    """List the sites of the catalogue with role, share, storage and compute back-end."""
    from sites.catalogue import load_catalogue

    catalogue = load_catalogue(sites_path)
    if as_json:
        _emit_json([s.model_dump(mode="json") for s in catalogue.sites])
        return
    _table(
        None,
        ["name", "role", "share", "storage", "compute"],
        [[s.name, s.role.value, f"{s.share:.2f}", s.storage, s.compute.backend] for s in catalogue.sites],
    )


@sites.command("sync")
@_sites_opt
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def sites_sync(ctx: click.Context, sites_path: Path | None, as_json: bool) -> None:
    """Record the catalogue's sites in bookkeeping (insert or update; safe to repeat)."""
    from bookkeeping.sites import upsert_sites
    from sites.catalogue import load_catalogue

    catalogue = load_catalogue(sites_path)
    with _checked_db(ctx).session() as session:
        ids = upsert_sites(session, [s.to_row() for s in catalogue.sites])
    if as_json:
        _emit_json(ids)
    else:
        click.echo(f"{len(ids)} sites in bookkeeping: {', '.join(sorted(ids))}")


# --- doctor -------------------------------------------------------------------------------------
@cli.command("doctor", cls=click.Command)
@_sites_opt
@click.option(
    "--push-gateway",
    metavar="URL",
    envvar="DRP_PUSH_GATEWAY",
    default=None,
    help="Also check this Prometheus Pushgateway (env DRP_PUSH_GATEWAY).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def doctor_cmd(ctx: click.Context, sites_path: Path | None, push_gateway: str | None, as_json: bool) -> None:
    """Check that this host can run the campaign; run it first. One row per component and check: the
    bookkeeping database (client, reachable, schema at head), the site catalogue, and each back-end
    it names (client installed and its version; scheduler, storage and service endpoints reachable;
    credentials present and accepted, never shown). Writes nothing.

    Exit 0 all good, 1 something unreachable, without credentials or behind, 2 a configuration
    problem (a missing client module included: the row says which extra installs it).
    """
    from drp.doctor import doctor

    report = doctor(ctx.obj["db_url"], sites_path, push_gateway)
    if as_json:
        _emit_json(report.to_dict())
    else:  # grouped lines, readable at any width and in cron mail
        last = None
        for r in report.rows:
            if r.component != last:
                click.echo(r.component)
                last = r.component
            click.echo(f"  {r.health.value:<14} {r.check}: {r.detail}")
        bad = sum(r.health.value != "ok" for r in report.rows)
        click.echo(f"{bad} problem{'s' if bad != 1 else ''} found" if bad else "all checks passed")
    sys.exit(report.exit_code)


# --- release ------------------------------------------------------------------------------------
_site_root = click.option(
    "--root", type=click.Path(file_okay=False, exists=True, path_type=Path), required=True, help="Site root."
)
_release_name = click.option(
    "--release", "release_name", default=None, help="Release name (default: the only one under the root)."
)


@cli.group(cls=DrpGroup)
def release() -> None:
    """Synthetic data releases (truth, reference catalogue, raw exposures)."""


@release.command("generate")
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Site storage root to write the release under.",
)
@click.option("--name", default="dr-demo", show_default=True, help="Release name (top directory).")
@click.option("--seed", type=int, default=2013, show_default=True)
@click.option("--tracts", type=(int, int), default=(2, 2), show_default=True, help="Tract grid NX NY.")
@click.option("--bands", default="g,r,i", show_default=True, help="Comma-separated bands.")
@click.option("--visits-per-band", type=int, default=2, show_default=True, help="Per tract and band.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
def release_generate(
    root: Path, name: str, seed: int, tracts: tuple[int, int], bands: str, visits_per_band: int, as_json: bool
) -> None:
    """Generate a deterministic synthetic release from a seed."""
    from instrumentation.progress import terminal_progress
    from science.synth import ReleaseConfig, generate_release, load_manifest

    base = ReleaseConfig()
    cfg = ReleaseConfig(
        name=name,
        seed=seed,
        bands=tuple(b.strip() for b in bands.split(",") if b.strip()),
        visits_per_band=visits_per_band,
        skymap=base.skymap.model_copy(update={"tracts_x": tracts[0], "tracts_y": tracts[1]}),
    )
    manifest_path = generate_release(cfg, root, progress=terminal_progress)
    man = load_manifest(root, name)
    summary = {
        "manifest": str(manifest_path),
        "visits": len(man["visits"]),
        "truth_rows": man["truth_rows"],
        "refcat_rows": man["refcat_rows"],
    }
    if as_json:
        _emit_json(summary)
    else:
        click.echo(
            f"release {name}: {summary['visits']} raw exposures, {summary['truth_rows']:,} truth objects, "
            f"{summary['refcat_rows']:,} reference stars; manifest {manifest_path}"
        )


@release.command("validate")
@_site_root
@_release_name
@click.option("--min-snr", type=float, default=20.0, show_default=True, help="S/N cut for stars.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def release_validate(root: Path, release_name: str | None, min_snr: float, as_json: bool) -> None:
    """Accuracy of the processed release against its truth catalogue (needs the merged tract tables)."""
    from science.validate import validate_release

    report = validate_release(root, release_name, min_snr=min_snr)
    if as_json:
        _emit_json(report.to_dict())
        return
    click.echo(
        f"{report.n_objects:,} primary objects, {report.n_matched:,} matched to {report.n_truth:,} truth; "
        f"astrometric rms {report.astrometric_rms_mas:.1f} mas "
        f"({report.n_astrometric} stars, S/N > {min_snr:g})"
    )
    _table(
        "photometry vs truth (PSF flux, stars)",
        ["band", "stars", "bias (mmag)", "scatter (mmag)", "chi scatter"],
        [
            [b.band, b.n_stars, f"{b.bias_mmag:+.1f}", f"{b.scatter_mmag:.1f}", f"{b.chi_scatter:.2f}"]
            for b in report.bands
        ],
    )
    click.echo(
        f"{report.completeness_band}-band S/N 10 at {report.mag_snr10:.2f} mag; completeness of stars "
        f"brighter: {report.completeness_snr10:.1%} (isolated: {report.completeness_snr10_isolated:.1%})"
    )


# --- jobs --------------------------------------------------------------------------------------
_STEP = click.Choice(["calibrate", "warp", "coadd", "measure", "merge"])


@cli.group(cls=DrpGroup)
def jobs() -> None:
    """Pipeline jobs: run one (what every back-end runs), list them, show their profiles and logs."""


@jobs.command("run")
@click.argument("step", type=_STEP, required=False)
@click.option("--data-id", "data_id", metavar="JSON", help="With STEP, e.g. '{\"visit\": 1000}'.")
@click.option("--job", "job_name", metavar="NAME", help="Instead of STEP and --data-id: a job name.")
@_site_root
@_release_name
@click.option("--json", "as_json", is_flag=True, help="Print the job result as JSON.")
def jobs_run(
    step: str | None,
    data_id: str | None,
    job_name: str | None,
    root: Path,
    release_name: str | None,
    as_json: bool,
) -> None:
    """Run one pipeline job. Exit 0 on success; 2 with one line naming the file on bad input."""
    from science.pipeline.jobs import Job, ReleaseContext, parse_data_id, run_job

    if (job_name is None) == (step is None or data_id is None):
        raise click.UsageError("give either STEP with --data-id, or --job NAME")
    job = Job.from_name(job_name) if job_name else Job(str(step), parse_data_id(str(data_id)))
    ctx = ReleaseContext.discover(root, release_name)
    result = run_job(ctx, ctx.check(job.step, job.data_id))
    if as_json:
        _emit_json(result.to_dict())
    else:
        click.echo(
            f"{job.step} {json.dumps(result.data_id)}: done in {result.seconds:.2f} s "
            f"-> {', '.join(result.outputs)}"
        )


@jobs.command("ls")
@_campaign_opt
@click.option("--site", default=None, help="Only this site.")
@click.option("--step", type=_STEP, default=None, help="Only this step.")
@click.option("--state", type=click.Choice([s.name.lower() for s in JobState]), default=None)
@click.option("--limit", type=int, default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def jobs_ls(
    ctx: click.Context,
    campaign: str,
    site: str | None,
    step: str | None,
    state: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List a campaign's jobs from bookkeeping with state and attempts."""
    from bookkeeping.jobs import list_jobs
    from science.pipeline.jobs import job_name

    with _checked_db(ctx).session() as session:
        rows = list_jobs(
            session,
            campaign,
            site=site,
            step=step,
            state=JobState[state.upper()] if state else None,
            limit=limit,
            name_of=job_name,
        )
    if as_json:
        _emit_json([asdict(r) for r in rows])
        return
    _table(
        None,
        ["job", "site", "state", "attempts", "memory MB"],
        [[r.name, r.site, r.state.lower(), r.attempts, r.request_memory_mb or ""] for r in rows],
    )


@jobs.command("show")
@_campaign_opt
@click.argument("name")
@click.option("--site", default=None, help="Only this site.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def jobs_show(ctx: click.Context, campaign: str, name: str, site: str | None, as_json: bool) -> None:
    """One job and every attempt: exit status, CPU, memory, I/O, host, error."""
    from bookkeeping.jobs import job_detail
    from science.pipeline.jobs import Job, job_name

    job = Job.from_name(name)
    with _checked_db(ctx).session() as session:
        details = job_detail(session, campaign, job.step, job.data_id, site=site, name_of=job_name)
    if as_json:
        _emit_json([d.to_dict() for d in details])
        return
    for d in details:
        j = d.job
        click.echo(f"{j.name} at {j.site}: {j.state.lower()}, {j.attempts} attempt(s), data id {j.data_id}")
        _table(
            None,
            [
                "#",
                "exit",
                "wall s",
                "user s",
                "sys s",
                "peak RSS MiB",
                "read MiB",
                "write MiB",
                "host",
                "error",
            ],
            [
                [
                    a.number,
                    a.exit_code if a.signal is None else f"sig {a.signal}",
                    _num(a.wall_seconds, ".2f"),
                    _num(a.cpu_user, ".2f"),
                    _num(a.cpu_sys, ".2f"),
                    _num(a.peak_rss and a.peak_rss / 2**20, ".1f"),
                    _num(a.read_bytes and a.read_bytes / 2**20, ".1f"),
                    _num(a.write_bytes and a.write_bytes / 2**20, ".1f"),
                    a.host or "",
                    a.error or "",
                ]
                for a in d.attempts
            ],
        )


def _num(v: float | None, fmt: str) -> str:
    return "" if v is None else format(v, fmt)


@jobs.command("profile")
@_campaign_opt
@click.option("--site", default=None, help="Only this site.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def jobs_profile(ctx: click.Context, campaign: str, site: str | None, as_json: bool) -> None:
    """Resource use per site and step: wall time, CPU, efficiency, peak memory, I/O."""
    from bookkeeping.jobs import step_profiles

    with _checked_db(ctx).session() as session:
        rows = step_profiles(session, campaign, site=site)
    if as_json:
        _emit_json([asdict(r) for r in rows])
        return
    _table(
        f"campaign {campaign}: attempts by site and step",
        [
            "site",
            "step",
            "attempts",
            "failed",
            "wall mean s",
            "wall max s",
            "CPU s",
            "CPU/wall",
            "peak RSS max MiB",
            "read MiB",
            "write MiB",
        ],
        [
            [
                r.site,
                r.step,
                r.attempts,
                r.failed,
                f"{r.wall_mean_s:.2f}",
                f"{r.wall_max_s:.2f}",
                f"{r.cpu_s:.1f}",
                f"{r.cpu_efficiency:.2f}",
                f"{r.peak_rss_max / 2**20:.0f}",
                f"{r.read_bytes / 2**20:.1f}",
                f"{r.write_bytes / 2**20:.1f}",
            ]
            for r in rows
        ],
    )


@jobs.command("logs")
@_campaign_opt
@click.argument("name")
@click.option("--site", default=None, help="Site (needed when the job runs at several).")
@click.option("--attempt", type=int, default=None, help="Attempt number (default: the latest).")
@click.option("--stream", type=click.Choice(["stderr", "stdout", "both"]), default="both", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (paths and contents).")
@click.pass_context
def jobs_logs(
    ctx: click.Context,
    campaign: str,
    name: str,
    site: str | None,
    attempt: int | None,
    stream: str,
    as_json: bool,
) -> None:
    """Print the stdout/stderr of a job's attempt (from the paths in its job report)."""
    from bookkeeping.jobs import job_detail
    from instrumentation.profiler import read_report
    from science.pipeline.jobs import Job, job_name

    job = Job.from_name(name)
    with _checked_db(ctx).session() as session:
        details = job_detail(session, campaign, job.step, job.data_id, site=site, name_of=job_name)
    if len(details) > 1:
        raise click.UsageError(f"{name} runs at {', '.join(d.job.site for d in details)}: pass --site")
    attempts = details[0].attempts
    chosen = [a for a in attempts if attempt is None or a.number == attempt]
    if not chosen or chosen[-1].report_path is None:
        raise click.UsageError(f"{name}: no recorded attempt {attempt or ''}".rstrip())
    report = read_report(Path(str(chosen[-1].report_path)))
    out: dict[str, Any] = {"job": name, "attempt": report.attempt}
    for which, path in (("stdout", report.stdout_path), ("stderr", report.stderr_path)):
        if stream in (which, "both"):
            try:
                text = Path(path).read_text(errors="replace")
            except OSError as err:
                text = f"(log not readable: {err.strerror}; tail from the report follows)\n" + getattr(
                    report, f"{which}_tail"
                )
            out[which] = {"path": path, "text": text}
    if as_json:
        _emit_json(out)
        return
    for which in ("stdout", "stderr"):
        if which in out:
            click.echo(f"==> {out[which]['path']} <==")
            click.echo(out[which]["text"].rstrip("\n"))


# --- plan ---------------------------------------------------------------------------------------
@cli.group(cls=DrpGroup)
def plan() -> None:
    """Split a release between sites: processing assignments and replication rules."""


@plan.command("create")
@_campaign_opt
@click.option("--release", "release_name", required=True, help="Release name (under the lead's root).")
@_sites_opt
@click.option("--overlap", "overlap", type=int, multiple=True, help="Overlap tract, processed everywhere.")
@click.option("--json", "as_json", is_flag=True, help="Print the stored plan as JSON.")
@click.pass_context
def plan_create(
    ctx: click.Context,
    campaign: str,
    release_name: str,
    sites_path: Path | None,
    overlap: tuple[int, ...],
    as_json: bool,
) -> None:
    """Split the release by the catalogue's shares (a new version moves only what must move)."""
    from drp.processing import plan_campaign
    from sites.catalogue import load_catalogue

    stored = plan_campaign(_checked_db(ctx), campaign, release_name, load_catalogue(sites_path), overlap)
    _print_plan(stored, as_json)


@plan.command("show")
@_campaign_opt
@click.option("--version", type=int, default=None, help="Plan version (default: the latest).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def plan_show(ctx: click.Context, campaign: str, version: int | None, as_json: bool) -> None:
    """Which site processes which tract, and the replication rules that feed them."""
    from bookkeeping.plans import load_plan

    with _checked_db(ctx).session() as session:
        stored = load_plan(session, campaign, version)
    if stored is None:
        raise click.UsageError(f"campaign {campaign!r} has no split plan yet (run `drp plan create`)")
    _print_plan(stored, as_json)


def _print_plan(stored: Any, as_json: bool) -> None:
    p = stored.plan
    per_site = {s: sorted(p.tracts_of(s)) for s in p.sites}
    if as_json:
        _emit_json(
            {
                "campaign": stored.campaign,
                "version": stored.version,
                "shares": stored.shares,
                "overlap": sorted(p.overlap),
                "assignment": {str(t): s for t, s in p.assignment.items()},
                "site_tracts": per_site,
                "rules": [
                    {"dataset": d, "expression": e, "copies": c, "state": st.lower()}
                    for d, e, c, st in stored.rules
                ],
            }
        )
        return
    n = len(p.assignment)
    _table(
        f"campaign {stored.campaign}: split plan v{stored.version} ({n} tracts + {len(p.overlap)} overlap)",
        ["site", "share", "own tracts", "with overlap", "tracts"],
        [
            [
                s,
                f"{stored.shares[s]:.2f}",
                sum(1 for v in p.assignment.values() if v == s),
                len(ts),
                _ranges(ts),
            ]
            for s, ts in per_site.items()
        ],
    )
    _table(
        "replication rules",
        ["dataset", "expression", "copies", "state"],
        [[d, e, c, st.lower()] for d, e, c, st in stored.rules],
    )


def _ranges(values: list[int]) -> str:
    """1,2,3,7 -> '1-3,7' (tract lists can be long)."""
    out: list[str] = []
    for v in values:
        if out and "-" not in out[-1].split(",")[-1] and int(out[-1].split(",")[-1]) == v - 1:
            out[-1] += f"-{v}"
        elif out and "-" in out[-1] and int(out[-1].rsplit("-", 1)[1]) == v - 1:
            out[-1] = out[-1].rsplit("-", 1)[0] + f"-{v}"
        else:
            out.append(str(v))
    return ",".join(out)


# --- workflow -----------------------------------------------------------------------------------
@cli.group(cls=DrpGroup)
def workflow() -> None:
    """A site's share of the release as a DAG, run by the site's compute back-end."""


@workflow.command("list")
@_site_root
@_release_name
@click.option("--step", type=_STEP, default=None, help="Only this step.")
@click.option("--tract", "tracts", type=int, multiple=True, help="Only jobs for these tracts (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (streamable).")
def workflow_list(
    root: Path, release_name: str | None, step: str | None, tracts: tuple[int, ...], as_json: bool
) -> None:
    """List the release's jobs in a valid execution order, with their parents."""
    from science.pipeline.jobs import ReleaseContext
    from science.workflow import build

    ctx = ReleaseContext.discover(root, release_name)
    for node in build(ctx, set(tracts) or None):
        if step and node.step != step:
            continue
        if as_json:
            click.echo(node.to_json())
        else:
            click.echo(f"{node.name}\t{json.dumps(node.data_id, sort_keys=True)}\t{','.join(node.parents)}")


@workflow.command("run")
@_campaign_opt
@click.option("--site", "site_name", required=True, help="Site whose share to run.")
@_sites_opt
@_workdir_opt
@click.option("--detach", is_flag=True, help="Submit and return (local: a background executor).")
@click.option("--restart", is_flag=True, help="Re-run what did not succeed (after a failure or cancel).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def workflow_run(
    ctx: click.Context,
    campaign: str,
    site_name: str,
    sites_path: Path | None,
    workdir: Path,
    detach: bool,
    restart: bool,
    as_json: bool,
) -> None:
    """Build the site's DAG from the split plan, run it on the site's back-end, ingest job reports.

    Exit 0 when every job succeeded, 3 while running (--detach), 1 if jobs failed or it was cancelled.
    """
    from drp import processing
    from sites.catalogue import load_catalogue

    site = load_catalogue(sites_path).get(site_name)
    report, ingested = processing.run(
        _checked_db(ctx),
        campaign,
        site,
        processing.site_root(site),
        workdir,
        wait=not detach,
        restart=restart,
    )
    _print_run(report, ingested, as_json)


@workflow.command("status")
@_campaign_opt
@click.option("--site", "site_name", required=True)
@_sites_opt
@_workdir_opt
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def workflow_status(
    ctx: click.Context, campaign: str, site_name: str, sites_path: Path | None, workdir: Path, as_json: bool
) -> None:
    """The back-end's view of the site's run (reports ingested first). Exit codes as for `run`."""
    from drp import processing
    from sites.catalogue import load_catalogue

    site = load_catalogue(sites_path).get(site_name)
    report, ingested = processing.status(_checked_db(ctx), campaign, site, workdir)
    _print_run(report, ingested, as_json)


@workflow.command("cancel")
@_campaign_opt
@click.option("--site", "site_name", required=True)
@_sites_opt
@_workdir_opt
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def workflow_cancel(
    campaign: str, site_name: str, sites_path: Path | None, workdir: Path, as_json: bool
) -> None:
    """Stop the site's run; finished jobs stay finished, `run --restart` resumes."""
    from drp import processing
    from sites.catalogue import load_catalogue

    report = processing.cancel(campaign, load_catalogue(sites_path).get(site_name), workdir)
    if as_json:
        _emit_json(report.to_dict())
    else:
        click.echo(f"{report.backend}: {report.state.value} {report.message}".rstrip())


def _print_run(report: Any, ingested: Any, as_json: bool) -> None:
    from sites.compute import RunState

    if as_json:
        _emit_json({"run": report.to_dict(), "ingested": ingested.to_dict()})
    else:
        rows = [[step, st, n] for step, c in report.counts.items() for st, n in c.items()]
        _table(
            f"{report.backend} run {report.run_id or '-'}: {report.state.value}",
            ["step", "state", "jobs"],
            rows,
        )
        if report.message:
            click.echo(report.message)
        click.echo(f"ingested {ingested.attempts} new attempt(s)")
        for path in ingested.unreadable:
            click.echo(f"drp: warning: unreadable job report {path}", err=True)
    if report.state is RunState.RUNNING:
        sys.exit(EXIT_IN_PROGRESS)
    if report.state is not RunState.SUCCEEDED:
        sys.exit(EXIT_FAILED)


# --- campaign ----------------------------------------------------------------------------------
@cli.group(cls=DrpGroup)
def campaign() -> None:
    """Create, drive and inspect campaigns."""


_campaign_file = click.argument(
    "campaign_file", type=click.Path(dir_okay=False, path_type=Path), metavar="CAMPAIGN_TOML"
)


def _driver(ctx: click.Context, campaign_file: Path) -> Any:
    from drp.campaign import CampaignDriver
    from drp.campaign_config import load_campaign
    from sites.catalogue import load_catalogue

    cfg = load_campaign(campaign_file)
    return CampaignDriver(_checked_db(ctx), cfg, load_catalogue(cfg.sites_path))


def _print_tick(result: Any, as_json: bool) -> None:
    if as_json:
        _emit_json(result.to_dict())
    elif result.before == result.after:
        click.echo(f"{result.campaign} [{result.after}] {result.message}")
    else:
        click.echo(f"{result.campaign} {result.before} → {result.after}: {result.message}")


@campaign.command("create")
@_campaign_file
@click.pass_context
def campaign_create(ctx: click.Context, campaign_file: Path) -> None:
    """Record the campaign defined in CAMPAIGN_TOML (and its sites) in bookkeeping; safe to repeat."""
    driver = _driver(ctx, campaign_file)
    created = driver.create()
    click.echo(f"campaign {driver.name} {'created' if created else 'exists already'}")


@campaign.command("tick")
@_campaign_file
@click.option(
    "--push-gateway", metavar="URL", default=None, help="Push the tick's metrics to this Pushgateway."
)
@click.option(
    "--textfile",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the tick's metrics in node_exporter textfile format (atomically).",
)
@click.option(
    "--site", "metrics_site", default=None, help="Grouping key site for pushed metrics (default: the lead)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def campaign_tick(
    ctx: click.Context,
    campaign_file: Path,
    push_gateway: str | None,
    textfile: Path | None,
    metrics_site: str | None,
    as_json: bool,
) -> None:
    """Do one bounded, idempotent step and exit (for cron). A tick already running makes this one exit 0
    with a message. Exit 0 done, 3 in progress, 1 failed. With --push-gateway/--textfile the campaign's
    metrics and the tick's duration and outcome reach Prometheus although the process exits."""
    import time

    from drp.locking import CampaignBusy

    driver = _driver(ctx, campaign_file)
    driver.create()
    started = time.monotonic()
    try:
        result = driver.tick()
    except CampaignBusy as busy:
        click.echo(f"drp: {busy}", err=True)
        return
    _print_tick(result, as_json)
    if push_gateway or textfile:
        from instrumentation.exporter import PushError, push, tick_registry, write_textfile

        registry = tick_registry(driver.db, driver.name, result, time.monotonic() - started)
        if textfile:
            write_textfile(registry, textfile)
        if push_gateway:
            try:
                push(registry, push_gateway, driver.name, metrics_site or driver.catalogue.lead.name)
            except PushError as err:  # the tick did its work; say the push failed, keep its exit code
                click.echo(f"drp: warning: {err}", err=True)
    sys.exit(result.exit_code)


@campaign.command("plan")
@_campaign_file
@click.pass_context
def campaign_plan(ctx: click.Context, campaign_file: Path) -> None:
    """Create the campaign if needed and run its plan phase (then see `drp plan show`)."""
    from bookkeeping.states import CampaignState

    driver = _driver(ctx, campaign_file)
    driver.create()
    state = driver.campaign().state
    if state is not CampaignState.CREATED:
        click.echo(f"campaign {driver.name} is {state.name}: already planned")
        return
    _print_tick(driver.tick(), False)


@campaign.command("run")
@_campaign_file
@click.option("--json", "as_json", is_flag=True, help="Print the last tick as JSON.")
@click.pass_context
def campaign_run(ctx: click.Context, campaign_file: Path, as_json: bool) -> None:
    """Tick until the campaign is DONE or FAILED (safe to interrupt and run again: it resumes)."""
    driver = _driver(ctx, campaign_file)
    driver.create()
    result = driver.run(on_tick=None if as_json else lambda r: _print_tick(r, False))
    if as_json:
        _print_tick(result, True)
    sys.exit(result.exit_code)


@campaign.command("report")
@_campaign_file
@click.option("--json", "as_json", is_flag=True, help="Print the report's numbers as JSON.")
@click.pass_context
def campaign_report(ctx: click.Context, campaign_file: Path, as_json: bool) -> None:
    """Write the HTML report with PNG plots (sky map by site, jobs, transfers, accuracy against truth,
    overlap residuals) under WORKDIR/reports/CAMPAIGN/ and print its path."""
    from drp.campaign_config import load_campaign
    from drp.report import build_report
    from sites.catalogue import load_catalogue

    cfg = load_campaign(campaign_file)
    report = build_report(_checked_db(ctx), cfg, load_catalogue(cfg.sites_path))
    if as_json:
        _emit_json({**report.data, "html": str(report.html)})
    else:
        click.echo(str(report.html))


@campaign.command("retry")
@_campaign_file
@click.pass_context
def campaign_retry(ctx: click.Context, campaign_file: Path) -> None:
    """Send a FAILED campaign back to the phase it failed in (failed transfers re-queued)."""
    click.echo(_driver(ctx, campaign_file).retry())


@campaign.command("cancel")
@_campaign_file
@click.pass_context
def campaign_cancel(ctx: click.Context, campaign_file: Path) -> None:
    """Stop the campaign and its sites' runs (CANCELLED; job reports and copies already made stay)."""
    click.echo(_driver(ctx, campaign_file).cancel())


@campaign.command("status")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def campaign_status_cmd(ctx: click.Context, name: str, as_json: bool) -> None:
    """The operators' dashboard: phases with start, duration, ticks and failures; files by site and replica
    state; jobs by site, step and state with attempts, failures and time span; transfers by link; the
    overlap validation per tract. Exit 1 if the campaign FAILED."""
    from bookkeeping.queries import campaign_status

    database = _database(ctx)
    database.check_schema()
    with database.session() as session:
        status = campaign_status(session, name)
    if as_json:
        _emit_json(status.to_dict())
    else:
        _print_status(status)
    if status.state == "FAILED":
        sys.exit(EXIT_FAILED)


def _when(ts: float | None) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _print_status(status: Any) -> None:
    title = f"campaign {status.campaign} [{status.state}]"
    if status.message:
        click.echo(f"{title}: {status.message}")
    if status.phases:
        _table(
            "phases",
            ["phase", "started", "seconds", "ticks", "failures", "last message"],
            [
                [
                    p.phase,
                    _when(p.started_at),
                    f"{p.seconds:.1f}",
                    p.ticks,
                    p.failures,
                    (p.message or "")[:80],
                ]
                for p in status.phases
            ],
        )
    if status.steps:
        _table(
            "attempts by site and step",
            ["site", "step", "attempts", "failed", "first start", "seconds"],
            [
                [
                    st.site,
                    st.step,
                    st.attempts,
                    st.failed_attempts,
                    _when(st.started_at),
                    f"{st.seconds:.1f}" if st.seconds is not None else "-",
                ]
                for st in status.steps
            ],
        )
    if status.validations:
        _table(
            "overlap validation",
            ["tract", "sites", "checks", "failed"],
            [[v.tract, v.sites, v.checks, v.failed] for v in status.validations],
        )
    _table(
        f"{title}: files by site and replica state",
        ["site", "state", "files", "bytes"],
        [[r.site, r.state, r.files, r.bytes] for r in status.replicas],
    )
    if status.jobs:
        _table(
            "jobs by site, step and state",
            ["site", "step", "state", "jobs"],
            [[j.site, j.step, j.state, j.jobs] for j in status.jobs],
        )
    if status.transfers:
        _table(
            "transfers by link and state",
            ["source", "dest", "state", "transfers", "bytes"],
            [[t.source, t.dest, t.state, t.transfers, t.bytes] for t in status.transfers],
        )


# --- data, rules, transfer -------------------------------------------------------------------------
def _replication(sites_path: Path | None) -> tuple[Any, Any]:
    from sites.catalogue import load_catalogue, require_clients
    from transfer.replication.registry import get_replication

    catalogue = load_catalogue(sites_path)
    require_clients(catalogue)  # every mover and back-end it may use, before any work
    return catalogue, get_replication(catalogue)


@cli.group(cls=DrpGroup)
def data() -> None:
    """Datasets, files and replicas in the catalogue."""


@data.command("register")
@click.option("--site", "site_name", required=True, help="Site whose storage holds the files (file://).")
@click.option("--dataset", required=True, metavar="SCOPE:NAME", help="Dataset to register them in.")
@click.option("--path", "subdir", default="", help="Directory under the site root (default: all of it).")
@click.option("--campaign", default=None, help="Attach the dataset to this campaign as an input.")
@_sites_opt
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def data_register(
    ctx: click.Context,
    site_name: str,
    dataset: str,
    subdir: str,
    campaign: str | None,
    sites_path: Path | None,
    as_json: bool,
) -> None:
    """Checksum the files under a site directory and register them, AVAILABLE at that site."""
    from instrumentation.progress import terminal_progress
    from transfer.ops import register_from_storage

    catalogue, backend = _replication(sites_path)
    result = register_from_storage(
        _checked_db(ctx),
        catalogue,
        backend,
        site_name,
        dataset,
        subdir,
        campaign=campaign,
        progress=terminal_progress,
    )
    if as_json:
        _emit_json(asdict(result))
    else:
        click.echo(
            f"{dataset}: {result.n_files:,} files ({result.n_bytes:,} bytes) registered at {site_name}"
        )


@data.command("ls")
@click.option("--scope", default=None, help="Only this scope.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def data_ls(ctx: click.Context, scope: str | None, as_json: bool) -> None:
    """Datasets with their size and how many files each site holds (AVAILABLE, and other states)."""
    from bookkeeping.files import dataset_summaries

    with _checked_db(ctx).session() as session:
        rows = dataset_summaries(session, scope)
    if as_json:
        _emit_json([asdict(r) for r in rows])
        return
    _table(
        None,
        ["dataset", "files", "bytes", "available at", "other"],
        [
            [
                r.dataset,
                r.files,
                r.bytes,
                ", ".join(f"{s} {n}" for s, n in sorted(r.available.items())) or "-",
                "; ".join(f"{s} " + ", ".join(f"{k} {v}" for k, v in st.items()) for s, st in r.other.items())
                or "-",
            ]
            for r in rows
        ],
    )


@data.command("replicas")
@click.argument("dataset", metavar="SCOPE:NAME")
@click.option("--site", "site_name", default=None, help="Only this site.")
@_sites_opt
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def data_replicas(
    ctx: click.Context, dataset: str, site_name: str | None, sites_path: Path | None, as_json: bool
) -> None:
    """Every replica of a dataset's files, with its state."""
    from transfer.ops import iter_replicas

    _, backend = _replication(sites_path)
    with _checked_db(ctx).session() as session:
        rows = list(iter_replicas(session, backend, dataset, site=site_name))
    if as_json:
        _emit_json([dict(zip(("file", "site", "state", "bytes", "adler32"), r, strict=True)) for r in rows])
        return
    _table(None, ["file", "site", "state", "bytes", "adler32"], [list(r) for r in rows])


@cli.group(cls=DrpGroup)
def rules() -> None:
    """Replication rules: keep N copies of a dataset on the sites an expression selects."""


def _rule_dict(r: Any) -> dict[str, Any]:
    out = asdict(r)
    out["state"] = r.state.name
    return out


@rules.command("add")
@click.argument("dataset", metavar="SCOPE:NAME")
@click.argument("expression")
@click.option("--copies", type=click.IntRange(1, 100), default=1, show_default=True)
@click.option("--campaign", default=None, help="Account the rule and its transfers to this campaign.")
@_sites_opt
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def rules_add(
    ctx: click.Context,
    dataset: str,
    expression: str,
    copies: int,
    campaign: str | None,
    sites_path: Path | None,
    as_json: bool,
) -> None:
    """Add a rule, e.g. `drp rules add dr1:raw/tract0042 'site=in2p3'` (idempotent). The engine
    (`drp transfer run`) then makes the copies."""
    _, backend = _replication(sites_path)
    with _checked_db(ctx).session() as session:
        info = backend.add_rule(session, dataset, expression, copies, campaign=campaign)
    if as_json:
        _emit_json(_rule_dict(info))
    else:
        click.echo(f"rule {info.id}: {info.dataset} → {', '.join(info.sites) or '-'} [{info.state.name}]")


@rules.command("ls")
@click.option("--state", type=click.Choice(["REPLICATING", "OK", "STUCK", "SUSPENDED"], case_sensitive=False))
@click.option("--dataset", default=None, metavar="SCOPE:NAME")
@_sites_opt
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def rules_ls(
    ctx: click.Context, state: str | None, dataset: str | None, sites_path: Path | None, as_json: bool
) -> None:
    """Rules with their state, placement, lock counts and, when STUCK, why. Exit 1 if any is STUCK."""
    from bookkeeping.states import RuleState

    _, backend = _replication(sites_path)
    with _checked_db(ctx).session() as session:
        rows = backend.rules(session, dataset=dataset, state=RuleState[state.upper()] if state else None)
    if as_json:
        _emit_json([_rule_dict(r) for r in rows])
    else:
        _table(
            None,
            ["id", "dataset", "expression", "sites", "state", "ok", "replicating", "stuck", "reason"],
            [
                [
                    r.id,
                    r.dataset,
                    r.expression,
                    ",".join(r.sites),
                    r.state.name,
                    r.locks_ok,
                    r.locks_replicating,
                    r.locks_stuck,
                    r.stuck_reason or "",
                ]
                for r in rows
            ],
        )
    if any(r.state is RuleState.STUCK for r in rows):
        sys.exit(EXIT_FAILED)


@rules.command("show")
@click.argument("rule_id", type=int)
@_sites_opt
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def rules_show(ctx: click.Context, rule_id: int, sites_path: Path | None, as_json: bool) -> None:
    """One rule: state, placement, locks, the stuck reason, and its transfers that are not done."""
    from bookkeeping.states import RuleState
    from bookkeeping.transfers import list_transfers

    _, backend = _replication(sites_path)
    with _checked_db(ctx).session() as session:
        info = backend.rule(session, rule_id)
        pending = [t for t in list_transfers(session, rule=rule_id, limit=100_000) if t.state != "DONE"]
    if as_json:
        _emit_json({**_rule_dict(info), "transfers_not_done": [asdict(t) for t in pending]})
    else:
        click.echo(f"rule {info.id}: {info.dataset} → {info.expression} ×{info.copies}")
        click.echo(f"  state     {info.state.name}")
        click.echo(f"  sites     {', '.join(info.sites) or '-'}")
        click.echo(
            f"  locks     {info.locks_ok} ok, {info.locks_replicating} replicating, {info.locks_stuck} stuck"
        )
        if info.stuck_reason:
            click.echo(f"  reason    {info.stuck_reason}")
        for t in pending[:20]:
            click.echo(
                f"  transfer {t.id} {t.file} {t.source}→{t.dest} {t.state} ×{t.attempts} {t.error or ''}"
            )
        if len(pending) > 20:
            click.echo(f"  … and {len(pending) - 20} more transfers not done (--json lists all)")
    if info.state is RuleState.STUCK:
        sys.exit(EXIT_FAILED)


@cli.group(cls=DrpGroup)
def transfer() -> None:
    """Transfers between sites: run the engine, list, retry."""


@transfer.command("run")
@click.option(
    "--max-seconds", type=float, default=None, help="Stop after this long (cron); default: until idle."
)
@_sites_opt
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def transfer_run(
    ctx: click.Context, max_seconds: float | None, sites_path: Path | None, as_json: bool
) -> None:
    """Advance the rules and copy until nothing is queued (verified copies only become AVAILABLE).

    Exit 0 when idle with nothing failed, 3 when stopped by --max-seconds with work left, 1 if
    transfers were given up (see `drp rules ls --state stuck`).
    """
    from transfer.engine import TransferEngine

    catalogue, backend = _replication(sites_path)
    engine = TransferEngine(_checked_db(ctx), catalogue, backend)
    bar = _engine_progress()
    try:
        report = engine.run(max_seconds=max_seconds, progress=bar)
    finally:
        engine.close()
        bar.close()
    if as_json:
        _emit_json(asdict(report))
    else:
        click.echo(
            f"{report.done:,} copied ({report.bytes_done / 2**20:,.1f} MiB), {report.retried:,} retried, "
            f"{report.failed:,} given up, {report.pending:,} pending"
        )
        for e in report.errors[:5]:
            click.echo(f"  error: {e}", err=True)
    if report.failed:
        sys.exit(EXIT_FAILED)
    if report.pending:
        sys.exit(EXIT_IN_PROGRESS)


class _EngineBar:
    """A progress line for the transfer engine: a rich bar on a terminal, log lines otherwise."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.task: Any = None
        self.last = 0.0

    def __call__(self, r: Any) -> None:
        import time

        total = r.done + r.failed + r.pending
        if sys.stderr.isatty():
            if self.bar is None:
                from rich.progress import Progress

                self.bar = Progress(transient=False)
                self.bar.start()
                self.task = self.bar.add_task("transfers", total=total)
            self.bar.update(self.task, completed=r.done + r.failed, total=total)
        elif time.monotonic() - self.last >= 5:
            self.last = time.monotonic()
            logging.getLogger("drp.progress").info(
                "transfers: %d done, %d failed, %d pending", r.done, r.failed, r.pending
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _engine_progress() -> _EngineBar:
    return _EngineBar()


@transfer.command("ls")
@click.option(
    "--state",
    type=click.Choice(["QUEUED", "SUBMITTED", "ACTIVE", "DONE", "FAILED", "CANCELED"], case_sensitive=False),
)
@click.option("--rule", "rule_id", type=int, default=None)
@click.option("--limit", type=int, default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def transfer_ls(
    ctx: click.Context, state: str | None, rule_id: int | None, limit: int, as_json: bool
) -> None:
    """Transfers, newest first, with attempts, duration and the last error."""
    from bookkeeping.states import TransferState
    from bookkeeping.transfers import list_transfers

    with _checked_db(ctx).session() as session:
        rows = list_transfers(
            session, state=TransferState[state.upper()] if state else None, rule=rule_id, limit=limit
        )
    if as_json:
        _emit_json([asdict(r) for r in rows])
        return
    _table(
        None,
        ["id", "file", "link", "state", "attempts", "bytes", "seconds", "error"],
        [
            [
                r.id,
                r.file,
                f"{r.source}→{r.dest}",
                r.state,
                r.attempts,
                r.bytes,
                f"{r.seconds:.2f}" if r.seconds is not None else "",
                r.error or "",
            ]
            for r in rows
        ],
    )


@transfer.command("retry")
@click.argument("transfer_ids", type=int, nargs=-1)
@click.option("--rule", "rule_id", type=int, default=None, help="Every failed transfer of this rule.")
@click.option("--all", "all_failed", is_flag=True, help="Every failed transfer.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def transfer_retry(
    ctx: click.Context, transfer_ids: tuple[int, ...], rule_id: int | None, all_failed: bool, as_json: bool
) -> None:
    """Queue failed transfers again with a fresh retry budget (then `drp transfer run`)."""
    from bookkeeping.transfers import retry_failed

    if not (transfer_ids or rule_id is not None or all_failed):
        raise click.UsageError("give transfer ids, --rule ID or --all")
    with _checked_db(ctx).session() as session:
        n = retry_failed(session, ids=list(transfer_ids) or None, rule=rule_id)
    if as_json:
        _emit_json({"requeued": n})
    else:
        click.echo(f"{n} transfer(s) queued again")


# --- disaster recovery ---------------------------------------------------------------------------
@cli.group(cls=DrpGroup)
def dr() -> None:
    """Disaster recovery: replica coverage, storage audits, recovery, full copies, site failover.

    Nothing here deletes a catalogued replica. Dark files (on storage, not catalogued) are only
    deleted with `audit --delete-dark`, and never when they are the last copy of a catalogued file.
    """


_dr_max_seconds = click.option(
    "--max-seconds", type=float, default=None, help="Stop after this long (exit 3 if work is left)."
)


@contextmanager
def _engine_bar_unless(dry_run: bool) -> Iterator[Any]:
    """The engine's progress bar for commands that copy (none in a dry run), always closed."""
    bar = None if dry_run else _engine_progress()
    try:
        yield bar
    finally:
        if bar is not None:
            bar.close()


@dr.command("status")
@click.option("--release", "scope", default=None, help="Only this release (catalogue scope).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def dr_status(ctx: click.Context, scope: str | None, as_json: bool) -> None:
    """Per site and dataset type, how much has a verified replica there; what lacks a second copy.

    Exit 0 when every file has at least two verified copies, 1 otherwise.
    """
    from transfer.dr import status

    with _checked_db(ctx).session() as session:
        st = status(session, scope=scope)
    if as_json:
        _emit_json(st.to_dict())
    else:
        sites = sorted(st.sites)
        _table(
            "verified replicas (AVAILABLE) per site",
            ["release", "type", "files", "GiB", *sites],
            [
                [t.scope, t.type, f"{t.files:,}", f"{t.bytes / 2**30:,.2f}"]
                + [_pct(t.available.get(x, 0), t.files) for x in sites]
                for t in st.types
            ],
        )
        down = [x for x, ok in st.sites.items() if not ok]
        if down:
            click.echo(f"failed over (unavailable): {', '.join(down)}")
        click.echo(
            f"{st.files:,} files: {st.single_copy:,} with a single verified copy "
            f"({', '.join(f'{k} {v:,}' for k, v in st.single_copy_at.items()) or 'none'}), "
            f"{st.no_copy:,} with none"
        )
        for name, where in st.examples:
            click.echo(f"  {name}: {where}")
    sys.exit(st.exit_code)


def _pct(n: int, total: int) -> str:
    return f"{n:,} ({100 * n / total:.1f}%)" if total else "-"


@dr.command("audit")
@click.option("--site", "site_name", required=True, help="Site whose storage to walk.")
@click.option("--verify-checksums", is_flag=True, help="Read every file and compare its adler32 too.")
@click.option(
    "--sample",
    type=click.FloatRange(0, 1, min_open=True),
    default=None,
    help="Check only this fraction of the catalogued files (by hash of the name; no walk, no dark files).",
)
@click.option("--prefix", default="", help="Only this directory under the site root (e.g. dr1/coadd).")
@click.option(
    "--delete-dark", is_flag=True, help="Delete dark files (never the last copy of a catalogued file)."
)
@click.option("--workers", type=click.IntRange(1, 64), default=4, show_default=True, help="Checksum threads.")
@click.option("--dry-run", is_flag=True, help="Report only: record nothing, declare nothing, delete nothing.")
@_sites_opt
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def dr_audit(
    ctx: click.Context,
    site_name: str,
    verify_checksums: bool,
    sample: float | None,
    prefix: str,
    delete_dark: bool,
    workers: int,
    dry_run: bool,
    sites_path: Path | None,
    as_json: bool,
) -> None:
    """Compare a site's storage with the catalogue: LOST (catalogued, absent), CORRUPT (size or adler32
    differs), DARK (present, not catalogued there).

    Findings are recorded (time and reason) and LOST/CORRUPT replicas declared to the replication
    back-end, which queues fresh copies for the rules that need them; `drp dr recover` finishes the
    job. Exit 0 when nothing is lost or corrupt (dark files are reported), 1 otherwise.
    """
    from instrumentation.progress import terminal_progress
    from transfer.dr import audit

    catalogue, backend = _replication(sites_path)
    report = audit(
        _checked_db(ctx),
        catalogue,
        backend,
        site_name,
        verify_checksums=verify_checksums,
        sample=sample,
        prefix=prefix,
        delete_dark=delete_dark,
        dry_run=dry_run,
        workers=workers,
        progress=terminal_progress,
    )
    if as_json:
        _emit_json(report.to_dict())
    else:
        counts = report.to_dict()["counts"]
        rate = report.bytes_read / 2**20 / report.seconds if report.seconds else 0.0
        click.echo(
            f"audit {report.audit_id or '(dry run)'} of {site_name}: {report.checked:,} of "
            f"{report.catalogued:,} catalogued replicas checked"
            + (
                f", {report.bytes_read / 2**20:,.1f} MiB checksummed ({rate:,.0f} MiB/s)"
                if report.checksums
                else ""
            )
            + f" in {report.seconds:.1f} s: {counts['LOST']} lost, {counts['CORRUPT']} corrupt, "
            f"{counts['DARK']} dark"
        )
        if report.findings:
            _table(
                None,
                ["kind", "file", "reason", "action"],
                [[f.kind.value, f.name, f.reason, f.action or ""] for f in report.findings[:200]],
            )
        if len(report.findings) > 200:
            click.echo(f"  … {len(report.findings) - 200} more (--json lists all)")
        if report.outside:
            click.echo(
                "not judged (no catalogued files of these types here): "
                + ", ".join(f"{k} ({v:,})" for k, v in report.outside.items())
            )
    sys.exit(report.exit_code)


@dr.command("recover")
@click.option("--site", "site_name", required=True, help="Site whose BAD/LOST replicas to restore.")
@_dr_max_seconds
@click.option("--dry-run", is_flag=True, help="Say what would be copied and what cannot be; change nothing.")
@_sites_opt
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def dr_recover(
    ctx: click.Context,
    site_name: str,
    max_seconds: float | None,
    dry_run: bool,
    sites_path: Path | None,
    as_json: bool,
) -> None:
    """Re-copy the site's BAD and LOST replicas from a healthy site (verified copies only).

    Files with no verified copy anywhere else are listed as unrecoverable and left in place. Exit 0 when
    everything was restored, 1 if something could not be, 3 if --max-seconds left copies pending.
    """
    from transfer.dr import recover

    catalogue, backend = _replication(sites_path)
    with _engine_bar_unless(dry_run) as bar:
        report = recover(
            _checked_db(ctx),
            catalogue,
            backend,
            site_name,
            dry_run=dry_run,
            max_seconds=max_seconds,
            on_round=bar,
        )
    if as_json:
        _emit_json(report.to_dict())
    else:
        verb = "would re-copy" if dry_run else "recovered"
        done = report.to_recover if dry_run else report.recovered
        click.echo(
            f"{site_name}: {verb} {done:,} of {report.to_recover:,} replicas"
            + ("" if dry_run else f" ({report.bytes / 2**20:,.1f} MiB), {report.pending:,} pending")
            + f"; {len(report.unrecoverable):,} unrecoverable, {len(report.failed):,} failed"
        )
        for name, why in report.unrecoverable[:50]:
            click.echo(f"  UNRECOVERABLE {name}: {why}")
        for name, why in report.failed[:50]:
            click.echo(f"  FAILED {name}: {why}")
    sys.exit(report.exit_code)


@dr.command("replicate")
@click.option("--to", "site_name", required=True, help="Site that must hold the full release.")
@click.option("--release", "scope", required=True, help="Release (catalogue scope), e.g. dr1.")
@_dr_max_seconds
@click.option("--dry-run", is_flag=True, help="Say how much is missing; change nothing.")
@_sites_opt
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def dr_replicate(
    ctx: click.Context,
    site_name: str,
    scope: str,
    max_seconds: float | None,
    dry_run: bool,
    sites_path: Path | None,
    as_json: bool,
) -> None:
    """Make a site hold every file of a release: one rule per dataset (`site=S`), then verified copies.

    Idempotent. Exit 0 when the site holds everything, 1 if a rule is STUCK, 3 if work is left.
    """
    from transfer.dr import replicate

    catalogue, backend = _replication(sites_path)
    with _engine_bar_unless(dry_run) as bar:
        report = replicate(
            _checked_db(ctx),
            catalogue,
            backend,
            site_name,
            scope,
            dry_run=dry_run,
            max_seconds=max_seconds,
            on_round=bar,
        )
    if as_json:
        _emit_json(report.to_dict())
    else:
        click.echo(
            f"{site_name}: {report.missing_files:,} files ({report.missing_bytes / 2**30:,.2f} GiB) of "
            f"{report.datasets:,} datasets were missing"
            + (
                ""
                if dry_run
                else f"; {report.rules_added:,} rules added, {report.copied:,} copied, "
                f"{report.failed:,} given up, {report.pending:,} still missing"
            )
        )
        for line in report.unreachable[:20]:
            click.echo(f"  STUCK {line}")
    sys.exit(report.exit_code)


@dr.command("failover")
@_campaign_file
@click.option("--from", "source", required=True, help="The site that is lost or must stop processing.")
@click.option("--to", "target", required=True, help="The site that takes over its unfinished tracts.")
@click.option(
    "--include-finished",
    is_flag=True,
    help="Move the source's finished tracts too (its storage is lost: their outputs cannot be read).",
)
@click.option("--dry-run", is_flag=True, help="Say which tracts would move; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def dr_failover(
    ctx: click.Context,
    campaign_file: Path,
    source: str,
    target: str,
    include_finished: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Mark a site unavailable and move its unfinished processing, and the rules that feed it, to
    another site; the campaign then continues (`drp campaign tick`). Reversed by `drp dr failback`.

    Rules are suspended and replaced, never deleted; queued copies to the lost site are cancelled.
    """
    from drp.failover import failover

    report = failover(
        _driver(ctx, campaign_file), source, target, include_finished=include_finished, dry_run=dry_run
    )
    _print_failover(report, as_json)


@dr.command("failback")
@_campaign_file
@click.option("--site", "site_name", required=True, help="The failed-over site that is back.")
@click.option("--dry-run", is_flag=True, help="Say which tracts would go back; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def dr_failback(
    ctx: click.Context, campaign_file: Path, site_name: str, dry_run: bool, as_json: bool
) -> None:
    """Give a site back the tracts moved away by its failover that are not finished yet, make it
    available again and restore its rules (the replacements are suspended)."""
    from drp.failover import failback

    _print_failover(failback(_driver(ctx, campaign_file), site_name, dry_run=dry_run), as_json)


def _print_failover(report: Any, as_json: bool) -> None:
    if as_json:
        _emit_json(report.to_dict())
        return
    prefix = "(dry run) " if report.dry_run else ""
    click.echo(
        f"{prefix}{report.action} {report.from_site} → {report.to_site}: "
        f"{len(report.tracts_moved)} tract(s) move ({_ranges(report.tracts_moved) or 'none'}), "
        f"{len(report.tracts_kept)} stay ({_ranges(report.tracts_kept) or 'none'})"
    )
    if not report.dry_run:
        click.echo(
            f"  split plan v{report.plan_version}; {len(report.rules_replaced)} rule(s) replaced, "
            f"{report.transfers_cancelled} queued copies and {report.jobs_cancelled} jobs cancelled; "
            f"campaign {report.state_before} → {report.state_after}"
        )


# --- metrics -------------------------------------------------------------------------------------
@cli.group(cls=DrpGroup)
def metrics() -> None:
    """Prometheus metrics: a long-running exporter; ticks push their own (see `campaign tick --help`)."""


@metrics.command("serve")
@click.option(
    "--listen",
    default="127.0.0.1:9478",
    show_default=True,
    help="HOST:PORT to serve /metrics on (loopback unless you say otherwise).",
)
@click.option(
    "--refresh",
    "refresh_s",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds between recomputations of the job and transfer profiles (aggregates are read per scrape).",
)
@click.pass_context
def metrics_serve(ctx: click.Context, listen: str, refresh_s: float) -> None:
    """Serve bookkeeping's metrics for Prometheus until SIGINT/SIGTERM."""
    from instrumentation.exporter import serve

    logging.getLogger("drp.metrics").info("serving metrics on http://%s/metrics", listen)
    serve(_checked_db(ctx), listen, refresh_s=refresh_s)


# --- demo --------------------------------------------------------------------------------------
@cli.command()
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("drp-work"),
    show_default=True,
    help="Directory for the demo (recreated on every run).",
)
@click.option(
    "--small", is_flag=True, help="A 2-tract, 2-band release: the whole campaign in about a minute."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def demo(workdir: Path, small: bool, as_json: bool) -> None:
    """Run the main job on embedded defaults: a two-site campaign (ncsa lead, in2p3 satellite, 50/50)
    on SQLite, posix storage and the local executor, from plan to cross-validated, consolidated release."""
    from drp.demo import DemoSettings, run_demo
    from instrumentation.progress import terminal_progress

    def tick(r: Any) -> None:
        if r.before != r.after:
            logging.getLogger("drp.campaign").info("%s → %s: %s", r.before, r.after, r.message)

    result = run_demo(DemoSettings(workdir=workdir, small=small), progress=terminal_progress, on_tick=tick)
    status = result.status
    if as_json:
        out = asdict(result)
        out["status"] = status.to_dict() if status else None
        _emit_json(out)
    else:
        click.echo(f"campaign         demo [{result.state}] in {result.seconds:.0f} s: {result.message}")
        click.echo(f"work directory   {result.workdir}")
        click.echo(f"site catalogue   {result.sites_file}")
        click.echo(f"campaign file    {result.campaign_file}")
        click.echo(f"bookkeeping      {result.db_url}")
        click.echo(
            f"files            {result.files:,} ({result.bytes / 2**20:,.1f} MiB) catalogued; verified at "
            + ", ".join(f"{s} {n:,}" for s, n in result.verified.items())
        )
        click.echo(f"jobs             {result.jobs:,} with {result.attempts:,} profiled attempts")
        click.echo(f"overlap checks   {result.validations_passed}/{result.validations} passed")
        click.echo(f"report           {result.report or '-'}")
        if status:
            _table(
                "files by site and replica state",
                ["site", "state", "files", "bytes"],
                [[r.site, r.state, r.files, r.bytes] for r in status.replicas],
            )
            if status.jobs:
                _table(
                    "jobs by site, step and state",
                    ["site", "step", "state", "jobs"],
                    [[j.site, j.step, j.state, j.jobs] for j in status.jobs],
                )
    if result.mismatches:
        click.echo(f"drp: error: {len(result.mismatches)} replicas differ from the catalogue", err=True)
        sys.exit(EXIT_FAILED)
    if result.state != "DONE":
        click.echo(f"drp: error: the campaign ended {result.state}: {result.message}", err=True)
        sys.exit(EXIT_FAILED)


def main() -> None:
    try:
        cli(prog_name="drp")
    except SchemaOutOfDateError as err:  # raised outside a group's invoke (defensive)
        click.echo(f"drp: error: {err}", err=True)
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
