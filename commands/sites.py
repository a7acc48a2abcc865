"""`drp sites`: the site catalogue, and `drp doctor`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import render
from .context import (
    DrpGroup,
    checked_db,
    json_opt,
    sites_opt,
)


@click.group(cls=DrpGroup)
def sites() -> None:
    """Inspect the site catalogue (sites.toml)."""


@sites.command("list")
@sites_opt
@json_opt
def sites_list(sites_path: Path | None, as_json: bool) -> None:
    """List the sites of the catalogue with role, share, storage and compute back-end."""
    from sites.catalogue import load_catalogue

    render.sites(load_catalogue(sites_path).sites, as_json)


@sites.command("sync")
@sites_opt
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def sites_sync(ctx: click.Context, sites_path: Path | None, as_json: bool) -> None:
    """Record the catalogue's sites in bookkeeping (insert or update; safe to repeat)."""
    from bookkeeping.sites import upsert_sites
    from sites.catalogue import check_compute_settings, load_catalogue

    catalogue = load_catalogue(sites_path)
    check_compute_settings(catalogue)
    with checked_db(ctx).session() as session:
        ids = upsert_sites(session, [s.to_row() for s in catalogue.sites])
    render.synced(ids, as_json)


@click.command("doctor", cls=click.Command)
@sites_opt
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
    render.doctor(report, as_json)
    sys.exit(report.exit_code)
