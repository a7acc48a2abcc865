"""The report page: the Jinja2 template ``templates/report.html`` filled from :class:`ReportData`."""

from __future__ import annotations

from functools import cache
from typing import Any

from .data import ReportData
from .figures import FIGURES


@cache
def _template() -> Any:
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=PackageLoader("drp.report", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
    )
    return env.get_template("report.html")


def render(data: ReportData, images: dict[str, str]) -> str:
    s = data.status
    checks = [
        [
            v["tract"],
            v["sites"],
            v["quantity"],
            "-" if v["value"] is None else f"{v['value']:.4g}",
            "-" if v["limit"] is None else f"{v['limit']:.4g}",
            "yes" if v["passed"] else "NO",
            v.get("detail", ""),
        ]
        for v in data.validations
    ]
    return str(
        _template().render(
            campaign=data.campaign,
            release=data.release,
            state=s.state,
            message=s.message or "",
            sites=[
                [
                    name,
                    v.get("role", ""),
                    v.get("share", ""),
                    v.get("compute", ""),
                    v.get("where", ""),
                    v["attempts"],
                    "-" if v["wall_median_s"] is None else f"{v['wall_median_s']:.2f}",
                    f"{v['cpu_hours']:.3f}",
                ]
                for name, v in data.site_stats().items()
            ],
            phases=[[p.phase, f"{p.seconds:.1f}", p.ticks, p.failures, p.message or ""] for p in s.phases],
            replicas=[[r.site, r.state, r.files, human_bytes(r.bytes)] for r in s.replicas],
            transfers=[[t.source, t.dest, t.state, t.transfers, human_bytes(t.bytes)] for t in s.transfers],
            jobs=[[j.site, j.step, j.state, j.jobs] for j in s.jobs],
            validations=data.validations,
            overlap_note=data.overlap_note,
            failed=sum(not v["passed"] for v in data.validations),
            checks=checks,
            images=images,
            captions={name: caption for name, (_, caption) in FIGURES.items()},
        )
    )


def human_bytes(n: float | None) -> str:
    """1536 → "1.5 KiB": the page is read by people; report.json keeps the exact counts."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"  # pragma: no cover - the loop returns at TiB
