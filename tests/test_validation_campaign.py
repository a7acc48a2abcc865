"""Overlap validation inside campaigns: a band missing from one site's catalogue fails the campaign by
name (no traceback; `retry` after the repair completes it), and with three sites every pair of sites
is compared, satellites against each other too."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
from sqlalchemy import text

from bookkeeping.database import Database
from drp.campaign import CampaignDriver
from drp.campaign_config import load_campaign
from sites.catalogue import load_catalogue
from tests.test_campaign import _run_until, _setup, pristine  # noqa: F401 - the module's release


def test_a_band_missing_at_one_site_fails_the_campaign_by_name_then_retry(
    tmp_path: Path,
    pristine: Path,  # noqa: F811
) -> None:
    from click.testing import CliRunner

    from cli import cli

    driver = _setup(tmp_path, pristine)
    _run_until(driver, "VALIDATING")
    path = tmp_path / "in2p3" / "tiny/objectTable/tract0000.parquet"
    good = pq.read_table(path)
    pq.write_table(good.drop_columns(["r_psfFlux", "r_psfFluxErr", "r_flag_psf"]), path)
    out = CliRunner().invoke(
        cli,
        ["campaign", "tick", str(tmp_path / "campaign.toml"), "--json"],
        env={"DRP_DB_URL": driver.db.url},
    )
    assert out.exit_code == 1 and "Traceback" not in out.output, out.output
    result = json.loads(out.output)
    assert result["after"] == "FAILED"
    assert "tract 0 ncsa vs in2p3: columns[r]" in result["message"], result["message"]
    assert "in2p3 lacks r_psfFlux, r_psfFluxErr, r_flag_psf" in result["message"]
    with driver.db.session() as s:
        rows = s.execute(text("SELECT quantity, passed, details FROM validations WHERE NOT passed")).all()
    assert [(q, p) for q, p, _ in rows] == [("columns[r]", False)]
    assert json.loads(rows[0][2])["band"] == "r"
    pq.write_table(good, path)
    assert "back to VALIDATING" in driver.retry()
    assert driver.run(max_ticks=100).after == "DONE"


def test_three_sites_compare_every_pair(tmp_path: Path, pristine: Path) -> None:  # noqa: F811
    shutil.copytree(pristine, tmp_path / "ncsa")
    sites = ""
    for name, role, share in (("ncsa", "lead", 0.4), ("in2p3", "satellite", 0.3), ("ral", "satellite", 0.3)):
        (tmp_path / name).mkdir(exist_ok=True)
        sites += (
            f'[[site]]\nname = "{name}"\nrole = "{role}"\nshare = {share}\n'
            f'storage = "file://{tmp_path / name}"\n'
            '[site.compute]\nbackend = "local"\nmax_workers = 2\n\n'
        )
    (tmp_path / "sites.toml").write_text(sites + "[transfer]\nbackoff_s = 0\n")
    (tmp_path / "campaign.toml").write_text(
        '[campaign]\nname = "c3"\nrelease = "tiny"\n\n[split]\noverlap = [0]\n\n'
        "[ticks]\ntransfer_seconds = 30\npoll_seconds = 0.2\n"
    )
    cfg = load_campaign(tmp_path / "campaign.toml")
    db = Database(f"sqlite:///{tmp_path / 'bk.sqlite'}")
    db.upgrade()
    driver = CampaignDriver(db, cfg, load_catalogue(cfg.sites_path))
    driver.create()
    assert driver.run(max_ticks=300).after == "DONE"
    with db.session() as s:
        pairs = set(s.execute(text("SELECT DISTINCT sites FROM validations")).scalars())
    assert pairs == {"ncsa,in2p3", "ncsa,ral", "in2p3,ral"}
