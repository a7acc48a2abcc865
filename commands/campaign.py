"""`drp campaign`: create, drive and inspect campaigns."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from common.errors import EXIT_FAILED

from . import render
from .context import (
    DrpGroup,
    campaign_driver,
    campaign_file_arg,
    checked_db,
    database,
)


@click.group(cls=DrpGroup)
def campaign() -> None:
    """Create, drive and inspect campaigns."""


@campaign.command("create")
@campaign_file_arg
@click.pass_context
def campaign_create(ctx: click.Context, campaign_file: Path) -> None:
    """Record the campaign defined in CAMPAIGN_TOML (and its sites) in bookkeeping; safe to repeat."""
    driver = campaign_driver(ctx, campaign_file)
    created = driver.create()
    click.echo(f"campaign {driver.name} {'created' if created else 'exists already'}")


@campaign.command("tick")
@campaign_file_arg
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
@click.option(
    "--now", "now", is_flag=True, help="Try the services now, even inside the back-off after a wait."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def campaign_tick(
    ctx: click.Context,
    campaign_file: Path,
    push_gateway: str | None,
    textfile: Path | None,
    metrics_site: str | None,
    now: bool,
    as_json: bool,
) -> None:
    """Do one bounded, idempotent step and exit (for cron). A tick already running makes this one exit 0
    with a message. Exit 0 done, 3 in progress (also: waiting for a service that cannot be reached; the
    ticks back off), 1 failed, 2 a configuration error or the bookkeeping database cannot be reached.
    With --push-gateway/--textfile the campaign's metrics and the tick's duration and outcome reach
    Prometheus although the process exits."""
    from drp.locking import CampaignBusy
    from instrumentation.exporter import TickMetrics

    driver = campaign_driver(ctx, campaign_file)
    publish = TickMetrics(
        push_gateway, textfile, metrics_site or driver.catalogue.lead.name, modes=driver.modes
    )
    try:
        driver.create()
        result = driver.tick(now=now)
    except CampaignBusy as busy:
        click.echo(f"drp: {busy}", err=True)
        return
    render.tick(result, as_json)
    for warning in publish(driver.db, driver.name, result):  # the tick's exit code stands
        click.echo(f"drp: warning: {warning}", err=True)
    sys.exit(result.exit_code)


@campaign.command("plan")
@campaign_file_arg
@click.pass_context
def campaign_plan(ctx: click.Context, campaign_file: Path) -> None:
    """Create the campaign if needed and run its plan phase (then see `drp plan show`)."""
    from bookkeeping.states import CampaignState

    driver = campaign_driver(ctx, campaign_file)
    driver.create()
    state = driver.campaign().state
    if state is not CampaignState.CREATED:
        click.echo(f"campaign {driver.name} is {state.name}: already planned")
        return
    render.tick(driver.tick(), False)


@campaign.command("run")
@campaign_file_arg
@click.option("--json", "as_json", is_flag=True, help="Print the last tick as JSON.")
@click.pass_context
def campaign_run(ctx: click.Context, campaign_file: Path, as_json: bool) -> None:
    """Tick until the campaign is DONE or FAILED (safe to interrupt and run again: it resumes)."""
    driver = campaign_driver(ctx, campaign_file)
    driver.create()
    result = driver.run(on_tick=None if as_json else lambda r: render.tick(r, False))
    if as_json:
        render.tick(result, True)
    sys.exit(result.exit_code)


@campaign.command("validate")
@campaign_file_arg
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def campaign_validate(ctx: click.Context, campaign_file: Path, as_json: bool) -> None:
    """Run the overlap cross-validation again, at any time (also on a DONE campaign: each site's own
    overlap outputs are kept under RELEASE/crossval/SITE). Records the results (they replace the last
    ones) without changing the campaign's state. Exit 0 all passed, 1 some failed."""
    driver = campaign_driver(ctx, campaign_file)
    with driver.lock():
        failures, comparisons = driver.validate_overlap()
    render.validation(driver.name, comparisons, failures, as_json)
    sys.exit(1 if failures else 0)


@campaign.command("report")
@campaign_file_arg
@click.option("--json", "as_json", is_flag=True, help="Print the report's numbers as JSON.")
@click.pass_context
def campaign_report(ctx: click.Context, campaign_file: Path, as_json: bool) -> None:
    """Write the HTML report with PNG plots (sky map by site, jobs, transfers, accuracy against truth,
    overlap residuals) under WORKDIR/reports/CAMPAIGN/ and print its path."""
    from drp.campaign_config import load_campaign
    from drp.report import build_report
    from sites.catalogue import load_catalogue

    cfg = load_campaign(campaign_file)
    report = build_report(checked_db(ctx), cfg, load_catalogue(cfg.sites_path), modes=ctx.obj["modes"])
    render.report(report, as_json)


@campaign.command("retry")
@campaign_file_arg
@click.pass_context
def campaign_retry(ctx: click.Context, campaign_file: Path) -> None:
    """Send a FAILED campaign back to the phase it failed in (failed transfers re-queued)."""
    click.echo(campaign_driver(ctx, campaign_file).retry())


@campaign.command("cancel")
@campaign_file_arg
@click.pass_context
def campaign_cancel(ctx: click.Context, campaign_file: Path) -> None:
    """Stop the campaign and its sites' runs (CANCELLED; job reports and copies already made stay)."""
    click.echo(campaign_driver(ctx, campaign_file).cancel())


@campaign.command("status")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def campaign_status_cmd(ctx: click.Context, name: str, as_json: bool) -> None:
    """The operators' dashboard: phases with start, duration, ticks and failures; files by site and replica
    state; jobs by site, step and state with attempts, failures and time span; transfers by link; the
    overlap validation per tract. Exit 1 if the campaign FAILED."""
    from bookkeeping.queries import campaign_status

    bk = database(ctx)
    bk.check_schema()
    with bk.session() as session:
        status = campaign_status(session, name)
    render.campaign_status(status, as_json)
    if status.state == "FAILED":
        sys.exit(EXIT_FAILED)
