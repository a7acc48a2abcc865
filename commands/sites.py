"""`drp sites`: the site catalogue, and `drp doctor`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .context import (
    DrpGroup,
    checked_db,
    sites_opt,
)
from .render import emit_json, table


@click.group(cls=DrpGroup)
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
        emit_json([s.model_dump(mode="json") for s in catalogue.sites])
        return
    table(
        None,
        ["name", "role", "share", "storage", "compute"],
        [[s.name, s.role.value, f"{s.share:.2f}", s.storage, s.compute.backend] for s in catalogue.sites],
    )


@sites.command("sync")
@sites_opt
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def sites_sync(ctx: click.Context, sites_path: Path | None, as_json: bool) -> None:
    """Record the catalogue's sites in bookkeeping (insert or update; safe to repeat)."""
    from bookkeeping.sites import upsert_sites
    from sites.catalogue import load_catalogue

    catalogue = load_catalogue(sites_path)
    with checked_db(ctx).session() as session:
        ids = upsert_sites(session, [s.to_row() for s in catalogue.sites])
    if as_json:
        emit_json(ids)
    else:
        click.echo(f"{len(ids)} sites in bookkeeping: {', '.join(sorted(ids))}")


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
    if as_json:
        emit_json(report.to_dict())
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
