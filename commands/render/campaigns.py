"""Rendering of campaigns, plans, releases and sites."""

from __future__ import annotations

from typing import Any

import click

from ._base import emit_json, ranges, table


def tick(result: Any, as_json: bool) -> None:
    if as_json:
        emit_json(result.to_dict())
    elif result.before == result.after:
        click.echo(f"{result.campaign} [{result.after}] {result.message}")
    else:
        click.echo(f"{result.campaign} {result.before} → {result.after}: {result.message}")


def validation(campaign: str, comparisons: int, failures: list[str], as_json: bool) -> None:
    if as_json:
        emit_json({"campaign": campaign, "comparisons": comparisons, "failures": failures})
        return
    if not failures:
        click.echo(f"{campaign}: overlap validation passed ({comparisons} tract comparisons)")
        return
    click.echo(f"{campaign}: overlap validation FAILED ({len(failures)} check(s), {comparisons} comparisons)")
    for line in failures:
        click.echo(f"  {line}")


def report(result: Any, as_json: bool) -> None:
    if as_json:
        emit_json({**result.data, "html": str(result.html)})
    else:
        click.echo(str(result.html))


def when(ts: float | None) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def campaign_status(status: Any, as_json: bool) -> None:
    if as_json:
        emit_json(status.to_dict())
        return
    title = f"campaign {status.campaign} [{status.state}]"
    click.echo(f"{title}: {status.message}" if status.message else title)
    if status.data_path:
        click.echo(f"data path: {status.data_path}")
    if status.phases:
        table(
            "phases",
            ["phase", "started", "seconds", "ticks", "failures", "last message"],
            [
                [
                    p.phase,
                    when(p.started_at),
                    f"{p.seconds:.1f}",
                    p.ticks,
                    p.failures,
                    (p.message or "")[:80],
                ]
                for p in status.phases
            ],
        )
    if status.steps:
        table(
            "attempts by site and step",
            ["site", "step", "attempts", "failed", "first start", "seconds"],
            [
                [
                    st.site,
                    st.step,
                    st.attempts,
                    st.failed_attempts,
                    when(st.started_at),
                    f"{st.seconds:.1f}" if st.seconds is not None else "-",
                ]
                for st in status.steps
            ],
        )
    if status.validations:
        table(
            "overlap validation",
            ["tract", "sites", "checks", "failed"],
            [[v.tract, v.sites, v.checks, v.failed] for v in status.validations],
        )
    replicas_and_jobs(status, f"{title}: ")
    if status.transfers:
        table(
            "transfers by link and state",
            ["source", "dest", "state", "transfers", "bytes"],
            [[t.source, t.dest, t.state, t.transfers, t.bytes] for t in status.transfers],
        )


def plan(stored: Any, as_json: bool) -> None:
    p = stored.plan
    per_site = {s: sorted(p.tracts_of(s)) for s in p.sites}
    if as_json:
        emit_json(
            {
                "campaign": stored.campaign,
                "version": stored.version,
                "shares": stored.shares,
                "overlap": sorted(p.overlap),
                "assignment": {str(t): s for t, s in p.assignment.items()},
                "site_tracts": per_site,
                "rules": [
                    {"dataset": d, "expression": e, "copies": c, "state": st.lower()}
                    for d, e, c, st in stored.rules
                ],
            }
        )
        return
    n = len(p.assignment)
    table(
        f"campaign {stored.campaign}: split plan v{stored.version} ({n} tracts + {len(p.overlap)} overlap)",
        ["site", "share", "own tracts", "with overlap", "tracts"],
        [
            [
                s,
                f"{stored.shares[s]:.2f}",
                sum(1 for v in p.assignment.values() if v == s),
                len(ts),
                ranges(ts),
            ]
            for s, ts in per_site.items()
        ],
    )
    table(
        "replication rules",
        ["dataset", "expression", "copies", "state"],
        [[d, e, c, st.lower()] for d, e, c, st in stored.rules],
    )


