"""The report's numbers, gathered once: bookkeeping (status, plan, attempts, transfers, validations) and
the science checks run on the sites' outputs (accuracy against truth, overlap comparisons)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bookkeeping import campaigns, reports
from bookkeeping.database import Database
from bookkeeping.plans import StoredPlan, load_plan
from bookkeeping.queries import CampaignStatus, campaign_status
from bookkeeping.reports import AttemptSample, TransferSample
from common.errors import DrpError, NotFoundError
from drp.campaign_config import CampaignConfig
from sites.catalogue import SiteCatalogue

STEPS = ("calibrate", "warp", "coadd", "measure", "merge")


@dataclass
class ReportData:
    """Everything the figures and the page show; ``to_dict`` is report.json."""

    campaign: str
    release: str
    sites: list[str]
    lead_root: Path
    status: CampaignStatus
    plan: StoredPlan
    attempts: list[AttemptSample]
    transfers: list[TransferSample]
    validations: list[dict[str, Any]]
    accuracy: Any = None  # science.validate result, or None when it failed (see accuracy_error)
    accuracy_error: str | None = None
    # per (tract, pair of sites): the recorded science.crossval results
    overlap: list[Any] = field(default_factory=list)
    overlap_note: str = ""
    compute: dict[str, dict[str, Any]] = field(default_factory=dict)  # site -> role, share, back-end, where

    def site_stats(self) -> dict[str, dict[str, Any]]:
        """site → its role, share and compute back-end, with the attempts it ran and their cost."""
        out: dict[str, dict[str, Any]] = {}
        for site in self.sites:
            mine = [a for a in self.attempts if a.site == site]
            out[site] = {
                **self.compute.get(site, {}),
                "attempts": len(mine),
                "wall_median_s": float(np.median([a.wall_s for a in mine])) if mine else None,
                "cpu_hours": sum(a.cpu_s or 0.0 for a in mine) / 3600,
            }
        return out

    def job_stats(self) -> dict[str, dict[str, dict[str, float]]]:
        """site → step → jobs, median wall time, largest peak RSS."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for site in self.sites:
            for step in STEPS:
                mine = [a for a in self.attempts if a.site == site and a.step == step]
                if mine:
                    out.setdefault(site, {})[step] = {
                        "jobs": len(mine),
                        "wall_median_s": float(np.median([a.wall_s for a in mine])),
                        "rss_max_mib": float(max((a.peak_rss or 0) / 2**20 for a in mine)),
                    }
        return out

    def link_stats(self) -> dict[str, dict[str, float]]:
        """ "a->b" → transfers, bytes and median throughput (MiB/s) of the link's timed transfers."""
        out: dict[str, dict[str, float]] = {}
        for a, b in sorted({(t.source, t.dest) for t in self.transfers}):
            timed = [
                t for t in self.transfers if (t.source, t.dest) == (a, b) and t.seconds and t.seconds > 0
            ]
            if timed:
                out[f"{a}->{b}"] = {
                    "transfers": len(timed),
                    "bytes": float(sum(t.bytes for t in timed)),
                    "median_mib_s": float(np.median([t.bytes / (t.seconds or 1) / 2**20 for t in timed])),
                }
        return out

    def to_dict(self, images: dict[str, str]) -> dict[str, Any]:
        return {
            "campaign": self.campaign,
            "release": self.release,
            "status": self.status.to_dict(),
            "plan": {
                "version": self.plan.version,
                "assignment": {str(t): s for t, s in sorted(self.plan.plan.assignment.items())},
                "overlap": sorted(self.plan.plan.overlap),
            },
            "sites": self.site_stats(),
            "jobs": self.job_stats(),
            "transfers": self.link_stats(),
            "accuracy": self.accuracy.to_dict()
            if self.accuracy is not None
            else {"error": self.accuracy_error},
            "overlap": [r.to_dict() for r in self.overlap],
            "overlap_source": self.overlap_note,
            "validations": self.validations,
            "images": images,
        }


def gather(db: Database, cfg: CampaignConfig, catalogue: SiteCatalogue) -> ReportData:
    from drp.processing import site_root

    with db.session() as session:
        camp = campaigns.get(session, cfg.name)
        status = campaign_status(session, cfg.name)
        stored = load_plan(session, cfg.name)
        attempts = reports.attempt_samples(session, camp.id)
        transfers = reports.transfer_samples(session, camp.id)
        validations = reports.validations(session, camp.id)
    if stored is None:
        raise NotFoundError(f"campaign {cfg.name} has no split plan yet: nothing to report")
    data = ReportData(
        cfg.name,
        cfg.campaign.release,
        [s.name for s in catalogue.sites],
        site_root(catalogue.lead),
        status,
        stored,
        attempts,
        transfers,
        validations,
    )
    for site in catalogue.sites:
        settings = site.compute.settings
        where = settings.get("schedd") or (
            f"{settings['max_workers']} workers" if "max_workers" in settings else "this host"
        )
        data.compute[site.name] = {
            "role": site.role.value,
            "share": site.share,
            "compute": site.compute.backend,
            "where": str(where),
        }
    _accuracy(data)
    _overlap(data, cfg)
    return data


def _accuracy(data: ReportData) -> None:
    from science.validate import validate_release

    try:
        data.accuracy = validate_release(data.lead_root, data.release)
    except DrpError as err:
        data.accuracy_error = str(err)


def _overlap(data: ReportData, cfg: CampaignConfig) -> None:
    """The last validation's recorded comparisons: the checks table, report.json and the plots all come
    from them, so they agree with each other and with the campaign's state whatever happened to the
    files since (`drp campaign validate` compares again and records anew)."""
    from drp.overlap import read_record, record_path, report_rows

    path = record_path(cfg.workdir, cfg.name)
    try:
        record = read_record(path)
    except DrpError as err:
        data.overlap_note = str(err)
        return
    if record is None:
        data.overlap_note = (
            "no recorded validation: the campaign has not reached VALIDATING"
            if data.validations == []
            else f"the checks below come from the books; {path} is missing (run `drp campaign validate`)"
        )
        return
    data.overlap.extend(record)
    data.validations = report_rows(record)
    data.overlap_note = f"recorded in {path.name}, {len(record)} comparisons"
