"""Overlap cross-validation: identical outputs pass; the smallest faults fail in identical mode and the
limits hold their false-alarm rate in independent mode; missing inputs fail by name (tract, sites,
quantity)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from astropy.io import fits
from astropy.wcs import WCS
from scipy import ndimage

from drp.campaign_config import ValidationSection
from science.crossval import compare_coadds, compare_objects, compare_tract
from science.files import write_fits_atomic
from science.layout import Layout
from science.pipeline.common import Exposure
from science.resampling import resampling_noise, resampling_variance

CFG = ValidationSection()
# synthetic catalogues: independent noise only, no calibration differences between the sites
INDEPENDENT = ValidationSection(
    mode="independent", false_alarm_rate=0.01, photometric_floor_mmag=0.0, astrometric_floor_mas=0.0
)
BANDS = ("g", "r")


def _truth(n: int = 400, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    flux = 10 ** rng.uniform(2.5, 5.0, n)  # nJy; errors from a sky-limited noise of 30 nJy
    return {"ra": 10 + rng.uniform(0, 0.2, n), "dec": -5 + rng.uniform(0, 0.2, n), "flux": flux}


def _objects(n: int = 400, seed: int = 1, noise_seed: int | None = None) -> pa.Table:
    """A catalogue of one tract; with ``noise_seed``, fluxes and positions carry an independent draw
    of their reported errors (a site that measured other pixels of the same sky)."""
    truth = _truth(n, seed)
    rng = np.random.default_rng(noise_seed if noise_seed is not None else seed + 1000)
    flux = truth["flux"]
    err = np.sqrt(30.0**2 + flux)
    coord_err = 0.3 * err / flux  # arcsec per axis: a 0.7" PSF at the object's S/N
    noisy = noise_seed is not None
    cols: dict[str, object] = {
        "ra": truth["ra"]
        + (coord_err * rng.standard_normal(n) / 3600 / np.cos(np.radians(-5)) if noisy else 0),
        "dec": truth["dec"] + (coord_err * rng.standard_normal(n) / 3600 if noisy else 0),
        "coord_err": coord_err,
        "patch": np.random.default_rng(seed).integers(0, 4, n).astype(np.int32),
        "detect_isPrimary": np.ones(n, dtype=bool),
    }
    for band in BANDS:
        cols[f"{band}_psfFlux"] = flux + err * rng.standard_normal(n)
        cols[f"{band}_psfFluxErr"] = err
        cols[f"{band}_flag_psf"] = np.zeros(n, dtype=bool)
    return pa.table(cols)


def _scaled(t: pa.Table, band: str, factor: float) -> pa.Table:
    i = t.column_names.index(f"{band}_psfFlux")
    return t.set_column(i, f"{band}_psfFlux", pa.array(np.asarray(t[f"{band}_psfFlux"]) * factor))


def _shifted(t: pa.Table, dec_mas: float) -> pa.Table:
    i = t.column_names.index("dec")
    return t.set_column(i, "dec", pa.array(np.asarray(t["dec"]) + dec_mas / 3.6e6))


def _failed(checks: list) -> set[tuple[str, str | None]]:
    return {(c.quantity, c.band) for c in checks if not c.passed}


def test_identical_tables_pass_with_zero_differences() -> None:
    t = _objects()
    checks, matched, samples = compare_objects(t, t, BANDS, CFG, ("ncsa", "in2p3"))
    assert matched == 400 and all(c.passed for c in checks), checks
    assert {c.quantity for c in checks} >= {
        "match_fraction",
        "position_pull_rms",
        "position_offset",
        "flux_pull_rms",
        "flux_offset",
        "flux_bias_mmag",
    }
    assert {f"pull[{b}]" for b in BANDS} <= set(samples) and max(abs(p) for p in samples["pull[g]"]) == 0.0
    assert len(samples["mag[r]"]) == len(samples["dmag_mmag[r]"]) == len(samples["sigma_mmag[r]"]) > 300
    assert len(samples["ra"]) == len(samples["dra_mas"]) == 400
    assert all(c.value == 0.0 for c in checks if c.quantity != "match_fraction")


def test_one_percent_zero_point_error_fails_in_that_band() -> None:
    t = _objects()
    checks, _, _ = compare_objects(_scaled(t, "r", 1.01), t, BANDS, CFG, ("ncsa", "in2p3"))
    failed = _failed(checks)
    assert ("flux_bias_mmag", "r") in failed and ("flux_offset", "r") in failed
    assert not any(b == "g" for _, b in failed)
    (bias,) = [c for c in checks if c.quantity == "flux_bias_mmag" and c.band == "r"]
    assert -11.5 < bias.value < -10.0  # 1 % brighter at ncsa = -10.8 mmag
    text = bias.describe(3, ("ncsa", "in2p3"))
    assert text.startswith("tract 3 ncsa vs in2p3: flux_bias_mmag[r]") and "FAILED" in text


def test_identical_mode_catches_a_zero_point_of_a_hundredth_of_a_percent_and_a_shift_of_a_mas() -> None:
    """Same code, same inputs: a clean comparison is exactly zero, so faults far below the noise fail."""
    t = _objects()
    zp = _failed(compare_objects(_scaled(t, "g", 1.0001), t, BANDS, CFG)[0])
    assert ("flux_offset", "g") in zp and ("flux_pull_rms", "g") in zp
    shift = _failed(compare_objects(_shifted(t, 1.0), t, BANDS, CFG)[0])
    assert ("position_offset", None) in shift and ("position_pull_rms", None) in shift
    tiny = _failed(compare_objects(_scaled(t, "g", 1 + 1e-9), t, BANDS, CFG)[0])
    assert tiny == set(), "round-off far below the tolerance passes"


def test_independent_limits_hold_their_false_alarm_rate() -> None:
    """Two independent noise draws with honest errors, 300 times: each check fails at about its stated
    rate (1 %), never at the rate of a mis-set limit."""
    trials, fails = 300, dict[tuple[str, str | None], int]()
    for k in range(trials):
        a, b = _objects(noise_seed=2 * k), _objects(noise_seed=2 * k + 1)
        for c in compare_objects(a, b, BANDS, INDEPENDENT)[0]:
            fails[(c.quantity, c.band)] = fails.get((c.quantity, c.band), 0) + (not c.passed)
    assert fails[("match_fraction", None)] == 0
    for key in [("position_pull_rms", None), ("position_offset", None), ("flux_pull_rms", "g")]:
        assert fails[key] <= 10, (key, fails[key])  # binomial(300, 0.01): mean 3, P(> 10) < 1e-3
    assert sum(fails.values()) >= 1, "limits so loose that nothing ever fails are not calibrated"


def test_independent_mode_catches_faults_above_the_noise() -> None:
    """400 objects: the mean-offset tests see a 1 % zero point and a 10 mas shift that the old rms checks
    (5 mmag bias, 50 mas rms) let through."""
    a, b = _objects(noise_seed=1), _objects(noise_seed=2)
    assert _failed(compare_objects(a, b, BANDS, INDEPENDENT)[0]) == set()
    assert ("flux_offset", "r") in _failed(compare_objects(_scaled(a, "r", 1.01), b, BANDS, INDEPENDENT)[0])
    assert ("position_offset", None) in _failed(compare_objects(_shifted(a, 10.0), b, BANDS, INDEPENDENT)[0])


def test_missing_patch_at_one_site_fails_the_match_fraction() -> None:
    t = _objects()
    without_patch = t.filter(pa.compute.not_equal(t["patch"], 2))
    for cfg in (CFG, INDEPENDENT):
        checks, _, _ = compare_objects(t, without_patch, BANDS, cfg, ("ncsa", "in2p3"))
        (frac,) = [c for c in checks if c.quantity == "match_fraction"]
        assert not frac.passed and "in2p3" in frac.detail and frac.value < 0.9


def _coadd(
    path: Path, image: np.ndarray, variance: float = 4.0, crval: float = 0.0, ratio: float | None = None
) -> None:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]
    wcs.wcs.crval = [10.0 + crval, -5.0]
    header = fits.Header()
    header["PSF_FWHM"] = 0.8
    header["PSFNCOMP"] = 1
    header["PSFSIG1"], header["PSFWGT1"] = 0.8 / 2.3548, 1.0
    header["PSFBOX1"] = f"0,0,{image.shape[1]},{image.shape[0]}"
    if ratio is not None:
        header["VARRATIO"] = ratio
    exp = Exposure(
        image.astype(np.float32),
        np.zeros(image.shape, np.int16),
        np.full(image.shape, variance, np.float32),
        wcs,
        header,
    )
    write_fits_atomic(path, exp.hdus())


def _warped_noise(rng: np.random.Generator, n: int, sigma: float) -> tuple[np.ndarray, float]:
    """White noise resampled by the warp's spline at a random sub-pixel phase (what a warp leaves), and
    the variance ratio the warp records for that phase."""
    yy, xx = np.mgrid[0:n, 0:n].astype(float)
    raw = rng.normal(0, sigma, (n + 8, n + 8))
    fy, fx = rng.uniform(0, 1, 2)
    image = ndimage.map_coordinates(raw, [yy + 4 + fy, xx + 4 + fx], order=3)
    return image, float(resampling_variance(3, np.array([fx]), np.array([fy]))[0])


def test_coadds_identical_mode(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    img = rng.normal(0, 2, (32, 32))
    _coadd(tmp_path / "a.fits", img)
    _coadd(tmp_path / "b.fits", img)
    _coadd(tmp_path / "c.fits", img + rng.normal(0, 2, img.shape))  # 1σ of extra noise
    _coadd(tmp_path / "d.fits", img, crval=1e-6)  # a WCS off by 3.6 mas
    same = compare_coadds([(0, "g", tmp_path / "a.fits", tmp_path / "b.fits")], CFG)
    assert all(c.passed for c in same) and {c.quantity for c in same} == {
        "coadd_pull_rms",
        "coadd_pull_max",
        "coadd_wcs_mas",
        "coadd_psf",
    }
    assert all(c.value == 0.0 for c in same)
    differ = _failed(compare_coadds([(0, "g", tmp_path / "a.fits", tmp_path / "c.fits")], CFG))
    assert differ == {("coadd_pull_rms", "g"), ("coadd_pull_max", "g")}
    wcs = _failed(compare_coadds([(0, "g", tmp_path / "a.fits", tmp_path / "d.fits")], CFG))
    assert wcs == {("coadd_wcs_mas", "g")}
    gone = compare_coadds([(1, "r", tmp_path / "a.fits", tmp_path / "nope.fits")], CFG, ("ncsa", "in2p3"))
    assert not gone[0].passed and "patch 1 missing at in2p3" in gone[0].detail


def test_coadd_pixels_independent_mode_account_for_warp_covariance(tmp_path: Path) -> None:
    """Two warps of independent noise, each at its own sub-pixel phase, pass at about the 1 % false-alarm
    rate once the recorded variance ratio and the kernel's correlation are accounted for; 1σ of extra
    white noise always fails."""
    rng = np.random.default_rng(5)
    noise = resampling_noise(3)
    assert 0.6 < noise.variance < 0.9 and noise.sum_rho2 > 1.0
    failures, caught = 0, 0
    for _ in range(40):
        (a, ra), (b, rb) = _warped_noise(rng, 96, 2.0), _warped_noise(rng, 96, 2.0)
        assert abs(a.var() / 4.0 / ra - 1) < 0.1  # the recorded ratio is the real one
        _coadd(tmp_path / "a.fits", a, ratio=ra)
        _coadd(tmp_path / "b.fits", b, ratio=rb)
        # 1σ of white noise added to the warp: its ratio is now rb + 1
        _coadd(tmp_path / "c.fits", b + rng.normal(0, 2.0, b.shape), ratio=rb)
        pair = [(0, "g", tmp_path / "a.fits", tmp_path / "b.fits")]
        failures += not all(c.passed for c in compare_coadds(pair, INDEPENDENT))
        pair = [(0, "g", tmp_path / "a.fits", tmp_path / "c.fits")]
        caught += ("coadd_pull_rms", "g") in _failed(compare_coadds(pair, INDEPENDENT))
    assert failures <= 3 and caught == 40


def test_compare_tract_reads_both_sites(tmp_path: Path) -> None:
    layout = Layout("dr1")
    t = _objects()
    for site in ("ncsa", "in2p3"):
        path = tmp_path / site / layout.object_table(3)
        path.parent.mkdir(parents=True)
        pq.write_table(t, path)
        for band in BANDS:
            _coadd(tmp_path / site / layout.coadd(3, 0, band), np.ones((8, 8)))
    result = compare_tract(
        (tmp_path / "ncsa", tmp_path / "in2p3"), ("ncsa", "in2p3"), "dr1", 3, [0], BANDS, CFG
    )
    assert result.passed and result.n_matched == 400 and result.to_dict()["passed"] is True
    (tmp_path / "in2p3" / layout.coadd(3, 0, "r")).unlink()
    result = compare_tract(
        (tmp_path / "ncsa", tmp_path / "in2p3"), ("ncsa", "in2p3"), "dr1", 3, [0], BANDS, CFG
    )
    assert not result.passed
    assert result.failures() == [
        "tract 3 ncsa vs in2p3: coadd_pull_rms[r] = nan (limit 0.001) FAILED: patch 0 missing at in2p3"
    ]


def _site_tables(tmp_path: Path, layout: Layout, tables: dict[str, pa.Table | None]) -> None:
    for site, table in tables.items():
        path = tmp_path / site / layout.object_table(3)
        path.parent.mkdir(parents=True, exist_ok=True)
        if table is not None:
            pq.write_table(table, path)
        for band in BANDS:
            _coadd(tmp_path / site / layout.coadd(3, 0, band), np.ones((8, 8)))


def _compare(tmp_path: Path) -> object:
    return compare_tract(
        (tmp_path / "ncsa", tmp_path / "in2p3"), ("ncsa", "in2p3"), "dr1", 3, [0], BANDS, CFG
    )


def test_a_band_missing_at_one_site_is_a_failed_check_not_a_key_error(tmp_path: Path) -> None:
    """The columns of one band gone from one site's catalogue: a failed `columns[r]` check naming the
    site and the columns; the other band is still compared."""
    t = _objects()
    short = t.drop_columns(["r_psfFlux", "r_psfFluxErr"])
    _site_tables(tmp_path, Layout("dr1"), {"ncsa": t, "in2p3": short})
    result = _compare(tmp_path)
    assert not result.passed  # type: ignore[attr-defined]
    failed = {(c.quantity, c.band): c.detail for c in result.checks if not c.passed}  # type: ignore[attr-defined]
    assert failed == {("columns", "r"): "in2p3 lacks r_psfFlux, r_psfFluxErr"}
    assert all(c.passed for c in result.checks if c.band == "g")  # type: ignore[attr-defined]


def test_missing_empty_or_corrupt_catalogues_are_failed_checks(tmp_path: Path) -> None:
    layout = Layout("dr1")
    _site_tables(tmp_path, layout, {"ncsa": _objects(), "in2p3": None})
    result = _compare(tmp_path)
    (check,) = [c for c in result.checks if c.quantity == "object_table"]  # type: ignore[attr-defined]
    assert not check.passed and check.detail.startswith("in2p3: ") and "is missing" in check.detail
    (tmp_path / "in2p3" / layout.object_table(3)).write_bytes(b"PAR1 not parquet")
    check = next(c for c in _compare(tmp_path).checks if c.quantity == "object_table")  # type: ignore[attr-defined]
    assert not check.passed and "in2p3: cannot read" in check.detail
    pq.write_table(_objects().slice(0, 0), tmp_path / "in2p3" / layout.object_table(3))
    check = next(c for c in _compare(tmp_path).checks if c.quantity == "object_table")  # type: ignore[attr-defined]
    assert not check.passed and "holds no object" in check.detail


def test_nan_fluxes_fail_the_pull_check_saying_why_and_no_bright_objects_is_said(tmp_path: Path) -> None:
    t = _objects()
    i = t.column_names.index("g_psfFlux")
    nan = t.set_column(i, "g_psfFlux", pa.array(np.full(t.num_rows, np.nan)))
    checks, _, _ = compare_objects(t, nan, BANDS, CFG, ("ncsa", "in2p3"))
    pull = next(c for c in checks if c.quantity == "flux_pull_rms" and c.band == "g")
    assert not pull.passed and "no object with finite" in pull.detail
    faint = ValidationSection(bias_min_snr=1e9)
    checks, _, _ = compare_objects(t, t, BANDS, faint, ("ncsa", "in2p3"))
    bias = next(c for c in checks if c.quantity == "flux_bias_mmag" and c.band == "g")
    assert bias.passed and bias.detail == "not measured: no matched object with S/N >= 1e+09"