def release_generated(name: str, summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(summary)
    else:
        click.echo(
            f"release {name}: {summary['visits']} raw exposures, {summary['truth_rows']:,} truth objects, "
            f"{summary['refcat_rows']:,} reference stars; manifest {summary['manifest']}"
        )


def release_accuracy(report: Any, min_snr: float, as_json: bool) -> None:
    if as_json:
        emit_json(report.to_dict())
        return
    click.echo(
        f"{report.n_objects:,} primary objects, {report.n_matched:,} matched to {report.n_truth:,} truth; "
        f"astrometric rms {report.astrometric_rms_mas:.1f} mas "
        f"({report.n_astrometric} stars, S/N > {min_snr:g})"
    )
    table(
        "photometry vs truth (stars: PSF flux; galaxies at S/N > 50: Kron and PSF flux)",
        [
            "band",
            "stars",
            "bias (mmag)",
            "scatter (mmag)",
            "chi scatter",
            "gal",
            "Kron bias",
            "PSF bias",
        ],
        [
            [
                b.band,
                b.n_stars,
                f"{b.bias_mmag:+.1f}",
                f"{b.scatter_mmag:.1f}",
                f"{b.chi_scatter:.2f}",
                b.n_galaxies,
                f"{b.galaxy_kron_bias_mmag:+.1f}",
                f"{b.galaxy_psf_bias_mmag:+.1f}",
            ]
            for b in report.bands
        ],
    )
    click.echo(
        f"star/galaxy (S/N > {min_snr:g}): stars classified point-like {report.stars_classified_point:.1%}, "
        f"galaxies classified extended {report.galaxies_classified_extended:.1%}"
    )
    click.echo(
        f"{report.completeness_band}-band S/N 10 at {report.mag_snr10:.2f} mag; completeness of stars "
        f"brighter: {report.completeness_snr10:.1%} (isolated: {report.completeness_snr10_isolated:.1%})"
    )
    depth = report.depth50
    click.echo(
        f"50 % completeness at {depth:.2f} mag"
        if depth is not None
        else "50 % completeness depth not measured: completeness stays above 50 % to the truth's faint end"
    )
    cal = report.calibration
    if cal is None:
        click.echo("no calexps here: per-visit calibration not reported")
        return
    click.echo(
        f"zero points of {len(cal.visits)} visits vs truth: rms {cal.zp_residual_rms_mmag:.1f} mmag, "
        f"pulls rms {cal.zp_pull_rms:.2f} (1 when the reported uncertainties are right)"
    )
    click.echo(
        "repeatability of bright stars (PA1-like): "
        + ", ".join(
            f"{b} {v:.1f} mmag ({cal.repeatability_stars[b]} pairs)"
            for b, v in cal.repeatability_mmag.items()
        )
    )
    table(
        "calibration per visit",
        ["visit", "band", "ZP - truth (mmag)", "error (mmag)", "pull", "aperture corr (mmag)", "stars"],
        [
            [
                str(v.visit),
                v.band,
                f"{v.zp_residual_mmag:+.1f}",
                f"{v.zp_err_mmag:.1f}",
                f"{v.pull:+.2f}",
                f"{v.aperture_correction_mmag:.1f}",
                v.n_stars,
            ]
            for v in cal.visits
        ],
    )


def sites(found: list[Any], as_json: bool) -> None:
    if as_json:
        emit_json([s.model_dump(mode="json") for s in found])
        return
    table(
        None,
        ["name", "role", "share", "storage", "compute"],
        [[s.name, s.role.value, f"{s.share:.2f}", s.storage, s.compute.backend] for s in found],
    )


def synced(ids: dict[str, int], as_json: bool) -> None:
    if as_json:
        emit_json(ids)
    else:
        click.echo(f"{len(ids)} sites in bookkeeping: {', '.join(sorted(ids))}")


def doctor(report: Any, as_json: bool) -> None:
    """Grouped lines (a component, then its checks): readable at any width and in cron mail."""
    if as_json:
        emit_json(report.to_dict())
        return
    last = None
    for r in report.rows:
        if r.component != last:
            click.echo(r.component)
            last = r.component
        click.echo(f"  {r.health.value:<14} {r.check}: {r.detail}")
    bad = sum(r.health.value != "ok" for r in report.rows)
    click.echo(f"{bad} problem{'s' if bad != 1 else ''} found" if bad else "all checks passed")


def replicas_and_jobs(status: Any, prefix: str = "") -> None:
    """Files by site and replica state, then jobs by site, step and state (when there are any)."""
    table(
        f"{prefix}files by site and replica state",
        ["site", "state", "files", "bytes"],
        [[r.site, r.state, r.files, r.bytes] for r in status.replicas],
    )
    if status.jobs:
        table(
            "jobs by site, step and state",
            ["site", "step", "state", "jobs"],
            [[j.site, j.step, j.state, j.jobs] for j in status.jobs],
        )
