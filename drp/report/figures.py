"""The report's figures, one function each, from :class:`ReportData` to a matplotlib Figure (or None
when there is nothing to plot). matplotlib's object API only: no pyplot, no global backend state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from science.pipeline.jobs import ReleaseContext

from .data import STEPS, ReportData

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def figure(width: float = 7.0, height: float = 4.0) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def site_colors(data: ReportData) -> dict[str, str]:
    return {s: COLORS[i % len(COLORS)] for i, s in enumerate(data.sites)}


def skymap(data: ReportData) -> Any:
    """Tracts coloured by processing site, the overlap hatched."""
    from matplotlib.patches import Patch, Rectangle

    ctx = ReleaseContext(data.lead_root, data.release)
    color = site_colors(data)
    plan = data.plan.plan
    fig = figure(8, 5)
    ax = fig.add_subplot()
    for t in ctx.skymap.tracts:
        is_overlap = t.id in plan.overlap
        ax.add_patch(
            Rectangle(
                (t.ra_deg - t.half_width_ra_deg, t.dec_deg - t.half_height_deg),
                2 * t.half_width_ra_deg,
                2 * t.half_height_deg,
                facecolor="#dddddd" if is_overlap else color.get(plan.assignment.get(t.id, ""), "#999999"),
                edgecolor="black",
                hatch="//" if is_overlap else None,
                alpha=0.8,
            )
        )
        ax.text(t.ra_deg, t.dec_deg, str(t.id), ha="center", va="center")
    ra0, ra1, dec0, dec1 = ctx.skymap.bounds_deg()
    ax.set_xlim(ra1, ra0)  # RA grows to the left on the sky
    ax.set_ylim(dec0, dec1)
    ax.set_xlabel("RA (deg)")
    ax.set_ylabel("Dec (deg)")
    ax.set_title(f"{data.release}: tracts by processing site")
    owners = set(plan.assignment.values())  # a site with no tract of its own has no colour on the map
    handles = [Patch(facecolor=color[s], label=s) for s in data.sites if s in owners]
    handles.append(Patch(facecolor="#dddddd", hatch="//", edgecolor="black", label="overlap (every site)"))
    fig.legend(handles=handles, loc="outside right upper", fontsize="small")  # beside the map, not over it
    return fig


def jobs(data: ReportData) -> Any:
    """Wall time and peak memory per attempt, box plots by step and site."""
    if not data.attempts:
        return None
    from matplotlib.patches import Patch

    color = site_colors(data)
    fig = figure(9, 4)
    ax_wall, ax_rss = fig.subplots(1, 2)
    width = 0.8 / max(1, len(data.sites))
    for i, site in enumerate(data.sites):
        mine = [[a for a in data.attempts if a.site == site and a.step == step] for step in STEPS]
        walls = [[a.wall_s for a in per_step] for per_step in mine]
        rss = [[(a.peak_rss or 0) / 2**20 for a in per_step] for per_step in mine]
        pos = np.arange(len(STEPS)) + (i - (len(data.sites) - 1) / 2) * width
        for ax, values in ((ax_wall, walls), (ax_rss, rss)):
            keep = [k for k, v in enumerate(values) if v]
            if keep:
                bp = ax.boxplot(
                    [values[k] for k in keep], positions=pos[keep], widths=width * 0.9, patch_artist=True
                )
                for box in bp["boxes"]:
                    box.set_facecolor(color[site])
    for ax, label in ((ax_wall, "wall time per attempt (s)"), (ax_rss, "peak RSS (MiB)")):
        ax.set_xticks(range(len(STEPS)), STEPS, rotation=30)
        ax.set_ylabel(label)
    ax_wall.legend(handles=[Patch(facecolor=color[s], label=s) for s in data.sites], fontsize="small")
    return fig


def transfers(data: ReportData) -> Any:
    """Throughput per transfer, a histogram per link."""
    if not data.transfers:
        return None
    fig = figure(6, 4)
    ax = fig.add_subplot()
    for i, (a, b) in enumerate(sorted({(t.source, t.dest) for t in data.transfers})):
        rates = [
            t.bytes / t.seconds / 2**20
            for t in data.transfers
            if (t.source, t.dest) == (a, b) and t.seconds and t.seconds > 0
        ]
        if rates:
            ax.hist(rates, bins=30, alpha=0.6, color=COLORS[i % len(COLORS)], label=f"{a} → {b}")
    ax.set_xlabel("throughput per transfer (MiB/s)")
    ax.set_ylabel("transfers")
    timed = sum(1 for t in data.transfers if t.seconds and t.seconds > 0)
    if timed < len(data.transfers):  # e.g. Rucio's request times are whole seconds: fast copies take "0 s"
        ax.set_title(f"{timed} of {len(data.transfers)} transfers lasted a measurable time", fontsize="small")
    if ax.get_legend_handles_labels()[1]:
        ax.legend(fontsize="small")
    else:  # e.g. Rucio's requests, timed to the second: copies of small files take "0 s"
        ax.text(0.5, 0.5, "no transfer lasted a measurable time", ha="center", transform=ax.transAxes)
    return fig


def accuracy(data: ReportData) -> Any:
    """Photometric bias and scatter per band; completeness against magnitude."""
    acc = data.accuracy
    if acc is None:
        return None
    fig = figure(9, 4)
    ax_b, ax_c = fig.subplots(1, 2)
    bands = [b.band for b in acc.bands]
    ax_b.bar(np.arange(len(bands)) - 0.2, [b.bias_mmag for b in acc.bands], 0.4, label="bias")
    ax_b.bar(np.arange(len(bands)) + 0.2, [b.scatter_mmag for b in acc.bands], 0.4, label="scatter")
    ax_b.set_xticks(range(len(bands)), bands)
    ax_b.set_ylabel("mmag (stars, S/N above cut)")
    ax_b.legend(fontsize="small")
    mags = [(c.mag_lo + c.mag_hi) / 2 for c in acc.completeness]
    ax_c.plot(mags, [c.fraction for c in acc.completeness], marker="o")
    ax_c.set_xlabel(f"{acc.completeness_band} magnitude")
    ax_c.set_ylabel("completeness")
    ax_c.set_ylim(0, 1.05)
    return fig


def _bands(data: ReportData) -> tuple[str, ...]:
    return ReleaseContext(data.lead_root, data.release).bands


def _label(res: Any) -> str:
    return f"t{res.tract} {res.sites[0]}–{res.sites[1]}"


def overlap(data: ReportData) -> Any:
    """Flux pulls of matched objects for every compared pair of sites, per band."""
    if not data.overlap:
        return None
    bands = _bands(data)
    fig = figure(9, 3.5)
    axes = fig.subplots(1, len(bands), squeeze=False)[0]
    for res in data.overlap:
        for ax, band in zip(axes, bands, strict=True):
            pulls = res.pulls(band)
            if pulls:
                ax.hist(np.clip(pulls, -5, 5), bins=41, range=(-5, 5), histtype="step", label=_label(res))
    for ax, band in zip(axes, bands, strict=True):
        ax.set_title(f"{band}: (f₁ − f₂)/σ")
        ax.set_xlabel("pull (clipped at ±5)")
    if axes[0].get_legend_handles_labels()[0]:  # no pulls in the first band: nothing to label
        axes[0].legend(fontsize="x-small")
    return fig


def _binned_sigma(mag: Any, sigma: Any, width: float = 0.5) -> tuple[Any, Any]:
    """Median σ in magnitude bins: the band a clean comparison of independent noise would fill."""
    edges = np.arange(np.floor(mag.min()), np.ceil(mag.max()) + width, width)
    idx = np.digitize(mag, edges)
    centres, values = [], []
    for k in np.unique(idx):
        centres.append(float(np.median(mag[idx == k])))
        values.append(float(np.median(sigma[idx == k])))
    return np.asarray(centres), np.asarray(values)


def overlap_dmag(data: ReportData) -> Any:
    """Δmag against magnitude per band, with the ±1σ that independent noise would give (grey)."""
    if not any(res.samples for res in data.overlap):
        return None
    bands = _bands(data)
    fig = figure(9, 3.5)
    axes = fig.subplots(1, len(bands), squeeze=False, sharey=True)[0]
    reach = 5.0  # mmag: the y range shows the bright end's σ and any offset, not the faint scatter
    for ax, band in zip(axes, bands, strict=True):
        for i, res in enumerate(data.overlap):
            mag = np.asarray(res.samples.get(f"mag[{band}]", []))
            if not mag.size:
                continue
            dmag = np.asarray(res.samples[f"dmag_mmag[{band}]"])
            centres, sigma = _binned_sigma(mag, np.asarray(res.samples[f"sigma_mmag[{band}]"]))
            ax.fill_between(centres, -sigma, sigma, color="0.88", lw=0)
            ax.plot(mag, dmag, ".", ms=3, color=COLORS[i % len(COLORS)], label=_label(res))
            bright = mag <= np.percentile(mag, 25)
            reach = max(reach, 3 * float(np.abs(np.median(dmag[bright]))), 2 * float(np.median(sigma[:3])))
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(f"{band}")
        ax.set_xlabel("PSF magnitude (AB)")
    axes[0].set_ylim(-reach, reach)
    axes[0].set_ylabel("Δmag, first − second site (mmag)")
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize="x-small")
    return fig


def overlap_astrometry(data: ReportData) -> Any:
    """Position differences of matched objects as vectors on the sky, one panel per compared pair."""
    pairs = [res for res in data.overlap if res.samples.get("ra")]
    if not pairs:
        return None
    fig = figure(4.5 * min(len(pairs), 3), 4)
    axes = fig.subplots(1, min(len(pairs), 3), squeeze=False)[0]
    for ax, res in zip(axes, pairs, strict=False):
        s = res.samples
        d = np.hypot(s["dra_mas"], s["ddec_mas"])
        if not d.any():
            ax.text(0.5, 1.02, "every difference is 0", ha="center", transform=ax.transAxes, fontsize="small")
        scale = max(float(np.percentile(d, 90)) if d.size else 0.0, 1e-3)
        q = ax.quiver(
            s["ra"], s["dec"], s["dra_mas"], s["ddec_mas"], angles="xy", scale=20 * scale, width=0.004
        )
        ax.quiverkey(q, 0.8, 1.03, scale, f"{scale:.3g} mas", labelpos="E", fontproperties={"size": "small"})
        ax.invert_xaxis()
        ax.set_title(_label(res), fontsize="small", loc="left")
        ax.set_xlabel("RA (deg)")
        ax.set_ylabel("Dec (deg)")
    return fig


# name → (figure function, caption); the page shows them in this order
FIGURES: dict[str, tuple[Callable[[ReportData], Any], str]] = {
    "skymap": (skymap, "tracts coloured by processing site; overlap hatched"),
    "transfers": (transfers, "throughput per transfer, by link"),
    "jobs": (jobs, "wall time and peak memory per attempt, by step and site"),
    "accuracy": (accuracy, "photometric bias and scatter per band; completeness"),
    "overlap": (overlap, "flux pulls of matched objects, every compared pair of sites"),
    "overlap_dmag": (
        overlap_dmag,
        "Δmag against magnitude per band; grey: ±1σ of the difference (median per bin)",
    ),
    "overlap_astrometry": (overlap_astrometry, "position differences of matched objects (vectors)"),
}
