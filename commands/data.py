"""`drp data`: datasets and replicas, replication rules, transfers."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from common.errors import EXIT_FAILED, EXIT_IN_PROGRESS

from . import render
from .context import (
    DrpGroup,
    checked_db,
    engine_bar,
    replication,
    sites_opt,
)
from .render import emit_json


@click.group(cls=DrpGroup)
def data() -> None:
    """Datasets, files and replicas in the catalogue."""


@data.command("register")
@click.option("--site", "site_name", required=True, help="Site whose storage holds the files (file://).")
@click.option("--dataset", required=True, metavar="SCOPE:NAME", help="Dataset to register them in.")
@click.option("--path", "subdir", default="", help="Directory under the site root (default: all of it).")
@click.option("--campaign", default=None, help="Attach the dataset to this campaign as an input.")
@sites_opt
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

    catalogue, backend = replication(sites_path)
    result = register_from_storage(
        checked_db(ctx),
        catalogue,
        backend,
        site_name,
        dataset,
        subdir,
        campaign=campaign,
        progress=terminal_progress,
    )
    render.registered(dataset, site_name, result, as_json)


@data.command("ls")
@click.option("--scope", default=None, help="Only this scope.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def data_ls(ctx: click.Context, scope: str | None, as_json: bool) -> None:
    """Datasets with their size and how many files each site holds (AVAILABLE, and other states)."""
    from bookkeeping.files import dataset_summaries

    with checked_db(ctx).session() as session:
        rows = dataset_summaries(session, scope)
    render.datasets(rows, as_json)


@data.command("replicas")
@click.argument("dataset", metavar="SCOPE:NAME")
@click.option("--site", "site_name", default=None, help="Only this site.")
@sites_opt
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def data_replicas(
    ctx: click.Context, dataset: str, site_name: str | None, sites_path: Path | None, as_json: bool
) -> None:
    """Every replica of a dataset's files, with its state."""
    from transfer.ops import iter_replicas

    _, backend = replication(sites_path)
    with checked_db(ctx).session() as session:
        rows = list(iter_replicas(session, backend, dataset, site=site_name))
    render.replicas(rows, as_json)


@click.group(cls=DrpGroup)
def rules() -> None:
    """Replication rules: keep N copies of a dataset on the sites an expression selects."""


@rules.command("add")
@click.argument("dataset", metavar="SCOPE:NAME")
@click.argument("expression")
@click.option("--copies", type=click.IntRange(1, 100), default=1, show_default=True)
@click.option("--campaign", default=None, help="Account the rule and its transfers to this campaign.")
@sites_opt
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
    _, backend = replication(sites_path)
    with checked_db(ctx).session() as session:
        info = backend.add_rule(session, dataset, expression, copies, campaign=campaign)
    render.rule_added(info, as_json)


@rules.command("ls")
@click.option("--state", type=click.Choice(["REPLICATING", "OK", "STUCK", "SUSPENDED"], case_sensitive=False))
@click.option("--dataset", default=None, metavar="SCOPE:NAME")
@sites_opt
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def rules_ls(
    ctx: click.Context, state: str | None, dataset: str | None, sites_path: Path | None, as_json: bool
) -> None:
    """Rules with their state, placement, lock counts and, when STUCK, why. Exit 1 if any is STUCK."""
    from bookkeeping.states import RuleState

    _, backend = replication(sites_path)
    with checked_db(ctx).session() as session:
        rows = backend.rules(session, dataset=dataset, state=RuleState[state.upper()] if state else None)
    render.rules(rows, as_json)
    if any(r.state is RuleState.STUCK for r in rows):
        sys.exit(EXIT_FAILED)


@rules.command("show")
@click.argument("rule_id", type=int)
@sites_opt
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def rules_show(ctx: click.Context, rule_id: int, sites_path: Path | None, as_json: bool) -> None:
    """One rule: state, placement, locks, the stuck reason, and its transfers that are not done."""
    from bookkeeping.states import RuleState
    from transfer.ops import rule_detail

    _, backend = replication(sites_path)
    info, pending = rule_detail(checked_db(ctx), backend, rule_id)
    render.rule_detail(info, pending, as_json)
    if info.state is RuleState.STUCK:
        sys.exit(EXIT_FAILED)


@click.group(cls=DrpGroup)
def transfer() -> None:
    """Transfers between sites: run the engine, list, retry."""


@transfer.command("run")
@click.option(
    "--max-seconds", type=float, default=None, help="Stop after this long (cron); default: until idle."
)
@sites_opt
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def transfer_run(
    ctx: click.Context, max_seconds: float | None, sites_path: Path | None, as_json: bool
) -> None:
    """Advance the rules and copy until nothing is queued (verified copies only become AVAILABLE).

    Exit 0 when idle with nothing failed, 3 when stopped by --max-seconds with work left, 1 if
    transfers were given up (see `drp rules ls --state stuck`).
    """
    from transfer.engine import run_until_idle

    catalogue, backend = replication(sites_path)
    with engine_bar() as bar:
        report = run_until_idle(checked_db(ctx), catalogue, backend, max_seconds=max_seconds, progress=bar)
    render.engine_report(report, as_json)
    if report.failed:
        sys.exit(EXIT_FAILED)
    if report.pending:
        sys.exit(EXIT_IN_PROGRESS)


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

    with checked_db(ctx).session() as session:
        rows = list_transfers(
            session, state=TransferState[state.upper()] if state else None, rule=rule_id, limit=limit
        )
    render.transfers(rows, as_json)


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
    with checked_db(ctx).session() as session:
        n = retry_failed(session, ids=list(transfer_ids) or None, rule=rule_id)
    if as_json:
        emit_json({"requeued": n})
    else:
        click.echo(f"{n} transfer(s) queued again")
