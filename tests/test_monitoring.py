"""Monitoring against a real Prometheus and Pushgateway after a tiny campaign: the exporter is scraped,
a tick's push arrives, promtool accepts both outputs and the alert rules (with their unit tests), and
every PromQL expression of every dashboard runs, the campaign-overview panels returning data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bookkeeping.pgserver import free_port
from drp.campaign import CampaignDriver
from instrumentation.dashboards import DIR, dashboards, expressions, render
from instrumentation.exporter import serve
from tests.conftest import service_unavailable
from tests.prom_server import Prometheus, Pushgateway, available
from tests.test_campaign import _setup
from tests.test_local_backend import CFG

RULES = Path(__file__).resolve().parent.parent / "instrumentation" / "prometheus"


@dataclass
class Stack:
    driver: CampaignDriver
    prometheus: Prometheus
    gateway: Pushgateway
    exporter: str
    textfile: Path
    tmp: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not available():
        service_unavailable(
            "prometheus, promtool or prometheus-pushgateway missing (make test installs them)"
        )
    from science.synth import generate_release

    tmp = tmp_path_factory.mktemp("monitoring")
    pristine = tmp / "pristine"
    generate_release(CFG, pristine)
    work = tmp / "campaign"
    work.mkdir()
    driver = _setup(work, pristine)
    assert driver.run(max_ticks=200).after == "DONE"
    stop = threading.Event()
    exporter = f"127.0.0.1:{free_port()}"
    thread = threading.Thread(
        target=serve, args=(driver.db, exporter), kwargs={"refresh_s": 1.0, "stop": stop}
    )
    thread.start()
    gateway = Pushgateway(tmp / "pushgateway").start()
    prometheus = Prometheus(
        tmp / "prometheus",
        {"satdrp": exporter, "pushgateway": f"127.0.0.1:{gateway.port}"},
        (RULES / "alerts.yml",),
    ).start()
    textfile = tmp / "textfile" / "drp_tick.prom"
    # one cron tick of the finished campaign, pushing and writing its metrics
    env = {**os.environ, "DRP_DB_URL": driver.db.url}
    tick = subprocess.run(
        [
            sys.executable,
            "-c",
            "from cli import main; main()",
            "campaign",
            "tick",
            str(work / "campaign.toml"),
            "--push-gateway",
            gateway.url,
            "--textfile",
            str(textfile),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tick.returncode == 0, tick.stdout + tick.stderr
    try:
        yield Stack(driver, prometheus, gateway, exporter, textfile, tmp)
    finally:
        stop.set()
        thread.join(10)
        prometheus.stop()
        gateway.stop()


def _promtool_check_metrics(text: str) -> None:
    proc = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), (
        proc.stdout + proc.stderr
    )


def test_exporter_is_scraped_and_clean(stack: Stack) -> None:
    up = stack.prometheus.wait_for('up{job="satdrp"} == 1')
    assert up
    states = stack.prometheus.wait_for('drp_campaign_state{job="satdrp"}')
    assert {(r["metric"]["campaign"], r["value"][1]) for r in states} == {("c1", "9")}
    with urllib.request.urlopen(f"http://{stack.exporter}/metrics", timeout=10) as r:
        body = r.read().decode()
    assert "drp_attempt_duration_seconds_bucket" in body and "drp_transfers_completed_total" in body
    _promtool_check_metrics(body)


def test_tick_push_arrives_and_textfile_is_clean(stack: Stack) -> None:
    pushed = stack.prometheus.wait_for('drp_tick_exit_code{job="drp_campaign_tick"}')
    (sample,) = pushed
    assert (
        sample["metric"]["campaign"] == "c1"
        and sample["metric"]["site"] == "ncsa"
        and sample["value"][1] == "0"
    )
    assert stack.prometheus.wait_for('drp_campaign_done{job="drp_campaign_tick",campaign="c1"} == 1')
    _promtool_check_metrics(stack.textfile.read_text())
    assert not list(stack.textfile.parent.glob("*.tmp*")), "the textfile is written atomically"


def test_alert_rules_check_and_unit_tests() -> None:
    if not shutil.which("promtool"):
        service_unavailable("promtool missing")
    check = subprocess.run(
        ["promtool", "check", "rules", str(RULES / "alerts.yml")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run(
        ["promtool", "test", "rules", "alerts_test.yml"], cwd=RULES, capture_output=True, text=True
    )
    assert test.returncode == 0 and "SUCCESS" in test.stdout, test.stdout + test.stderr


def test_dashboard_files_are_up_to_date() -> None:
    for name, dash in dashboards().items():
        assert (DIR / f"{name}.json").read_text() == render(name, dash), (
            f"{name}.json is stale: run python -m instrumentation.dashboards"
        )


def _lost(a: Any, b: Any, path: str = "") -> list[str]:
    """Keys and values of ``a`` that ``b`` (its round trip through Grafana's types) lost or changed."""
    if isinstance(a, dict):
        if not isinstance(b, dict):
            return [f"{path}: became {type(b).__name__}"]
        return [
            p for k, v in a.items() for p in (_lost(v, b[k], f"{path}/{k}") if k in b else [f"{path}/{k}"])
        ]
    if isinstance(a, list):
        if not isinstance(b, list) or len(a) != len(b):
            return [f"{path}: list changed"]
        return [p for i, (x, y) in enumerate(zip(a, b, strict=True)) for p in _lost(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} → {b!r}"]


def test_dashboards_follow_grafanas_schema() -> None:
    """Each dashboard read into grafana-foundation-sdk's Dashboard (types generated from Grafana's own
    schema) and written back loses nothing: no key Grafana does not know; variable types and refresh
    modes are the schema's enum values; every panel type is one of Grafana's panel plugins."""
    import pkgutil

    import grafana_foundation_sdk.models as kinds
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import Dashboard, VariableRefresh, VariableType

    plugins = {m.name for m in pkgutil.iter_modules(kinds.__path__)}
    for path in sorted(DIR.glob("*.json")):
        data = json.loads(path.read_text())
        back = json.loads(json.dumps(Dashboard.from_json(data), cls=JSONEncoder))
        assert _lost(data, back) == [], path.name
        assert {p["type"] for p in data["panels"]} <= plugins, path.name
        for var in data.get("templating", {}).get("list", []):
            assert var["type"] in {t.value for t in VariableType}, (path.name, var["name"])
            assert var.get("refresh", 0) in {r.value for r in VariableRefresh}, (path.name, var["name"])
    # and the check can fail: a misspelt key is caught
    bad = json.loads((DIR / "overview.json").read_text())
    bad["panels"][0]["gridpos"] = bad["panels"][0].pop("gridPos")
    back = json.loads(json.dumps(Dashboard.from_json(bad), cls=JSONEncoder))
    assert _lost(bad, back) == ["/panels[0]/gridpos"]


def test_every_dashboard_expression_runs_and_the_overview_has_data(stack: Stack) -> None:
    stack.prometheus.wait_for('drp_jobs{job="satdrp"}')
    stack.prometheus.wait_for('drp_attempt_cpu_seconds_total{job="satdrp"}')  # profiles refreshed
    errors, empty = [], []
    for name, dash in dashboards().items():
        for title, expr in expressions(dash):
            res = stack.prometheus.query(expr)
            if res.get("status") != "success":
                errors.append(f"{name} / {title}: {expr}: {res.get('error')}")
            elif name == "overview" and not res["data"]["result"]:
                empty.append(f"{title}: {expr}")
    assert not errors, errors
    assert not empty, f"overview panels without data: {empty}"


def test_metrics_serve_refuses_a_bad_or_busy_address(tmp_path: Path) -> None:
    """A wrong --listen is a usage error (exit 2) that names the option, not a traceback."""
    import socket

    from click.testing import CliRunner

    from cli import cli

    env = {"DRP_DB_URL": f"sqlite:///{tmp_path / 'bk.sqlite'}"}
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade"], env=env).exit_code == 0
    bad = runner.invoke(cli, ["metrics", "serve", "--listen", "localhost"], env=env)
    assert bad.exit_code == 2, bad.output
    assert "--listen" in bad.output and "HOST:PORT" in bad.output
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = runner.invoke(cli, ["metrics", "serve", "--listen", f"127.0.0.1:{port}"], env=env)
    assert taken.exit_code == 2, taken.output
    assert f"cannot listen on 127.0.0.1:{port}" in taken.output
