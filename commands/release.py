"""`drp release`: generate a synthetic release and check it against truth."""

from __future__ import annotations

from pathlib import Path

import click

from .context import (
    DrpGroup,
    release_name_opt,
    site_root_opt,
)
from .render import emit_json, table


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
    from science.synth import ReleaseConfig, generate_release, load_manifest

    base = ReleaseConfig()
    cfg = ReleaseConfig(
        name=name,
        seed=seed,
        bands=tuple(b.strip() for b in bands.split(",") if b.strip()),
        visits_per_band=visits_per_band,
        skymap=base.skymap.model_copy(update={"tracts_x": tracts[0], "tracts_y": tracts[1]}),
    )
    manifest_path = generate_release(cfg, root, progress=terminal_progress)
    man = load_manifest(root, name)
    summary = {
        "manifest": str(manifest_path),
        "visits": len(man["visits"]),
        "truth_rows": man["truth_rows"],
        "refcat_rows": man["refcat_rows"],
    }
    if as_json:
        emit_json(summary)
    else:
        click.echo(
            f"release {name}: {summary['visits']} raw exposures, {summary['truth_rows']:,} truth objects, "
            f"{summary['refcat_rows']:,} reference stars; manifest {manifest_path}"
        )


@release.command("validate")
@site_root_opt
@release_name_opt
@click.option("--min-snr", type=float, default=20.0, show_default=True, help="S/N cut for stars.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def release_validate(root: Path, release_name: str | None, min_snr: float, as_json: bool) -> None:
    """Accuracy of the processed release against its truth catalogue (needs the merged tract tables)."""
    from science.validate import validate_release

    report = validate_release(root, release_name, min_snr=min_snr)
    if as_json:
        emit_json(report.to_dict())
        return
    click.echo(
        f"{report.n_objects:,} primary objects, {report.n_matched:,} matched to {report.n_truth:,} truth; "
        f"astrometric rms {report.astrometric_rms_mas:.1f} mas "
        f"({report.n_astrometric} stars, S/N > {min_snr:g})"
    )
    table(
        "photometry vs truth (PSF flux, stars)",
        ["band", "stars", "bias (mmag)", "scatter (mmag)", "chi scatter"],
        [
            [b.band, b.n_stars, f"{b.bias_mmag:+.1f}", f"{b.scatter_mmag:.1f}", f"{b.chi_scatter:.2f}"]
            for b in report.bands
        ],
    )
    click.echo(
        f"{report.completeness_band}-band S/N 10 at {report.mag_snr10:.2f} mag; completeness of stars "
        f"brighter: {report.completeness_snr10:.1%} (isolated: {report.completeness_snr10_isolated:.1%})"
    )
