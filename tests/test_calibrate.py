"""calibrate on a synthetic release, judged against truth; bad input fails cleanly with no output."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy.io import fits

from common.errors import InvalidInputError
from science.layout import Layout
from science.pipeline.calibrate import calibrate
from science.pipeline.common import match_positions
from science.synth import ReleaseConfig, generate_release, load_manifest

CFG = ReleaseConfig(
    name="cal",
    skymap=ReleaseConfig().skymap.model_copy(update={"tracts_x": 1, "tracts_y": 1}),
    bands=("g", "r"),
    visits_per_band=1,
    image_pix=800,
)
L = Layout("cal")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("site")
    generate_release(CFG, root)
    return root


@pytest.mark.parametrize("index", [0, 1])
def test_calibrate_recovers_zero_point_psf_and_positions(site: Path, index: int) -> None:
    v = load_manifest(site, "cal")["visits"][index]
    res = calibrate(
        site / L.raw(v["band"], v["visit"]),
        site / L.refcat(),
        site / L.calexp(v["band"], v["visit"]),
        site / L.src(v["band"], v["visit"]),
    )
    # Zero point: ~20 reference stars with 5 mmag errors give ~2 mmag; faint unrelated sources inside
    # the 2-FWHM aperture add a positive bias of up to ~1 % at this source density. 20 mmag allows both.
    assert abs(res.zero_point - v["zero_point"]) < 0.020
    # PSF FWHM from half-light radii of the compact sources: the estimator is good to a few per cent.
    assert res.psf_fwhm_arcsec == pytest.approx(v["psf_fwhm_arcsec"], rel=0.10)
    # The header pointing error (0.3 arcsec rms) must have been removed: positions against truth.
    truth = pq.read_table(site / L.truth())
    src = pq.read_table(site / L.src(v["band"], v["visit"]))
    t_ra, t_dec = np.asarray(truth["ra"]), np.asarray(truth["dec"])
    i, j = match_positions(np.asarray(src["ra"]), np.asarray(src["dec"]), t_ra, t_dec, 1.0)
    snr = (np.asarray(src["flux"]) / np.asarray(src["flux_err"]))[i]
    # Isolated stars only: a neighbour within 3 arcsec pulls the centroid (a blend, not an error).
    cos_dec = math.cos(math.radians(float(np.mean(t_dec))))
    # (neighbours that matter: at most 2.5 mag fainter; the truth goes far below detection)
    t_mag = np.asarray(truth[f"mag_{v['band']}"])
    near = np.array(
        [
            (
                (np.hypot((t_ra - t_ra[k]) * cos_dec, t_dec - t_dec[k]) * 3600 < 3.0)
                & (t_mag < t_mag[k] + 2.5)
            ).sum()
            for k in j
        ]
    )
    sel = np.asarray(truth["is_star"])[j] & (snr > 20) & (near == 1)
    assert sel.sum() >= 6
    dra = (np.asarray(src["ra"])[i] - t_ra[j])[sel] * cos_dec * 3.6e6
    ddec = (np.asarray(src["dec"])[i] - t_dec[j])[sel] * 3.6e6
    # Centroid error at S/N 20 is ~FWHM/(2.35 S/N) ~ 20 mas per axis; 50 mas allows the fit's error.
    robust_rms = 1.4826 * np.median(np.abs(np.concatenate([dra, ddec])))
    assert robust_rms < 50
    assert abs(np.median(dra)) < 30 and abs(np.median(ddec)) < 30
    with fits.open(site / L.calexp(v["band"], v["visit"])) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "IMAGE", "MASK", "VARIANCE"]
        assert hdul[0].header["STEP"] == "calibrate" and hdul[0].header["PHOTOZP"] == pytest.approx(
            res.zero_point
        )
        assert (hdul["MASK"].data != 0).any(axis=0).any()  # the bad column is masked


def test_truncated_raw_fails_with_its_name_and_writes_nothing(site: Path, tmp_path: Path) -> None:
    v = load_manifest(site, "cal")["visits"][0]
    raw = site / L.raw(v["band"], v["visit"])
    broken = tmp_path / "broken.fits"
    broken.write_bytes(raw.read_bytes()[: 2880 * 3])
    out_c, out_s = tmp_path / "calexp.fits", tmp_path / "src.parquet"
    with (
        pytest.warns(UserWarning, match="truncated"),
        pytest.raises(InvalidInputError, match=r"broken\.fits: unreadable or truncated FITS"),
    ):
        calibrate(broken, site / L.refcat(), out_c, out_s)
    assert not out_c.exists() and not out_s.exists()
    assert list(tmp_path.iterdir()) == [broken]


def test_missing_input_and_wrong_band(site: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="input file not found"):
        calibrate(tmp_path / "nope.fits", site / L.refcat(), tmp_path / "c.fits", tmp_path / "s.parquet")
    v = load_manifest(site, "cal")["visits"][0]
    raw = site / L.raw(v["band"], v["visit"])
    with fits.open(raw) as hdul:
        hdul[0].header["BAND"] = "z"
        hdul.writeto(tmp_path / "z.fits")
    with pytest.raises(InvalidInputError, match="no magnitudes for band 'z'"):
        calibrate(tmp_path / "z.fits", site / L.refcat(), tmp_path / "c.fits", tmp_path / "s.parquet")
    assert not (tmp_path / "c.fits").exists()


def test_psf_aperture_fraction_matches_a_gaussian() -> None:
    # a circle of radius 1 FWHM holds 1 - exp(-2.3548²/2) = 93.75 % of a Gaussian (pixels blur a little)
    from science.pipeline.calibrate import psf_aperture_fraction

    assert psf_aperture_fraction(3.0, 2.3548 * 3.0) == pytest.approx(0.9375, abs=0.01)
    assert psf_aperture_fraction(1.5, 40.0) == pytest.approx(1.0, abs=1e-4)


def test_zero_point_uncertainties_are_honest(tmp_path: Path) -> None:
    """Twelve visits: each zero point's error against the truth, in units of its reported uncertainty,
    scatters like N(0, 1) (the report's pull rms; the visits share one small sky and its few reference
    stars, so 0.5-1.5), and the calibration report gives each visit's residual, aperture correction and
    repeatability. (On the demo release, 24 visits: pull rms 0.96-1.11 over three seeds.)"""
    from science.calibration_report import calibration_report
    from science.pipeline.jobs import ReleaseContext, run_job

    cfg = CFG.model_copy(update={"name": "zp", "visits_per_band": 6, "image_pix": 600, "seed": 8})
    generate_release(cfg, tmp_path)
    ctx = ReleaseContext(tmp_path, "zp")
    for job in ctx.jobs(steps=("calibrate",)):
        run_job(ctx, job)
    report = calibration_report(tmp_path, "zp")
    assert report is not None and len(report.visits) == 12
    assert 0.5 < report.zp_pull_rms < 1.5, [v.pull for v in report.visits]
    assert all(abs(v.pull) < 3.5 for v in report.visits)
    assert all(1 < v.aperture_correction_mmag < 6 for v in report.visits)  # 1.5 FWHM radius: ~0.3 %
    assert set(report.repeatability_mmag) and all(0 < x < 20 for x in report.repeatability_mmag.values())
    assert report.to_dict()["zp_pull_rms"] == report.zp_pull_rms


def test_the_psf_model_follows_the_psf_across_the_image(tmp_path: Path) -> None:
    """The simulated PSF widens by up to 10 % from the centre to an edge; the fitted plane gives the
    FWHM near each corner to a few per cent, where a constant would be off by up to 14 %."""
    from science.synth import Visit, psf_sigma_at

    cfg = CFG.model_copy(update={"name": "psf", "psf_variation": 0.1, "image_pix": 1000, "seed": 4})
    generate_release(cfg, tmp_path)
    layout = Layout("psf")
    for v in load_manifest(tmp_path, "psf")["visits"]:
        calibrate(
            tmp_path / layout.raw(v["band"], v["visit"]),
            tmp_path / layout.refcat(),
            tmp_path / layout.calexp(v["band"], v["visit"]),
            tmp_path / layout.src(v["band"], v["visit"]),
        )
        h = fits.getheader(tmp_path / layout.calexp(v["band"], v["visit"]), 0)
        visit = Visit(**{k: v[k] for k in Visit.__dataclass_fields__})
        scale = cfg.skymap.pixel_scale_arcsec
        for x, y in ((150, 150), (850, 150), (150, 850), (850, 850)):
            true = 2.3548 * float(psf_sigma_at(visit, cfg, np.array([x]), np.array([y]))[0]) * scale
            model = h["PSF_FWHM"] + h["PSFGRADX"] * (x - h["PSFREFX"]) + h["PSFGRADY"] * (y - h["PSFREFY"])
            assert model == pytest.approx(true, rel=0.05), (v["visit"], x, y)
