"""Overlap validation inside campaigns: a band missing from one site's catalogue fails the campaign by
name (no traceback; `retry` after the repair completes it), and with three sites every pair of sites
is compared, satellites against each other too."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
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
    assert driver.run(max_ticks=2000).after == "DONE"


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
    assert driver.run(max_ticks=2000).after == "DONE"
    with db.session() as s:
        pairs = set(s.execute(text("SELECT DISTINCT sites FROM validations")).scalars())
    assert pairs == {"ncsa,in2p3", "ncsa,ral", "in2p3,ral"}


def test_each_sites_overlap_outputs_are_kept_and_validation_runs_again_on_a_done_campaign(
    tmp_path: Path,
    pristine: Path,  # noqa: F811
) -> None:
    """Consolidation replaces in2p3's overlap outputs with the lead's, but in2p3's own are kept under
    tiny/crossval/in2p3/ (catalogued, replicated like every output); `drp campaign validate` compares
    them again after DONE without changing the state, and fails by name when they disagree."""
    from click.testing import CliRunner

    from cli import cli

    driver = _setup(tmp_path, pristine)
    _run_until(driver, "VALIDATING")
    name = "tiny/objectTable/tract0000.parquet"
    own = pq.read_table(tmp_path / "in2p3" / name)
    marked = own.replace_schema_metadata({**(own.schema.metadata or {}), b"made_at": b"in2p3"})
    pq.write_table(marked, tmp_path / "in2p3" / name)  # same numbers: validation passes
    assert driver.run(max_ticks=2000).after == "DONE"
    kept = f"tiny/crossval/in2p3/{name}"
    assert b"made_at" not in (pq.read_schema(tmp_path / "in2p3" / name).metadata or {})  # the lead's now
    for site in ("in2p3", "ncsa"):  # the kept copy, catalogued and replicated
        assert pq.read_schema(tmp_path / site / kept).metadata[b"made_at"] == b"in2p3"
    with driver.db.session() as s:
        n = s.execute(
            text(
                "SELECT count(*) FROM replicas r JOIN files f ON f.id = r.file_id "
                "WHERE f.name = :n AND r.state = 1"
            ),
            {"n": kept},
        ).scalar_one()
    assert n == 2
    runner = CliRunner()
    env = {"DRP_DB_URL": driver.db.url}
    toml = str(tmp_path / "campaign.toml")
    out = runner.invoke(cli, ["campaign", "validate", toml, "--json"], env=env)
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == {"campaign": "c1", "comparisons": 1, "failures": []}
    i = own.column_names.index("r_psfFlux")
    shifted = own.set_column(i, "r_psfFlux", pa.array(np.asarray(own["r_psfFlux"]) * 1.01))
    pq.write_table(shifted, tmp_path / "in2p3" / kept)
    out = runner.invoke(cli, ["campaign", "validate", toml], env=env)
    assert out.exit_code == 1 and "tract 0 ncsa vs in2p3: flux_bias_mmag[r]" in out.output, out.output
    assert driver.campaign().state.name == "DONE"
