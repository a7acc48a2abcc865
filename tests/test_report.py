"""The campaign report after an injected fault: its HTML table, report.json and plots come from the one
recorded validation, so they agree with each other (and with the books) even when the files change
afterwards; the page loads in headless Chromium with no console error and every image present."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from sqlalchemy import text

from drp.overlap import read_record, record_path
from drp.report import build_report
from tests.conftest import service_unavailable
from tests.test_campaign import _run_until, _setup, pristine, scale_r_flux  # noqa: F401 - the module's release

# Appended to a copy of the page: every image that did not decode is a console error.
PROBE = """<script>
window.addEventListener("load", () => {
  for (const img of document.images) {
    if (!img.complete || img.naturalWidth === 0) console.error("image not loaded: " + img.src);
  }
  console.log("probe: " + document.images.length + " images checked");
});
</script>"""


def chromium_console(page: Path, screenshot: Path) -> list[str]:
    """Load ``page`` in headless Chromium; return its console messages (errors and logs)."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        service_unavailable("no chromium (scripts/install-system-deps.sh installs it)")
    assert exe is not None
    out = subprocess.run(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--log-level=0",
            "--virtual-time-budget=5000",
            "--window-size=1200,4000",
            f"--screenshot={screenshot}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return [line for line in out.stderr.splitlines() if ":CONSOLE" in line]


def _html_rows(page: str) -> set[tuple[str, str, str]]:
    """(tract, sites, quantity) of the checks table's failed rows."""
    section = page.split("<h2>Overlap cross-validation</h2>", 1)[1]
    rows = re.findall(r"<tr>(.*?)</tr>", section)
    cells = [re.findall(r"<td>(.*?)</td>", r) for r in rows]
    return {(c[0], c[1], c[2]) for c in cells if len(c) >= 6 and c[5] == "NO"}


def test_report_after_a_fault_is_one_story_and_loads_in_chromium(
    tmp_path: Path,
    pristine: Path,  # noqa: F811
) -> None:
    driver = _setup(tmp_path, pristine)
    _run_until(driver, "VALIDATING")
    path, good = scale_r_flux(tmp_path / "in2p3", 1.01)
    assert driver.tick().after == "FAILED"
    pq.write_table(good, path)  # repaired on disk, not validated again: the report tells what was seen

    report = build_report(driver.db, driver.cfg, driver.catalogue)
    page = report.html.read_text()
    numbers = json.loads((report.directory / "report.json").read_text())
    failed_json = {
        (str(v["tract"]), v["sites"], v["quantity"]) for v in numbers["validations"] if not v["passed"]
    }
    assert ("0", "ncsa,in2p3", "flux_offset[r]") in failed_json
    assert not any(q.endswith("[g]") for _, _, q in failed_json)
    assert _html_rows(page) == failed_json
    failed_overlap = {
        (str(r["tract"]), ",".join(r["sites"]), c["quantity"] + (f"[{c['band']}]" if c["band"] else ""))
        for r in numbers["overlap"]
        for c in r["checks"]
        if not c["passed"]
    }
    assert failed_overlap == failed_json
    with driver.db.session() as s:
        books = s.execute(text("SELECT tract, sites, quantity FROM validations WHERE NOT passed")).all()
    assert {(str(t), si, q) for t, si, q in books} == failed_json
    # the plots are drawn from the same record: its Δmag samples show the 1 % (in2p3 brighter)
    record = read_record(record_path(driver.cfg.workdir, "c1"))
    assert record is not None and len(record) == 1
    assert abs(float(np.median(record[0].samples["dmag_mmag[r]"])) - 10.8) < 0.5
    assert float(np.max(np.abs(record[0].samples["dmag_mmag[g]"]))) == 0.0
    for name in ("overlap", "overlap_dmag", "overlap_astrometry", "skymap", "accuracy"):
        assert f'src="{name}.png"' in page and (report.directory / f"{name}.png").stat().st_size > 1000

    probe = report.directory / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"))
    console = chromium_console(probe, tmp_path / "report.png")
    assert any("probe: " in line and " images checked" in line for line in console), console
    assert [line for line in console if "probe: " not in line] == [], console
    n_images = int(re.search(r"probe: (\d+) images", " ".join(console)).group(1))  # type: ignore[union-attr]
    assert n_images == page.count("<img ")
    assert (tmp_path / "report.png").stat().st_size > 10_000

    # validated again after the repair: the new record replaces the old everywhere at once
    failures, _ = driver.validate_overlap()
    assert failures == []
    again = build_report(driver.db, driver.cfg, driver.catalogue)
    assert all(v["passed"] for v in again.data["validations"]) and _html_rows(again.html.read_text()) == set()
