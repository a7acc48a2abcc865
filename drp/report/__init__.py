"""``drp campaign report``: one HTML page with PNG plots, and the same numbers as JSON.

Three steps, each testable alone: :mod:`.data` gathers the numbers (bookkeeping's report queries,
accuracy against truth, and the overlap validation as recorded: its checks table, report.json and
plots all come from that one record), :mod:`.figures` draws them (sky map by site with the overlap
hatched, job wall time and peak memory, transfer throughput, accuracy and completeness, overlap flux
pulls, Δmag against magnitude, position difference vectors), :mod:`.page` renders the Jinja2
template. Everything is written atomically under ``WORKDIR/reports/CAMPAIGN/``
(``index.html``, ``*.png``, ``report.json``).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bookkeeping.database import Database
from common.atomic import write_bytes_atomic
from common.permissions import PRIVATE, Modes, make_dir
from drp.campaign_config import CampaignConfig
from sites.catalogue import SiteCatalogue

from .data import ReportData, gather
from .figures import FIGURES
from .page import render

__all__ = ["Report", "ReportData", "build_report"]


@dataclass(frozen=True)
class Report:
    directory: Path
    html: Path
    data: dict[str, Any]


def build_report(
    db: Database, cfg: CampaignConfig, catalogue: SiteCatalogue, *, modes: Modes = PRIVATE
) -> Report:
    out = make_dir(make_dir(cfg.workdir / "reports", modes) / cfg.name, modes)
    data = gather(db, cfg, catalogue)
    images: dict[str, str] = {}
    for name, (draw, _) in FIGURES.items():
        fig = draw(data)
        if fig is not None:
            buf = io.BytesIO()
            fig.savefig(buf, format="png")
            write_bytes_atomic(out / f"{name}.png", buf.getvalue(), mode=modes.file)
            images[name] = f"{name}.png"
    numbers = data.to_dict(images)
    write_bytes_atomic(
        out / "report.json",
        json.dumps(numbers, indent=1, sort_keys=True, default=str).encode(),
        mode=modes.file,
    )
    write_bytes_atomic(out / "index.html", render(data, images).encode(), mode=modes.file)
    return Report(out, out / "index.html", numbers)
