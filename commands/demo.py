"""`drp demo`: the main job on embedded defaults."""

from __future__ import annotations

import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from common.errors import EXIT_FAILED

from .render import emit_json, table


@click.command()
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("drp-work"),
    show_default=True,
    help="Directory for the demo (recreated on every run).",
)
@click.option(
    "--small", is_flag=True, help="A 2-tract, 2-band release: the whole campaign in about a minute."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def demo(workdir: Path, small: bool, as_json: bool) -> None:
    """Run the main job on embedded defaults: a two-site campaign (ncsa lead, in2p3 satellite, 50/50)
    on SQLite, posix storage and the local executor, from plan to cross-validated, consolidated release."""
    from drp.demo import DemoSettings, run_demo
    from instrumentation.progress import terminal_progress

    def tick(r: Any) -> None:
        if r.before != r.after:
            logging.getLogger("drp.campaign").info("%s → %s: %s", r.before, r.after, r.message)

    result = run_demo(DemoSettings(workdir=workdir, small=small), progress=terminal_progress, on_tick=tick)
    status = result.status
    if as_json:
        out = asdict(result)
        out["status"] = status.to_dict() if status else None
        emit_json(out)
    else:
        click.echo(f"campaign         demo [{result.state}] in {result.seconds:.0f} s: {result.message}")
        click.echo(f"work directory   {result.workdir}")
        click.echo(f"site catalogue   {result.sites_file}")
        click.echo(f"campaign file    {result.campaign_file}")
        click.echo(f"bookkeeping      {result.db_url}")
        click.echo(
            f"files            {result.files:,} ({result.bytes / 2**20:,.1f} MiB) catalogued; verified at "
            + ", ".join(f"{s} {n:,}" for s, n in result.verified.items())
        )
        click.echo(f"jobs             {result.jobs:,} with {result.attempts:,} profiled attempts")
        click.echo(f"overlap checks   {result.validations_passed}/{result.validations} passed")
        click.echo(f"report           {result.report or '-'}")
        if status:
            table(
                "files by site and replica state",
                ["site", "state", "files", "bytes"],
                [[r.site, r.state, r.files, r.bytes] for r in status.replicas],
            )
            if status.jobs:
                table(
                    "jobs by site, step and state",
                    ["site", "step", "state", "jobs"],
                    [[j.site, j.step, j.state, j.jobs] for j in status.jobs],
                )
    if result.mismatches:
        click.echo(f"drp: error: {len(result.mismatches)} replicas differ from the catalogue", err=True)
        sys.exit(EXIT_FAILED)
    if result.state != "DONE":
        click.echo(f"drp: error: the campaign ended {result.state}: {result.message}", err=True)
        sys.exit(EXIT_FAILED)
