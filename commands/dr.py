"""`drp dr`: disaster recovery."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from . import render
from .context import (
    DrpGroup,
    campaign_driver,
    campaign_file_arg,
    checked_db,
    engine_bar,
    replication,
    sites_opt,
)


@click.group(cls=DrpGroup)
def dr() -> None:
    """Disaster recovery: replica coverage, storage audits, recovery, full copies, site failover.

    Nothing here deletes a catalogued replica. Dark files (on storage, not catalogued) are only
    deleted with `audit --delete-dark`, and never when they are the last copy of a catalogued file.
    """


_dr_max_seconds = click.option(
    "--max-seconds", type=float, default=None, help="Stop after this long (exit 3 if work is left)."
)


def _copying(
    ctx: click.Context, sites_path: Path | None, dry_run: bool, run: Callable[..., Any], *args: Any, **kw: Any
) -> Any:
    """Run a DR operation that copies (recover, replicate) with the engine's progress bar (none when dry)."""
    catalogue, backend = replication(sites_path)
    with engine_bar(not dry_run) as bar:
        return run(checked_db(ctx), catalogue, backend, *args, dry_run=dry_run, on_round=bar, **kw)


@dr.command("status")
@click.option("--release", "scope", default=None, help="Only this release (catalogue scope).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def dr_status(ctx: click.Context, scope: str | None, as_json: bool) -> None:
    """Per site and dataset type, how much has a verified replica there; what lacks a second copy.

    Exit 0 when every file has at least two verified copies, 1 otherwise.
    """
    from transfer.dr import status

    with checked_db(ctx).session() as session:
        st = status(session, scope=scope)
    render.dr_status(st, as_json)
    sys.exit(st.exit_code)


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
@sites_opt
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
    differs), DARK (present, not catalogued there), TEMP (a temporary copy, `.NAME.part-OWNER`, left by
    a killed job or transfer: removed when its owner is dead, kept while it may be alive).

    Findings are recorded (time and reason) and LOST/CORRUPT replicas declared to the replication
    back-end, which queues fresh copies for the rules that need them; `drp dr recover` finishes the
    job. Exit 0 when nothing is lost or corrupt (dark files are reported), 1 otherwise.
    """
    from instrumentation.progress import terminal_progress
    from transfer.dr import audit

    catalogue, backend = replication(sites_path)
    report = audit(
        checked_db(ctx),
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
    render.audit(report, as_json)
    sys.exit(report.exit_code)


@dr.command("recover")
@click.option("--site", "site_name", required=True, help="Site whose BAD/LOST replicas to restore.")
@_dr_max_seconds
@click.option("--dry-run", is_flag=True, help="Say what would be copied and what cannot be; change nothing.")
@sites_opt
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

    report = _copying(ctx, sites_path, dry_run, recover, site_name, max_seconds=max_seconds)
    render.recovery(report, as_json)
    sys.exit(report.exit_code)


@dr.command("replicate")
@click.option("--to", "site_name", required=True, help="Site that must hold the full release.")
@click.option("--release", "scope", required=True, help="Release (catalogue scope), e.g. dr1.")
@_dr_max_seconds
@click.option("--dry-run", is_flag=True, help="Say how much is missing; change nothing.")
@sites_opt
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

    report = _copying(ctx, sites_path, dry_run, replicate, site_name, scope, max_seconds=max_seconds)
    render.replication(report, as_json)
    sys.exit(report.exit_code)


@dr.command("failover")
@campaign_file_arg
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
        campaign_driver(ctx, campaign_file),
        source,
        target,
        include_finished=include_finished,
        dry_run=dry_run,
    )
    render.failover(report, as_json)


@dr.command("failback")
@campaign_file_arg
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

    render.failover(failback(campaign_driver(ctx, campaign_file), site_name, dry_run=dry_run), as_json)
