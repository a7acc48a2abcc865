"""`drp release`: generate a synthetic release and check it against truth."""

from __future__ import annotations

from pathlib import Path

import click

from . import render
from .context import (
    DrpGroup,
    release_name_opt,
    site_root_opt,
)


@click.group(cls=DrpGroup)
def release() -> None:
    """Synthetic data releases (truth, reference catalogue, raw exposures)."""


@release.command("generate")
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Site storage root to write the release under.",
)
@click.option("--name", default="dr-demo", show_default=True, help="Release name (top directory).")
@click.option("--seed", type=int, default=2013, show_default=True)
@click.option("--tracts", type=(int, int), default=(2, 2), show_default=True, help="Tract grid NX NY.")
@click.option("--bands", default="g,r,i", show_default=True, help="Comma-separated bands.")
@click.option("--visits-per-band", type=int, default=2, show_default=True, help="Per tract and band.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
def release_generate(
    root: Path, name: str, seed: int, tracts: tuple[int, int], bands: str, visits_per_band: int, as_json: bool
) -> None:
    """Generate a deterministic synthetic release from a seed."""
    from instrumentation.progress import terminal_progress
    from science.synth import generate_summary, release_config

    cfg = release_config(
        name, seed, tracts, [b.strip() for b in bands.split(",") if b.strip()], visits_per_band
    )
    render.release_generated(name, generate_summary(cfg, root, progress=terminal_progress), as_json)


@release.command("validate")
@site_root_opt
@release_name_opt
@click.option("--min-snr", type=float, default=20.0, show_default=True, help="S/N cut for stars.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def release_validate(root: Path, release_name: str | None, min_snr: float, as_json: bool) -> None:
    """Accuracy of the processed release against its truth catalogue (needs the merged tract tables)."""
    from science.validate import validate_release

    render.release_accuracy(validate_release(root, release_name, min_snr=min_snr), min_snr, as_json)
