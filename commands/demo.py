"""`drp demo`: the main job on embedded defaults."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from common.errors import EXIT_FAILED

from . import render


@click.command()
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("drp-work"),
    show_default=True,
    help="Directory for the demo (recreated on every run).",
)
@click.option(
    "--small",
    is_flag=True,
    help="A 2-tract, 2-band release instead of the default 4 tracts and 3 bands (the run prints its time).",
)
@click.option(
    "--replication",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="A TOML file with a [replication] table to use instead of the embedded back-end "
    '(e.g. backend = "rucio", transfers = "conveyor"; see scripts/demo-rucio.sh).',
)
@click.option(
    "--satellite-compute",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="A TOML file with a [compute] table for the satellite (in2p3) instead of the local executor "
    '(e.g. backend = "htcondor", schedd = "…"; see scripts/demo-htcondor.sh).',
)
@click.option(
    "--release",
    default="dr-demo",
    show_default=True,
    help="Name of the demo release (with Rucio: the DID scope of its files).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def demo(
    workdir: Path,
    small: bool,
    replication: Path | None,
    satellite_compute: Path | None,
    release: str,
    as_json: bool,
) -> None:
    """Run the main job on embedded defaults: a two-site campaign (ncsa lead, in2p3 satellite, 50/50)
    on SQLite, posix storage and the local executor, from plan to cross-validated, consolidated release.
    With --replication, the same campaign through another replication back-end; with --satellite-compute,
    the satellite's jobs through another compute back-end."""
    from drp.demo import DemoSettings, run_demo
    from instrumentation.progress import terminal_progress

    def tick(r: Any) -> None:
        if r.before != r.after:
            logging.getLogger("drp.campaign").info("%s → %s: %s", r.before, r.after, r.message)

    settings = DemoSettings(
        workdir=workdir,
        small=small,
        replication=replication,
        release=release,
        satellite_compute=satellite_compute,
    )
    result = run_demo(settings, progress=terminal_progress, on_tick=tick)
    render.demo(result, as_json)
    if result.mismatches:
        click.echo(f"drp: error: {len(result.mismatches)} replicas differ from the catalogue", err=True)
        sys.exit(EXIT_FAILED)
    if result.state != "DONE":
        click.echo(f"drp: error: the campaign ended {result.state}: {result.message}", err=True)
        sys.exit(EXIT_FAILED)
