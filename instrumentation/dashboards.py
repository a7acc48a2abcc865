"""Grafana dashboards for satdrp: data in ``grafana/dashboards.toml``, generated into JSON under
``instrumentation/grafana/dashboards/`` (``python -m instrumentation.dashboards`` rewrites them; a test
checks they are up to date and runs every PromQL expression against a real Prometheus).

Dashboards: campaign overview; transfers; jobs and job profiles; storage and replicas; disaster
recovery status. Each has a Prometheus data-source variable and, where it applies, a campaign
variable.
"""

from __future__ import annotations

import json
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bookkeeping.states import CampaignState

DIR = Path(__file__).resolve().parent / "grafana" / "dashboards"
SPEC = Path(__file__).resolve().parent / "grafana" / "dashboards.toml"
DS = {"type": "prometheus", "uid": "${datasource}"}
CAMPAIGN = '{campaign=~"$campaign"}'
STATE_MAPPINGS = [{"type": "value", "options": {str(int(s)): {"text": s.name}}} for s in CampaignState]
WIDTH = 24  # Grafana's grid


def _expr(template: str) -> str:
    """``{C}`` → the campaign selector; ``{C,matchers}`` → it with more matchers."""
    return template.replace("{C}", CAMPAIGN).replace("{C,", CAMPAIGN[:-1] + ",")


def _panel(spec: dict[str, Any], x: int, y: int) -> dict[str, Any]:
    panel: dict[str, Any] = {
        "type": spec["kind"],
        "title": spec["title"],
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": spec.get("width", 12), "h": spec.get("height", 8)},
        "targets": [
            {"datasource": DS, "expr": _expr(expr), "legendFormat": legend, "refId": chr(ord("A") + i)}
            for i, (expr, legend) in enumerate(spec["targets"])
        ],
    }
    defaults: dict[str, Any] = {k: spec[k] for k in ("unit", "min", "max") if k in spec}
    if spec.get("state_names"):
        defaults["mappings"] = STATE_MAPPINGS
    if defaults:
        panel["fieldConfig"] = {"defaults": defaults, "overrides": []}
    return panel


def _layout(specs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Panels left to right, a new row when the next does not fit; a row is as tall as its tallest."""
    x = y = row_h = 0
    for spec in specs:
        w, h = spec.get("width", 12), spec.get("height", 8)
        if x + w > WIDTH:
            x, y, row_h = 0, y + row_h, 0
        yield _panel(spec, x, y)
        x, row_h = x + w, max(row_h, h)


def _variables(campaign: bool) -> list[dict[str, Any]]:
    variables: list[dict[str, Any]] = [
        {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}
    ]
    if campaign:
        query = "label_values(drp_campaign_info, campaign)"
        variables.append(
            {
                "name": "campaign",
                "type": "query",
                "datasource": DS,
                "query": {"query": query, "refId": "campaign"},
                "includeAll": True,
                "multi": True,
                "current": {"text": "All", "value": "$__all"},
                "refresh": 2,
            }
        )
    return variables


def dashboards(spec: Path = SPEC) -> dict[str, dict[str, Any]]:
    """Every dashboard of the spec file, as Grafana's JSON model."""
    out = {}
    for name, d in tomllib.loads(spec.read_text()).items():
        panels = list(_layout(d["panel"]))
        for i, p in enumerate(panels, start=1):
            p["id"] = i
        out[name] = {
            "uid": d["uid"],
            "title": d["title"],
            "tags": ["satdrp"],
            "timezone": "utc",
            "schemaVersion": 39,
            "version": 1,
            "refresh": "1m",
            "time": {"from": "now-24h", "to": "now"},
            "templating": {"list": _variables(d.get("campaign_variable", True))},
            "panels": panels,
        }
    return out


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
