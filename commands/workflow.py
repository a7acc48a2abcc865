"""`drp workflow`: a site's DAG on its compute back-end."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import render
from .context import (
    STEP,
    DrpGroup,
    campaign_opt,
    checked_db,
    release_name_opt,
    site_root_opt,
    sites_opt,
    workdir_opt,
)


@click.group(cls=DrpGroup)
def workflow() -> None:
    """A site's share of the release as a DAG, run by the site's compute back-end."""


@workflow.command("list")
@site_root_opt
@release_name_opt
@click.option("--step", type=STEP, default=None, help="Only this step.")
@click.option("--tract", "tracts", type=int, multiple=True, help="Only jobs for these tracts (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (streamable).")
def workflow_list(
    root: Path, release_name: str | None, step: str | None, tracts: tuple[int, ...], as_json: bool
) -> None:
    """List the release's jobs in a valid execution order, with their parents."""
    from science.pipeline.jobs import ReleaseContext
    from science.workflow import build

    ctx = ReleaseContext.discover(root, release_name)
    render.nodes((n for n in build(ctx, set(tracts) or None) if not step or n.step == step), as_json)


@workflow.command("run")
@campaign_opt
@click.option("--site", "site_name", required=True, help="Site whose share to run.")
@sites_opt
@workdir_opt
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
        checked_db(ctx),
        campaign,
        site,
        processing.site_root(site),
        workdir,
        wait=not detach,
        restart=restart,
    )
    render.run(report, ingested, as_json)
    sys.exit(report.exit_code)


@workflow.command("status")
@campaign_opt
@click.option("--site", "site_name", required=True)
@sites_opt
@workdir_opt
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def workflow_status(
    ctx: click.Context, campaign: str, site_name: str, sites_path: Path | None, workdir: Path, as_json: bool
) -> None:
    """The back-end's view of the site's run (reports ingested first). Exit codes as for `run`."""
    from drp import processing
    from sites.catalogue import load_catalogue

    site = load_catalogue(sites_path).get(site_name)
    report, ingested = processing.status(checked_db(ctx), campaign, site, workdir)
    render.run(report, ingested, as_json)
    sys.exit(report.exit_code)


@workflow.command("cancel")
@campaign_opt
@click.option("--site", "site_name", required=True)
@sites_opt
@workdir_opt
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def workflow_cancel(
    campaign: str, site_name: str, sites_path: Path | None, workdir: Path, as_json: bool
) -> None:
    """Stop the site's run; finished jobs stay finished, `run --restart` resumes."""
    from drp import processing
    from sites.catalogue import load_catalogue

    report = processing.cancel(campaign, load_catalogue(sites_path).get(site_name), workdir)
    render.run_state(report, as_json)
