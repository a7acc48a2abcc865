"""`drp`: the operators' command line. Thin on purpose: the root group, its global options and the one
error handler live here; each command group is a module of :mod:`commands`, each command parses
options and calls one function of a package. Logging is configured here and nowhere else.
"""

from __future__ import annotations

import logging
import sys

import click

from commands import campaign, data, db, demo, dr, jobs, metrics, plan, release, sites, workflow
from commands.context import DrpGroup
from common import __version__
from common.errors import SchemaOutOfDateError
from common.permissions import modes_for

EPILOG = """\b
Exit codes: 0 done, 1 failed, 2 usage or configuration error,
3 in progress (campaign tick), 4 database schema out of date.
Environment: DRP_DB_URL (bookkeeping database), DRP_SITES (site catalogue)."""


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if level != "debug":  # Alembic narrates every plugin and migration step at INFO
        logging.getLogger("alembic").setLevel(logging.WARNING)


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
@click.option(
    "--group-readable",
    is_flag=True,
    envvar="DRP_GROUP_READABLE",
    help="Create the database file, reports, metrics textfile and lock files 0640/0750 instead of "
    "0600/0700, for a monitoring account in the group (env DRP_GROUP_READABLE=1).",
)
@click.pass_context
def cli(ctx: click.Context, db_url: str | None, log_level: str, group_readable: bool) -> None:
    """satdrp: run a survey's data release across a lead centre and satellite centres.

    Split the release between sites, move data with verified transfers, process it, keep books of
    every file, replica, job and attempt, and cross-validate the overlap between sites.
    """
    _setup_logging(log_level)
    ctx.obj = {"db_url": db_url, "modes": modes_for(group_readable)}


for group in (
    db.db,
    sites.sites,
    sites.doctor_cmd,
    release.release,
    jobs.jobs,
    plan.plan,
    workflow.workflow,
    campaign.campaign,
    data.data,
    data.rules,
    data.transfer,
    dr.dr,
    metrics.metrics,
    demo.demo,
):
    cli.add_command(group)


def main() -> None:
    try:
        cli(prog_name="drp")
    except SchemaOutOfDateError as err:  # raised outside a group's invoke (defensive)
        click.echo(f"drp: error: {err}", err=True)
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
