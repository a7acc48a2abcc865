"""`drp`: the operators' command line. Thin on purpose: each command parses options and calls one
function of a package. Logging is configured here and nowhere else.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from drp import __version__
from drp.errors import EXIT_FAILED, EXIT_SCHEMA, DrpError, SchemaOutOfDateError

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
    from drp.synth import ReleaseConfig, generate_release, load_manifest
    from instrumentation.progress import terminal_progress

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
    from drp.validate import validate_release

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


# --- job ---------------------------------------------------------------------------------------
@cli.group(cls=DrpGroup)
def job() -> None:
    """Pipeline jobs: what every compute back-end runs."""


_STEP = click.Choice(["calibrate", "warp", "coadd", "measure", "merge"])


@job.command("run")
@click.argument("step", type=_STEP)
@click.option("--data-id", "data_id", required=True, metavar="JSON", help="e.g. '{\"visit\": 1000}'.")
@_site_root
@_release_name
@click.option("--json", "as_json", is_flag=True, help="Print the job result as JSON.")
def job_run(step: str, data_id: str, root: Path, release_name: str | None, as_json: bool) -> None:
    """Run one pipeline job. Exit 0 on success; 2 with one line naming the file on bad input."""
    from drp.pipeline.jobs import ReleaseContext, parse_data_id, run_job

    ctx = ReleaseContext.discover(root, release_name)
    result = run_job(ctx, ctx.check(step, parse_data_id(data_id)))
    if as_json:
        _emit_json(result.to_dict())
    else:
        click.echo(
            f"{step} {json.dumps(result.data_id)}: done in {result.seconds:.2f} s "
            f"-> {', '.join(result.outputs)}"
        )


@job.command("list")
@_site_root
@_release_name
@click.option("--step", type=_STEP, default=None, help="Only this step.")
@click.option("--tract", "tracts", type=int, multiple=True, help="Only jobs for these tracts (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (streamable).")
def job_list(
    root: Path, release_name: str | None, step: str | None, tracts: tuple[int, ...], as_json: bool
) -> None:
    """List the release's jobs in a valid execution order."""
    from drp.pipeline.jobs import STEPS, ReleaseContext

    ctx = ReleaseContext.discover(root, release_name)
    for j in ctx.jobs(set(tracts) or None, (step,) if step else tuple(STEPS)):
        if as_json:
            click.echo(json.dumps({"name": j.name, "step": j.step, "data_id": j.data_id}, sort_keys=True))
        else:
            click.echo(f"{j.name}\t{j.data_id_json()}")


# --- campaign ----------------------------------------------------------------------------------
@cli.group(cls=DrpGroup)
def campaign() -> None:
    """Create, drive and inspect campaigns."""


@campaign.command("status")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def campaign_status_cmd(ctx: click.Context, name: str, as_json: bool) -> None:
    """Files by site and replica state, jobs by site, step and state, transfers by link (from aggregates)."""
    from bookkeeping.queries import campaign_status

    database = _database(ctx)
    database.check_schema()
    with database.session() as session:
        status = campaign_status(session, name)
    if as_json:
        _emit_json(status.to_dict())
        return
    _print_status(status)


def _print_status(status: Any) -> None:
    title = f"campaign {status.campaign} [{status.state}]"
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


# --- demo --------------------------------------------------------------------------------------
@cli.command()
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("drp-work"),
    show_default=True,
    help="Directory for the demo (recreated on every run).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def demo(workdir: Path, as_json: bool) -> None:
    """Run the main job on embedded defaults: two sites, SQLite, posix storage."""
    from drp.demo import DemoSettings, run_demo
    from instrumentation.progress import terminal_progress

    result = run_demo(DemoSettings(workdir=workdir), progress=terminal_progress)
    status = result.status
    if as_json:
        out = asdict(result)
        out["status"] = status.to_dict() if status else None
        _emit_json(out)
    else:
        click.echo(f"work directory   {result.workdir}")
        click.echo(f"site catalogue   {result.sites_file}")
        click.echo(f"bookkeeping      {result.db_url}")
        click.echo(
            f"raw files        {result.files_written:,} written ({result.bytes_written / 2**20:.1f} MiB), "
            f"{result.files_verified:,} verified against the catalogue (adler32 + size)"
        )
        if status:
            _table(
                f"campaign {status.campaign} [{status.state}]: files by site and replica state",
                ["site", "state", "files", "bytes"],
                [[r.site, r.state, r.files, r.bytes] for r in status.replicas],
            )
    if result.mismatches:
        click.echo(f"drp: error: {len(result.mismatches)} files differ from the catalogue", err=True)
        sys.exit(EXIT_FAILED)


def main() -> None:
    try:
        cli(prog_name="drp")
    except SchemaOutOfDateError as err:  # raised outside a group's invoke (defensive)
        click.echo(f"drp: error: {err}", err=True)
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
