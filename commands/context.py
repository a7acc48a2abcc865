"""What commands share: the error-handling group class, common options, and the objects a command
builds from its options (the database, the site catalogue with its clients checked, a campaign driver)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from common.errors import DrpError


class DrpGroup(click.Group):
    """Turns :class:`DrpError` into one line on stderr and the error's exit code (no traceback)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DrpError as err:
            click.echo(f"drp: error: {err}", err=True)
            ctx.exit(err.exit_code)


campaign_opt = click.option("--campaign", required=True, help="Campaign name.")
sites_opt = click.option(
    "--sites",
    "sites_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Site catalogue (default ./sites.toml or env DRP_SITES).",
)
workdir_opt = click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="DRP_WORKDIR",
    default=Path("drp-work"),
    show_default=True,
    help="Where workflows and back-end files are written (env DRP_WORKDIR).",
)
campaign_file_arg = click.argument(
    "campaign_file", type=click.Path(dir_okay=False, path_type=Path), metavar="CAMPAIGN_TOML"
)
json_opt = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
site_root_opt = click.option(
    "--root", type=click.Path(file_okay=False, exists=True, path_type=Path), required=True, help="Site root."
)
release_name_opt = click.option(
    "--release", "release_name", default=None, help="Release name (default: the only one under the root)."
)
STEP = click.Choice(["calibrate", "warp", "coadd", "measure", "merge"])


def database(ctx: click.Context) -> Any:
    from bookkeeping.database import Database

    return Database.from_env(ctx.obj["db_url"], modes=ctx.obj["modes"])


def checked_db(ctx: click.Context) -> Any:
    """The database, refusing one whose schema is not at this code's head (exit 4)."""
    db = database(ctx)
    db.check_schema()
    return db


def replication(sites_path: Path | None) -> tuple[Any, Any]:
    """The site catalogue (every client it needs installed) and its replication back-end."""
    from sites.catalogue import load_catalogue, require_clients
    from transfer.replication.registry import get_replication

    catalogue = load_catalogue(sites_path)
    require_clients(catalogue)  # every mover and back-end it may use, before any work
    return catalogue, get_replication(catalogue)


def campaign_driver(ctx: click.Context, campaign_file: Path) -> Any:
    from drp.campaign import CampaignDriver
    from drp.campaign_config import load_campaign
    from sites.catalogue import load_catalogue

    cfg = load_campaign(campaign_file)
    return CampaignDriver(checked_db(ctx), cfg, load_catalogue(cfg.sites_path), modes=ctx.obj["modes"])


@contextmanager
def engine_bar(enabled: bool = True) -> Iterator[Any]:
    """The transfer engine's progress bar for commands that copy (None when disabled), always closed."""
    from instrumentation.progress import EngineProgress

    bar = EngineProgress() if enabled else None
    try:
        yield bar
    finally:
        if bar is not None:
            bar.close()
