"""A whole campaign with the satellite's compute on HTCondor (DAGMan on the real pool, jobs as an
unprivileged user) and the lead's on the local executor: the same phases, the same books, and one
report showing both sites. The pool's collector is reached through a proxy that goes away when
processing starts: the satellite's submission waits (events, back-off) and goes ahead once it is back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import text

from bookkeeping.database import Database
from bookkeeping.queries import campaign_status
from drp.campaign import CampaignDriver
from drp.campaign_config import load_campaign
from science.synth import generate_release
from sites.catalogue import load_catalogue
from tests.fault_proxy import ProcessProxy
from tests.test_local_backend import CFG
from transfer.checksum import adler32_file


def test_campaign_with_one_site_on_htcondor(condor_pool: Any, condor_workspace: Path) -> None:
    tmp = condor_workspace
    collector = ProcessProxy("127.0.0.1", 9618).up()
    generate_release(CFG, tmp / "ncsa")
    (tmp / "in2p3").mkdir()
    (tmp / "sites.toml").write_text(
        f"""
[[site]]
name = "ncsa"
role = "lead"
share = 0.5
storage = "file://{tmp / "ncsa"}"
[site.compute]
backend = "local"
max_workers = 2

[[site]]
name = "in2p3"
role = "satellite"
share = 0.5
storage = "file://{tmp / "in2p3"}"
[site.compute]
backend = "htcondor"
schedd = "127.0.0.1:{collector.port}"
dagman = "/usr/bin/condor_dagman"
job_user = "{condor_pool.uid}"
batch_name = "satdrp-test-campaign"
poll_interval_s = 0.5

[transfer]
backoff_s = 0
"""
    )
    (tmp / "campaign.toml").write_text(
        """
[campaign]
name = "c1"
release = "tiny"

[split]
overlap = [0]

[ticks]
transfer_seconds = 30
poll_seconds = 0.5
"""
    )
    cfg = load_campaign(tmp / "campaign.toml")
    db = Database(f"sqlite:///{tmp / 'bk.sqlite'}")
    db.upgrade()
    driver = CampaignDriver(db, cfg, load_catalogue(cfg.sites_path))
    driver.create()
    seen: list[str] = []
    waits: list[str] = []

    def on_tick(r: Any) -> None:
        seen.append(f"{r.after}: {r.message}")
        if r.after == "PROCESSING" and r.before == "REPLICATING":
            collector.down()  # the next tick submits: the schedd cannot be located
        elif r.retry_in is not None:
            waits.append(r.message)
            if len(waits) == 2:
                collector.up()

    try:
        result = driver.run(max_ticks=600, on_tick=on_tick)
    finally:
        collector.down()
    assert len(waits) == 2 and all("HTCondor collector" in w and "cannot be reached" in w for w in waits), (
        waits
    )
    with db.session() as s:
        n_waits = s.execute(text("SELECT count(*) FROM events WHERE kind = 'campaign.waiting'")).scalar_one()
    assert n_waits == 2
    assert result.after == "DONE", (result, seen[-5:], condor_pool.queue())
    dag_dir = tmp / "workflows" if (tmp / "workflows").exists() else tmp
    assert list(dag_dir.rglob("satdrp_in2p3.dag.dagman.out")), "the satellite's DAG ran under DAGMan"
    with db.session() as s:
        per_site = dict(
            s.execute(
                text(
                    "SELECT st.name, count(*) FROM attempts a JOIN jobs j ON a.job_id = j.id "
                    "JOIN sites st ON j.site_id = st.id GROUP BY st.name"
                )
            ).all()
        )
        hosts = dict(
            s.execute(
                text(
                    "SELECT st.name, min(a.host) FROM attempts a JOIN jobs j ON a.job_id = j.id "
                    "JOIN sites st ON j.site_id = st.id GROUP BY st.name"
                )
            ).all()
        )
        unprofiled = s.execute(
            text("SELECT count(*) FROM attempts WHERE cpu_user IS NULL OR peak_rss IS NULL")
        ).scalar_one()
        files = s.execute(text("SELECT name, size, adler32 FROM files")).all()
    assert per_site.get("ncsa", 0) > 0 and per_site.get("in2p3", 0) > 0, per_site
    assert unprofiled == 0, "every attempt, local or HTCondor, has its profile"
    assert hosts["in2p3"], hosts
    for site in ("ncsa", "in2p3"):
        for name, size, adler in files:
            assert adler32_file(tmp / site / name) == (adler, size), (site, name)
    with db.session() as s:
        status = campaign_status(s, "c1").to_dict()
    assert {st["site"] for st in status["steps"]} == {"ncsa", "in2p3"}
    (overlap,) = status["validations"]
    assert overlap["failed"] == 0
    from drp.report import build_report

    report = build_report(db, driver.cfg, driver.catalogue)
    page = report.html.read_text()
    assert "in2p3" in page and "ncsa" in page and "htcondor" in page
