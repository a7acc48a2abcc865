"""The whole pipeline chain on a tiny release, judged against truth; bad input fails cleanly."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from click.testing import CliRunner

from cli import cli
from common.errors import InvalidInputError
from science.files import read_provenance
from science.pipeline.common import match_positions
from science.pipeline.jobs import STEPS, Job, ReleaseContext, run_job
from science.synth import generate_release
from science.validate import validate_release
from tests.fault_injection import TINY

CFG = TINY


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory) -> ReleaseContext:
    """A tiny release, processed end to end (one job through the CLI, the rest in-process)."""
    root = tmp_path_factory.mktemp("site")
    generate_release(CFG, root)
    ctx = ReleaseContext(root, "tiny")
    jobs = list(ctx.jobs())
    first = jobs[0]
    res = CliRunner().invoke(
        cli, ["jobs", "run", first.step, "--data-id", first.data_id_json(), "--root", str(root), "--json"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["outputs"] == [str(p) for p in ctx.io(first)[1]]
    for job in jobs[1:]:
        run_job(ctx, job)
    return ctx


def test_jobs_come_in_an_executable_order(done: ReleaseContext) -> None:
    """Every input of every job is a release input or the output of an earlier job."""
    available = {done.layout.refcat()} | {
        done.layout.raw(v["band"], v["visit"]) for v in done.visits.values()
    }
    counts = dict.fromkeys(STEPS, 0)
    for job in done.jobs():
        ins, outs = done.io(job)
        assert set(ins) <= available, job.name
        available |= set(outs)
        counts[job.step] += 1
    n_patches = 2 * 4
    assert counts["calibrate"] == 8 and counts["measure"] == n_patches and counts["merge"] == 2
    assert counts["coadd"] == n_patches * 2
    assert counts["warp"] == sum(len(v["patches"]) for v in done.visits.values())
    names = [j.name for j in done.jobs()]
    assert len(set(names)) == len(names)
    # The tract selection keeps only what those tracts need.
    only0 = list(done.jobs({0}))
    assert {j.data_id["tract"] for j in only0 if "tract" in j.data_id} == {0}


def test_accuracy_against_truth(done: ReleaseContext) -> None:
    rep = validate_release(done.root, "tiny")
    # Truth holds every source, so unmatched detections are spurious: noise peaks at 5 sigma are rare
    # (~1 per patch at most) and an extended galaxy is occasionally split by the deblender.
    assert rep.n_matched >= 0.97 * rep.n_objects
    # Centroid error at S/N 20 is ~FWHM/(2.35 S/N) ~ 20 mas per axis; the calibrate astrometric shift
    # is fitted from ~25 reference stars with 10 mas errors. 50 mas allows both with margin.
    assert rep.n_astrometric >= 30
    assert rep.astrometric_rms_mas < 50
    for band in rep.bands:
        # The zero point comes from ~20 stars (a few mmag), the PSF width from adaptive moments
        # (~0.5 % -> ~5 mmag); nothing else biases the flux. 1 % is 10.9 mmag.
        assert band.n_stars >= 25, band
        assert abs(band.bias_mmag) < 10.9, band
        # Errors are honest within a factor of two (the model PSF is not exact at coverage edges).
        assert 0.6 < band.chi_scatter < 2.0, band
        # Galaxies (S/N > 50): Kron fluxes hold their total light (2.5 first-moment radii: 99 % of a
        # Gaussian) to < 0.02 mag, where PSF fluxes miss a quarter or more of it.
        assert band.n_galaxies >= 10, band
        assert abs(band.galaxy_kron_bias_mmag) < 20, band
        assert band.galaxy_psf_bias_mmag > 100, band
    assert rep.stars_classified_point > 0.75 and rep.galaxies_classified_extended > 0.7
    # Detection at 5 sigma on the combined-band S/N image is complete for point sources at S/N > 10
    # unless a neighbour within ~2 FWHM blends them (a deblending limit, reported separately).
    assert math.isfinite(rep.mag_snr10) and rep.mag_snr10 > 23.5
    assert rep.completeness_snr10_isolated > 0.95
    assert rep.completeness_snr10 > 0.85


def test_merge_keeps_each_object_once(done: ReleaseContext) -> None:
    root, L = done.root, done.layout
    truth = pq.read_table(root / L.truth())
    primaries = []
    for tract in done.skymap.tracts:
        table = pq.read_table(root / L.object_table(tract.id))
        ids = np.asarray(table["id"])
        assert len(np.unique(ids)) == len(ids) and (np.diff(ids) > 0).all()
        assert np.asarray(table["detect_isPatchInner"]).all()
        patch_rows = sum(pq.read_metadata(root / L.object(tract.id, p.index)).num_rows for p in tract.patches)
        assert table.num_rows < patch_rows  # patch-border duplicates were dropped
        assert read_provenance(root / L.object_table(tract.id))["step"] == "merge"
        primaries.append(table.filter(table["detect_isPrimary"]))
        # The tract overlap region is kept but not primary.
        assert not np.asarray(table["detect_isTractInner"]).all()
    ra = np.concatenate([np.asarray(t["ra"]) for t in primaries])
    dec = np.concatenate([np.asarray(t["dec"]) for t in primaries])
    where = np.concatenate([np.asarray(t["tract"]) * 1000 + np.asarray(t["patch"]) for t in primaries])
    i, j = match_positions(ra, dec, np.asarray(truth["ra"]), np.asarray(truth["dec"]), 0.5)
    # no truth object measured twice across patches or tracts (the deblender may split one galaxy in
    # two inside a patch: those pairs share their patch)
    for k in np.unique(j[np.unique(j, return_counts=True)[1][np.searchsorted(np.unique(j), j)] > 1]):
        assert len(set(where[i[j == k]])) == 1, k
    assert len(np.unique(j)) >= len(j) - 2


def test_outputs_carry_provenance(done: ReleaseContext) -> None:
    root = done.root
    for step in STEPS:
        job = next(done.jobs(steps=(step,)))
        ins, outs = done.io(job)
        for out in outs:
            if out.suffix == ".fits":
                h = fits.getheader(root / out, 0)
                assert h["STEP"] == step and len(h["CFGHASH"]) == 12 and h["SWVERS"].startswith("satdrp")
                assert h["INPUTS"].split(",") == [p.name for p in ins]
            else:
                prov = read_provenance(root / out)
                assert prov["step"] == step and prov["inputs"] == [p.name for p in ins]
    # No temporary files left anywhere.
    assert not [p for p in root.rglob("*") if ".part-" in p.name]


def test_rerun_is_deterministic(done: ReleaseContext) -> None:
    job = next(done.jobs(steps=("measure",)))
    out = done.root / done.io(job)[1][0]
    before = pq.read_table(out)
    run_job(done, job)
    after = pq.read_table(out)
    assert after.schema == before.schema
    for name in before.column_names:  # NaN (an undetermined extendedness) equals NaN here
        np.testing.assert_array_equal(np.asarray(after[name]), np.asarray(before[name]), err_msg=name)


# --- bad input -----------------------------------------------------------------------------------
@pytest.fixture()
def scratch(done: ReleaseContext, tmp_path: Path) -> ReleaseContext:
    """A copy of the processed release that a test may damage."""
    root = tmp_path / "site"
    shutil.copytree(done.root, root)
    return ReleaseContext(root, "tiny")


def _outputs_absent(ctx: ReleaseContext, job: Job) -> bool:
    return not any((ctx.root / p).exists() for p in ctx.io(job)[1])


def test_truncated_calexp_fails_warp_naming_it(scratch: ReleaseContext) -> None:
    job = next(scratch.jobs(steps=("warp",)))
    calexp = scratch.root / scratch.io(job)[0][0]
    calexp.write_bytes(calexp.read_bytes()[: 2880 * 4])
    for out in scratch.io(job)[1]:
        (scratch.root / out).unlink()
    with pytest.warns(UserWarning), pytest.raises(InvalidInputError, match=rf"{calexp.name}: "):
        run_job(scratch, job)
    assert _outputs_absent(scratch, job)


def test_missing_warp_fails_coadd_naming_it(scratch: ReleaseContext) -> None:
    job = next(scratch.jobs(steps=("coadd",)))
    gone = scratch.root / scratch.io(job)[0][1]
    gone.unlink()
    (scratch.root / scratch.io(job)[1][0]).unlink()
    with pytest.raises(InvalidInputError, match=rf"{gone.name}: input file not found"):
        run_job(scratch, job)
    assert _outputs_absent(scratch, job)


def test_wrong_band_warp_is_refused_by_coadd(scratch: ReleaseContext) -> None:
    job = next(scratch.jobs(steps=("coadd",)))
    first = scratch.root / scratch.io(job)[0][0]
    with fits.open(first) as hdul:
        hdul[0].header["BAND"] = "i"
        hdul.writeto(first, overwrite=True)
    (scratch.root / scratch.io(job)[1][0]).unlink()
    with pytest.raises(InvalidInputError, match=rf"{first.name}: band 'i' where '.' was expected"):
        run_job(scratch, job)
    assert _outputs_absent(scratch, job)


def test_corrupt_object_table_fails_merge(scratch: ReleaseContext) -> None:
    job = next(scratch.jobs(steps=("merge",)))
    bad = scratch.root / scratch.io(job)[0][0]
    bad.write_bytes(b"PAR1 this is not parquet")
    (scratch.root / scratch.io(job)[1][0]).unlink()
    with pytest.raises(InvalidInputError, match=rf"{bad.name}: unreadable Parquet"):
        run_job(scratch, job)
    assert _outputs_absent(scratch, job)


@pytest.mark.parametrize(
    ("step", "data_id", "message"),
    [
        ("calibrate", {"visit": 99999}, "visit 99999 is not in release tiny"),
        ("calibrate", {"visit": 1000, "band": "g"}, r"data id needs exactly \['visit'\]"),
        ("coadd", {"tract": 0, "patch": 0, "band": "z"}, "band 'z' not in release bands"),
        ("measure", {"tract": 7, "patch": 0}, "no tract 7"),
        ("measure", {"tract": 0, "patch": 4}, "tract 0 has no patch 4"),
        ("merge", {"tract": -1}, "must be a non-negative integer"),
        ("deblend", {"tract": 0}, "unknown step 'deblend'"),
    ],
)
def test_unknown_data_ids_are_refused(done: ReleaseContext, step: str, data_id: dict, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        done.check(step, data_id)


def test_warp_of_a_patch_the_visit_misses_is_refused(done: ReleaseContext) -> None:
    all_patches = {(t.id, p.index) for t in done.skymap.tracts for p in t.patches}
    for vid, v in done.visits.items():
        missed = all_patches - {tuple(tp) for tp in v["patches"]}
        if missed:
            t, p = sorted(missed)[0]
            with pytest.raises(InvalidInputError, match=f"visit {vid} does not overlap tract {t} patch {p}"):
                done.check("warp", {"visit": vid, "tract": t, "patch": p})
            return
    pytest.fail("every visit overlaps every patch: the test release is too small to test this")


def test_cli_bad_input_is_one_line_exit_2(scratch: ReleaseContext) -> None:
    runner = CliRunner()
    root = str(scratch.root)
    res = runner.invoke(cli, ["jobs", "run", "calibrate", "--data-id", '{"visit": 99999}', "--root", root])
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == ["drp: error: calibrate: visit 99999 is not in release tiny"]
    res = runner.invoke(cli, ["jobs", "run", "calibrate", "--data-id", "[1]", "--root", root])
    assert res.exit_code == 2 and "must be a JSON object" in res.output
    raw = scratch.root / scratch.layout.raw("g", 1000)
    raw.write_bytes(raw.read_bytes()[:5000])
    res = runner.invoke(cli, ["jobs", "run", "calibrate", "--data-id", '{"visit": 1000}', "--root", root])
    assert res.exit_code == 2
    assert "visit001000.fits: unreadable or truncated FITS" in res.output
    res = runner.invoke(cli, ["workflow", "list", "--root", root, "--step", "merge", "--json"])
    assert res.exit_code == 0
    assert [json.loads(line)["name"] for line in res.output.splitlines()] == ["merge_t0", "merge_t1"]
    res = runner.invoke(cli, ["jobs", "run", "--job", "calibrate_v99999", "--root", root])
    assert res.exit_code == 2 and "visit 99999 is not in release tiny" in res.output
    res = runner.invoke(cli, ["jobs", "run", "--job", "calibrate_x1", "--root", root])
    assert res.exit_code == 2 and "'x1' is not a visit" in res.output
    res = runner.invoke(cli, ["jobs", "run", "--root", root])
    assert res.exit_code == 2 and "give either STEP with --data-id, or --job NAME" in res.output
