"""Grafana dashboards for satdrp, generated here and checked in as JSON under
``instrumentation/grafana/dashboards/`` (``python -m instrumentation.dashboards`` rewrites them; a test
checks they are up to date and runs every PromQL expression against a real Prometheus).

Dashboards: campaign overview; transfers; jobs and job profiles; storage and replicas; disaster
recovery status. Each has a Prometheus data-source variable and, where it applies, a campaign
variable.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bookkeeping.states import CampaignState

DIR = Path(__file__).resolve().parent / "grafana" / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}
C = '{campaign=~"$campaign"}'


def c(extra: str) -> str:
    """A campaign selector with more matchers, e.g. c('state="FAILED"')."""
    return '{campaign=~"$campaign",' + extra + "}"


def _panel(
    kind: str,
    title: str,
    targets: list[tuple[str, str]],
    x: int,
    y: int,
    w: int = 12,
    h: int = 8,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "type": kind,
        "title": title,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": [
            {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": chr(ord("A") + i)}
            for i, (expr, legend) in enumerate(targets)
        ],
        **extra,
    }


def _dashboard(
    uid: str, title: str, panels: list[dict[str, Any]], campaign_var: bool = True
) -> dict[str, Any]:
    variables: list[dict[str, Any]] = [
        {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}
    ]
    if campaign_var:
        variables.append(
            {
                "name": "campaign",
                "type": "query",
                "datasource": DS,
                "query": {"query": "label_values(drp_campaign_info, campaign)", "refId": "campaign"},
                "definition": "label_values(drp_campaign_info, campaign)",
                "includeAll": True,
                "multi": True,
                "current": {"text": "All", "value": "$__all"},
                "refresh": 2,
            }
        )
    for i, p in enumerate(panels, start=1):
        p["id"] = i
    return {
        "uid": uid,
        "title": title,
        "tags": ["satdrp"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "1m",
        "time": {"from": "now-24h", "to": "now"},
        "templating": {"list": variables},
        "panels": panels,
    }


STATE_MAPPINGS = [{"type": "value", "options": {str(int(s)): {"text": s.name}}} for s in CampaignState]


def dashboards() -> dict[str, dict[str, Any]]:
    overview = _dashboard(
        "satdrp-overview",
        "satdrp — campaign overview",
        [
            _panel(
                "stat",
                "Campaign state",
                [(f"max by (campaign) (drp_campaign_state{C})", "{{campaign}}")],
                0,
                0,
                8,
                4,
                fieldConfig={"defaults": {"mappings": STATE_MAPPINGS}, "overrides": []},
            ),
            _panel(
                "stat",
                "Seconds since the last tick",
                [
                    (
                        f"time() - max by (campaign) (drp_campaign_last_tick_timestamp_seconds{C})",
                        "{{campaign}}",
                    )
                ],
                8,
                0,
                8,
                4,
                fieldConfig={"defaults": {"unit": "s"}, "overrides": []},
            ),
            _panel(
                "stat",
                "Overlap checks failed",
                [
                    (
                        "sum by (campaign) (drp_validation_checks" + c('result="failed"') + ")",
                        "{{campaign}}",
                    )
                ],
                16,
                0,
                8,
                4,
            ),
            _panel("timeseries", "Jobs by state", [(f"sum by (state) (drp_jobs{C})", "{{state}}")], 0, 4),
            _panel(
                "timeseries",
                "Transfers by state",
                [(f"sum by (state) (drp_transfers{C})", "{{state}}")],
                12,
                4,
            ),
            _panel(
                "timeseries",
                "Files available per site",
                [('sum by (site) (drp_replica_files{state="AVAILABLE"})', "{{site}}")],
                0,
                12,
            ),
            _panel("timeseries", "Rules by state", [("sum by (state) (drp_rules)", "{{state}}")], 12, 12),
        ],
    )
    transfers = _dashboard(
        "satdrp-transfers",
        "satdrp — transfers",
        [
            _panel(
                "timeseries",
                "Throughput per link",
                [(f"sum by (source, dest) (rate(drp_transfer_bytes_total{C}[5m]))", "{{source}} → {{dest}}")],
                0,
                0,
                fieldConfig={"defaults": {"unit": "Bps"}, "overrides": []},
            ),
            _panel(
                "timeseries",
                "Transfers completed per second",
                [
                    (
                        f"sum by (source, dest) (rate(drp_transfers_completed_total{C}[5m]))",
                        "{{source}} → {{dest}}",
                    )
                ],
                12,
                0,
            ),
            _panel(
                "timeseries",
                "In flight and queued",
                [
                    (
                        "sum by (source, dest, state) (drp_transfers"
                        + c('state=~"QUEUED|SUBMITTED|ACTIVE"')
                        + ")",
                        "{{source}} → {{dest}} {{state}}",
                    )
                ],
                0,
                8,
            ),
            _panel(
                "timeseries",
                "Given up",
                [
                    (
                        "sum by (source, dest) (drp_transfers" + c('state="FAILED"') + ")",
                        "{{source}} → {{dest}}",
                    )
                ],
                12,
                8,
            ),
            _panel(
                "timeseries",
                "Transfer duration p50 / p95",
                [
                    (
                        "histogram_quantile(0.5, sum by (le, source, dest) "
                        f"(rate(drp_transfer_duration_seconds_bucket{C}[15m])))",
                        "p50 {{source}} → {{dest}}",
                    ),
                    (
                        "histogram_quantile(0.95, sum by (le, source, dest) "
                        f"(rate(drp_transfer_duration_seconds_bucket{C}[15m])))",
                        "p95 {{source}} → {{dest}}",
                    ),
                ],
                0,
                16,
                24,
                fieldConfig={"defaults": {"unit": "s"}, "overrides": []},
            ),
        ],
    )
    jobs = _dashboard(
        "satdrp-jobs",
        "satdrp — jobs and job profiles",
        [
            _panel(
                "timeseries",
                "Jobs by step and state",
                [(f"sum by (step, state) (drp_jobs{C})", "{{step}} {{state}}")],
                0,
                0,
            ),
            _panel(
                "timeseries",
                "Failed attempts by site and step",
                [
                    (
                        "sum by (site, step) (drp_attempts_total" + c('result="failed"') + ")",
                        "{{site}} {{step}}",
                    )
                ],
                12,
                0,
            ),
            _panel(
                "timeseries",
                "CPU cores used by step",
                [(f"sum by (step) (rate(drp_attempt_cpu_seconds_total{C}[5m]))", "{{step}}")],
                0,
                8,
            ),
            _panel(
                "timeseries",
                "Peak RSS by step",
                [(f"max by (step) (drp_attempt_peak_rss_max_bytes{C})", "{{step}}")],
                12,
                8,
                fieldConfig={"defaults": {"unit": "bytes"}, "overrides": []},
            ),
            _panel(
                "timeseries",
                "Attempt wall time p95 by step",
                [
                    (
                        "histogram_quantile(0.95, sum by (le, step) "
                        f"(rate(drp_attempt_duration_seconds_bucket{C}[15m])))",
                        "{{step}}",
                    )
                ],
                0,
                16,
                fieldConfig={"defaults": {"unit": "s"}, "overrides": []},
            ),
            _panel(
                "timeseries",
                "Storage I/O by step",
                [
                    (f"sum by (step) (rate(drp_attempt_read_bytes_total{C}[5m]))", "read {{step}}"),
                    (f"sum by (step) (rate(drp_attempt_write_bytes_total{C}[5m]))", "write {{step}}"),
                ],
                12,
                16,
                fieldConfig={"defaults": {"unit": "Bps"}, "overrides": []},
            ),
        ],
    )
    storage = _dashboard(
        "satdrp-storage",
        "satdrp — storage and replicas",
        [
            _panel(
                "timeseries",
                "Bytes per site and replica state",
                [("sum by (site, state) (drp_replica_bytes)", "{{site}} {{state}}")],
                0,
                0,
                fieldConfig={"defaults": {"unit": "bytes"}, "overrides": []},
            ),
            _panel(
                "timeseries",
                "Files not AVAILABLE",
                [('sum by (site, state) (drp_replica_files{state!="AVAILABLE"})', "{{site}} {{state}}")],
                12,
                0,
            ),
            _panel(
                "timeseries",
                "Replicas declared bad",
                [("sum by (site, source) (drp_bad_replicas_declared_total)", "{{site}} ({{source}})")],
                0,
                8,
                24,
            ),
        ],
        campaign_var=False,
    )
    dr = _dashboard(
        "satdrp-dr",
        "satdrp — disaster-recovery status",
        [
            _panel(
                "bargauge",
                "Share of the catalogue available at each site",
                [
                    (
                        'sum by (site) (drp_replica_files{state="AVAILABLE"}) '
                        "/ scalar(max(sum by (site) (drp_replica_files)))",
                        "{{site}}",
                    )
                ],
                0,
                0,
                fieldConfig={"defaults": {"unit": "percentunit", "min": 0, "max": 1}, "overrides": []},
            ),
            _panel(
                "stat",
                "Files lacking a copy at each site",
                [
                    (
                        "scalar(max(sum by (site) (drp_replica_files))) "
                        '- sum by (site) (drp_replica_files{state="AVAILABLE"})',
                        "{{site}}",
                    )
                ],
                12,
                0,
            ),
            _panel(
                "timeseries",
                "BAD and LOST replicas",
                [('sum by (site, state) (drp_replica_files{state=~"BAD|LOST"})', "{{site}} {{state}}")],
                0,
                8,
            ),
            _panel("stat", "Rules STUCK", [('sum(drp_rules{state="STUCK"})', "stuck")], 12, 8),
        ],
        campaign_var=False,
    )
    return {"overview": overview, "transfers": transfers, "jobs": jobs, "storage": storage, "dr": dr}


def expressions(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every target, with the template variables given concrete values."""
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            yield panel["title"], target["expr"].replace("$campaign", ".*")


def render(name: str, dashboard: dict[str, Any]) -> str:
    return json.dumps(dashboard, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> int:
    DIR.mkdir(parents=True, exist_ok=True)
    for name, dash in dashboards().items():
        (DIR / f"{name}.json").write_text(render(name, dash))
    print(f"wrote {len(dashboards())} dashboards to {DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
