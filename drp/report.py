"""``drp campaign report``: one HTML page with PNG plots, and the same numbers as JSON.

Plots: the sky map coloured by processing site with the overlap hatched; job wall time and peak memory
per step and site; transfer throughput per link; accuracy against the truth catalogue (photometric
bias and scatter per band, completeness); the overlap flux-pull distributions per band. Everything is
written atomically under ``WORKDIR/reports/CAMPAIGN/`` (``index.html``, ``*.png``, ``report.json``).
Figures use matplotlib's object API (no pyplot, no global backend state).
"""

from __future__ import annotations

import html
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import text

from bookkeeping.database import Database
from bookkeeping.plans import load_plan
from bookkeeping.queries import CampaignStatus, campaign_status
from common.atomic import write_bytes_atomic
from common.errors import DrpError, NotFoundError
from drp.campaign_config import CampaignConfig
from science.pipeline.jobs import ReleaseContext
from sites.catalogue import SiteCatalogue

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


@dataclass(frozen=True)
class Report:
    directory: Path
    html: Path
    data: dict[str, Any]


def _figure(width: float = 7.0, height: float = 4.0) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    write_bytes_atomic(path, buf.getvalue())
    return path.name


def build_report(db: Database, cfg: CampaignConfig, catalogue: SiteCatalogue) -> Report:
    from drp.processing import site_root

    out = cfg.workdir / "reports" / cfg.name
    out.mkdir(parents=True, exist_ok=True)
    lead_root = site_root(catalogue.lead)
    ctx = ReleaseContext(lead_root, cfg.campaign.release)
    with db.session() as session:
        status = campaign_status(session, cfg.name)
        stored = load_plan(session, cfg.name)
        camp_id = session.execute(
            text("SELECT id FROM campaigns WHERE name = :n"), {"n": cfg.name}
        ).scalar_one()
        attempts = session.execute(
            text(
                "SELECT s.name, j.step, a.ended_at - a.started_at, a.peak_rss, a.cpu_user + a.cpu_sys "
                "FROM attempts a JOIN jobs j ON j.id = a.job_id JOIN sites s ON s.id = j.site_id "
                "WHERE j.campaign_id = :c AND a.started_at IS NOT NULL AND a.ended_at IS NOT NULL"
            ),
            {"c": camp_id},
        ).all()
        transfers = session.execute(
            text(
                "SELECT a.name, b.name, t.bytes, t.finished_at - t.started_at FROM transfers t "
                "JOIN sites a ON a.id = t.source_site_id JOIN sites b ON b.id = t.dest_site_id "
                "WHERE t.campaign_id = :c AND t.state = 4 AND t.started_at IS NOT NULL"
            ),
            {"c": camp_id},
        ).all()
        checks = session.execute(
            text(
                "SELECT tract, sites, quantity, value, threshold, passed, details FROM validations "
                "WHERE campaign_id = :c ORDER BY tract, sites, quantity"
            ),
            {"c": camp_id},
        ).all()
    if stored is None:
        raise NotFoundError(f"campaign {cfg.name} has no split plan yet: nothing to report")
    images: dict[str, str] = {}
    sites = [s.name for s in catalogue.sites]
    color = {s: COLORS[i % len(COLORS)] for i, s in enumerate(sites)}

    # -- sky map ------------------------------------------------------------------------------------
    from matplotlib.patches import Patch, Rectangle

    fig = _figure(6, 5)
    ax = fig.add_subplot()
    for t in ctx.skymap.tracts:
        is_overlap = t.id in stored.plan.overlap
        site = stored.plan.assignment.get(t.id)
        ax.add_patch(
            Rectangle(
                (t.ra_deg - t.half_width_ra_deg, t.dec_deg - t.half_height_deg),
                2 * t.half_width_ra_deg,
                2 * t.half_height_deg,
                facecolor="#dddddd" if is_overlap else color.get(site or "", "#999999"),
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
    ax.set_title(f"{cfg.campaign.release}: tracts by processing site")
    handles = [Patch(facecolor=color[s], label=s) for s in sites]
    handles.append(Patch(facecolor="#dddddd", hatch="//", edgecolor="black", label="overlap (every site)"))
    ax.legend(handles=handles, loc="upper right", fontsize="small")
    images["skymap"] = _save(fig, out / "skymap.png")

    # -- jobs -----------------------------------------------------------------------------------------
    steps = ["calibrate", "warp", "coadd", "measure", "merge"]
    job_stats: dict[str, dict[str, dict[str, float]]] = {}
    if attempts:
        fig = _figure(9, 4)
        ax_wall, ax_rss = fig.subplots(1, 2)
        width = 0.8 / max(1, len(sites))
        for i, site in enumerate(sites):
            walls = [[w for s, st, w, _, _ in attempts if s == site and st == step] for step in steps]
            rss = [
                [(r or 0) / 2**20 for s, st, _, r, _ in attempts if s == site and st == step]
                for step in steps
            ]
            pos = np.arange(len(steps)) + (i - (len(sites) - 1) / 2) * width
            for ax, values in ((ax_wall, walls), (ax_rss, rss)):
                keep = [k for k, v in enumerate(values) if v]
                if keep:
                    bp = ax.boxplot(
                        [values[k] for k in keep], positions=pos[keep], widths=width * 0.9, patch_artist=True
                    )
                    for box in bp["boxes"]:
                        box.set_facecolor(color[site])
            for step, w, r in zip(steps, walls, rss, strict=True):
                if w:
                    job_stats.setdefault(site, {})[step] = {
                        "jobs": len(w),
                        "wall_median_s": float(np.median(w)),
                        "rss_max_mib": float(max(r)),
                    }
        for ax, label in ((ax_wall, "wall time per attempt (s)"), (ax_rss, "peak RSS (MiB)")):
            ax.set_xticks(range(len(steps)), steps, rotation=30)
            ax.set_ylabel(label)
        ax_wall.legend(handles=[Patch(facecolor=color[s], label=s) for s in sites], fontsize="small")
        images["jobs"] = _save(fig, out / "jobs.png")

    # -- transfers ------------------------------------------------------------------------------------
    link_stats: dict[str, dict[str, float]] = {}
    if transfers:
        fig = _figure(6, 4)
        ax = fig.add_subplot()
        links = sorted({(a, b) for a, b, _, _ in transfers})
        for i, (a, b) in enumerate(links):
            rows = [(n, s) for x, y, n, s in transfers if (x, y) == (a, b) and s and s > 0]
            rates = [n / s / 2**20 for n, s in rows]
            if rates:
                ax.hist(rates, bins=30, alpha=0.6, color=COLORS[i % len(COLORS)], label=f"{a} → {b}")
                link_stats[f"{a}->{b}"] = {
                    "transfers": len(rows),
                    "bytes": float(sum(n for n, _ in rows)),
                    "median_mib_s": float(np.median(rates)),
                }
        ax.set_xlabel("throughput per transfer (MiB/s)")
        ax.set_ylabel("transfers")
        ax.legend(fontsize="small")
        images["transfers"] = _save(fig, out / "transfers.png")

    # -- accuracy against truth --------------------------------------------------------------------------
    accuracy: dict[str, Any] | None = None
    try:
        from science.validate import validate_release

        acc = validate_release(lead_root, cfg.campaign.release)
        accuracy = acc.to_dict()
        fig = _figure(9, 4)
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
        images["accuracy"] = _save(fig, out / "accuracy.png")
    except DrpError as err:
        accuracy = {"error": str(err)}

    # -- overlap residuals --------------------------------------------------------------------------------
    overlap: list[dict[str, Any]] = []
    if cfg.split.overlap and len(catalogue.sites) > 1:
        from science.crossval import compare_tract

        fig = _figure(9, 3.5)
        axes = fig.subplots(1, len(ctx.bands), squeeze=False)[0]
        for other in catalogue.sites:
            if other.name == catalogue.lead.name:
                continue
            for tract in cfg.split.overlap:
                try:
                    res = compare_tract(
                        (lead_root, site_root(other)),
                        (catalogue.lead.name, other.name),
                        cfg.campaign.release,
                        tract,
                        [p.index for p in ctx.skymap.tracts[tract].patches],
                        ctx.bands,
                        cfg.validation,
                    )
                except DrpError as err:
                    overlap.append(
                        {"tract": tract, "sites": [catalogue.lead.name, other.name], "error": str(err)}
                    )
                    continue
                overlap.append(res.to_dict())
                for ax, band in zip(axes, ctx.bands, strict=True):
                    pulls = res.pulls.get(band, [])
                    if pulls:
                        ax.hist(
                            np.clip(pulls, -5, 5),
                            bins=41,
                            range=(-5, 5),
                            histtype="step",
                            label=f"t{tract} vs {other.name}",
                        )
        for ax, band in zip(axes, ctx.bands, strict=True):
            ax.set_title(f"{band}: (f₁ − f₂)/σ")
            ax.set_xlabel("pull")
        axes[0].legend(fontsize="x-small")
        images["overlap"] = _save(fig, out / "overlap.png")

    data: dict[str, Any] = {
        "campaign": cfg.name,
        "release": cfg.campaign.release,
        "status": status.to_dict(),
        "plan": {
            "version": stored.version,
            "assignment": {str(t): s for t, s in sorted(stored.plan.assignment.items())},
            "overlap": sorted(stored.plan.overlap),
        },
        "jobs": job_stats,
        "transfers": link_stats,
        "accuracy": accuracy,
        "overlap": overlap,
        "validations": [
            {
                "tract": t,
                "sites": s,
                "quantity": q,
                "value": v,
                "limit": lim,
                "passed": bool(p),
                **json.loads(d or "{}"),
            }
            for t, s, q, v, lim, p, d in checks
        ],
        "images": images,
    }
    write_bytes_atomic(out / "report.json", json.dumps(data, indent=1, sort_keys=True, default=str).encode())
    page = _html(cfg, status, data, images)
    write_bytes_atomic(out / "index.html", page.encode())
    return Report(out, out / "index.html", data)


def _table(columns: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html(cfg: CampaignConfig, status: CampaignStatus, data: dict[str, Any], images: dict[str, str]) -> str:
    def img(key: str, caption: str) -> str:
        if key not in images:
            return f"<p><em>{html.escape(caption)}: no data yet.</em></p>"
        alt = html.escape(caption)
        return f'<figure><img src="{images[key]}" alt="{alt}"><figcaption>{alt}</figcaption></figure>'

    failed = [v for v in data["validations"] if not v["passed"]]
    phases = _table(
        ["phase", "seconds", "ticks", "failures", "message"],
        [[p.phase, f"{p.seconds:.1f}", p.ticks, p.failures, p.message or ""] for p in status.phases],
    )
    replicas = _table(
        ["site", "state", "files", "bytes"], [[r.site, r.state, r.files, r.bytes] for r in status.replicas]
    )
    transfers = _table(
        ["source", "dest", "state", "transfers", "bytes"],
        [[t.source, t.dest, t.state, t.transfers, t.bytes] for t in status.transfers],
    )
    jobs = _table(["site", "step", "state", "jobs"], [[j.site, j.step, j.state, j.jobs] for j in status.jobs])
    checks = _table(
        ["tract", "sites", "quantity", "value", "limit", "passed"],
        [
            [
                v["tract"],
                v["sites"],
                v["quantity"],
                "-" if v["value"] is None else f"{v['value']:.4g}",
                v["limit"],
                "yes" if v["passed"] else "NO",
            ]
            for v in data["validations"]
        ],
    )
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}th{background:#f0f0f0}"
        "img{max-width:100%}.bad{color:#b00}"
    )
    title = html.escape(f"Campaign {cfg.name} — {cfg.campaign.release} [{status.state}]")
    verdict = f"{len(data['validations']) - len(failed)} of {len(data['validations'])} checks passed."
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>satdrp campaign {html.escape(cfg.name)}</title>
<style>{style}</style></head><body>
<h1>{title}</h1>
<p>{html.escape(status.message or "")}</p>
<h2>Phases</h2>{phases}
<h2>Split</h2>{img("skymap", "tracts coloured by processing site; overlap hatched")}
<h2>Files and transfers</h2>{replicas}{transfers}
{img("transfers", "throughput per transfer, by link")}
<h2>Jobs</h2>{jobs}
{img("jobs", "wall time and peak memory per attempt, by step and site")}
<h2>Accuracy against truth (lead site)</h2>
{img("accuracy", "photometric bias and scatter per band; completeness")}
<h2>Overlap cross-validation</h2>
<p class="{"bad" if failed else ""}">{verdict}</p>{checks}
{img("overlap", "flux pulls of matched objects between the lead and each satellite")}
<p>Numbers: <a href="report.json">report.json</a></p>
</body></html>
"""
