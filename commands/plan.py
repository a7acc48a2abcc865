"""`drp plan`: the split of a release between sites."""

from __future__ import annotations

from pathlib import Path

import click

from . import render
from .context import (
    DrpGroup,
    campaign_opt,
    checked_db,
    sites_opt,
)


@click.group(cls=DrpGroup)
def plan() -> None:
    """Split a release between sites: processing assignments and replication rules."""


@plan.command("create")
@campaign_opt
@click.option("--release", "release_name", required=True, help="Release name (under the lead's root).")
@sites_opt
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

    stored = plan_campaign(checked_db(ctx), campaign, release_name, load_catalogue(sites_path), overlap)
    render.plan(stored, as_json)


@plan.command("show")
@campaign_opt
@click.option("--version", type=int, default=None, help="Plan version (default: the latest).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def plan_show(ctx: click.Context, campaign: str, version: int | None, as_json: bool) -> None:
    """Which site processes which tract, and the replication rules that feed them."""
    from bookkeeping.plans import load_plan

    with checked_db(ctx).session() as session:
        stored = load_plan(session, campaign, version)
    if stored is None:
        raise click.UsageError(f"campaign {campaign!r} has no split plan yet (run `drp plan create`)")
    render.plan(stored, as_json)
