"""Overlap cross-validation: identical outputs pass; a 1 % zero-point error, a missing patch or a
missing coadd at one site fail, naming tract, sites and quantity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from astropy.io import fits
from astropy.wcs import WCS

from drp.campaign_config import ValidationSection
from science.crossval import compare_coadds, compare_objects, compare_tract
from science.files import write_fits_atomic
from science.layout import Layout
from science.pipeline.common import Exposure

CFG = ValidationSection()
BANDS = ("g", "r")


def _objects(n: int = 400, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    flux = 10 ** rng.uniform(2.5, 5.0, n)  # nJy; errors from a sky-limited noise of 30 nJy
    cols: dict[str, object] = {
        "ra": 10 + rng.uniform(0, 0.2, n),
        "dec": -5 + rng.uniform(0, 0.2, n),
        "patch": rng.integers(0, 4, n).astype(np.int32),
        "detect_isPrimary": np.ones(n, dtype=bool),
    }
    for band in BANDS:
        err = np.sqrt(30.0**2 + flux)
        cols[f"{band}_psfFlux"] = flux * (1 + 0.05 * rng.standard_normal(n))
        cols[f"{band}_psfFluxErr"] = err
        cols[f"{band}_flag_psf"] = np.zeros(n, dtype=bool)
    return pa.table(cols)


def _scaled(t: pa.Table, band: str, factor: float) -> pa.Table:
    i = t.column_names.index(f"{band}_psfFlux")
    return t.set_column(i, f"{band}_psfFlux", pa.array(np.asarray(t[f"{band}_psfFlux"]) * factor))


def test_identical_tables_pass() -> None:
    t = _objects()
    checks, matched, pulls = compare_objects(t, t, BANDS, CFG, ("ncsa", "in2p3"))
    assert matched == 400 and all(c.passed for c in checks), checks
    assert {c.quantity for c in checks} >= {
        "match_fraction",
        "position_rms_arcsec",
        "flux_pull_rms",
        "flux_bias_mmag",
    }
    assert set(pulls) == set(BANDS) and max(abs(p) for p in pulls["g"]) == 0.0


def test_one_percent_zero_point_error_fails_in_that_band() -> None:
    t = _objects()
    checks, _, _ = compare_objects(_scaled(t, "r", 1.01), t, BANDS, CFG, ("ncsa", "in2p3"))
    failed = {(c.quantity, c.band) for c in checks if not c.passed}
    assert ("flux_bias_mmag", "r") in failed and not any(b == "g" for _, b in failed)
    (bias,) = [c for c in checks if c.quantity == "flux_bias_mmag" and c.band == "r"]
    assert -11.5 < bias.value < -10.0  # 1 % brighter at ncsa = -10.8 mmag
    text = bias.describe(3, ("ncsa", "in2p3"))
    assert text.startswith("tract 3 ncsa vs in2p3: flux_bias_mmag[r]") and "FAILED" in text


def test_missing_patch_at_one_site_fails_the_match_fraction() -> None:
    t = _objects()
    without_patch = t.filter(pa.compute.not_equal(t["patch"], 2))
    checks, _, _ = compare_objects(t, without_patch, BANDS, CFG, ("ncsa", "in2p3"))
    (frac,) = [c for c in checks if c.quantity == "match_fraction"]
    assert not frac.passed and "in2p3" in frac.detail and frac.value < 0.9


def _coadd(path: Path, image: np.ndarray) -> None:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    exp = Exposure(
        image.astype(np.float32),
        np.zeros(image.shape, np.int16),
        np.full(image.shape, 4.0, np.float32),
        wcs,
        fits.Header(),
    )
    write_fits_atomic(path, exp.hdus())


def test_coadds(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    img = rng.normal(0, 2, (32, 32))
    _coadd(tmp_path / "a.fits", img)
    _coadd(tmp_path / "b.fits", img)
    _coadd(tmp_path / "c.fits", img + rng.normal(0, 4, img.shape))  # differs by 2σ per pixel
    same = compare_coadds([(0, "g", tmp_path / "a.fits", tmp_path / "b.fits")], CFG)
    assert [c.passed for c in same] == [True] and same[0].value == 0.0
    differ = compare_coadds([(0, "g", tmp_path / "a.fits", tmp_path / "c.fits")], CFG)
    assert not differ[0].passed and differ[0].value > 1.5
    gone = compare_coadds([(1, "r", tmp_path / "a.fits", tmp_path / "nope.fits")], CFG, ("ncsa", "in2p3"))
    assert not gone[0].passed and "patch 1 missing at in2p3" in gone[0].detail


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
        "tract 3 ncsa vs in2p3: coadd_chi2[r] = inf (limit 1.5) FAILED: patch 0 missing at in2p3"
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
