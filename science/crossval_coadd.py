"""Pixel-level cross-validation of two sites' coadds of the same patches, with their WCS and PSF model.

The pixel pull is (c₁ − c₂)/√(v₁·r₁ + v₂·r₂), where r is the variance that warping leaves per pixel
relative to the variance plane (the spline smooths the noise but the plane carries the input
variance; each warp records it for its sub-pixel phases as VARRATIO and the coadd their weighted
mean), and the χ² of N pixels has N/Σρ² degrees of freedom because neighbouring pixels are
correlated (science.resampling, once for the warp's kernel). In independent mode only sky pixels are
compared: the two processings' calibrations differ within their errors, which bright objects show.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from common.errors import InvalidInputError
from science.crossval_limits import Check, Limits
from science.pipeline.common import Exposure, read_exposure
from science.pipeline.measure import read_coadd_psf
from science.pipeline.warp import WarpConfig
from science.resampling import resampling_noise
from science.thresholds import ValidationSection


@dataclass
class _BandSums:
    chi2: float = 0.0
    n: int = 0
    largest: float = 0.0
    wcs_mas: float = 0.0
    psf: float = 0.0
    problems: list[str] = field(default_factory=list)


def _wcs_offset_mas(a: Exposure, b: Exposure) -> float:
    """Largest sky distance between the two WCS over the patch's corners and centre."""
    ny, nx = a.image.shape
    x = np.array([0, nx - 1, 0, nx - 1, (nx - 1) / 2])
    y = np.array([0, 0, ny - 1, ny - 1, (ny - 1) / 2])
    ra1, dec1 = a.wcs.all_pix2world(x, y, 0)
    ra2, dec2 = b.wcs.all_pix2world(x, y, 0)
    dra = ((np.asarray(ra1) - ra2 + 180.0) % 360.0 - 180.0) * np.cos(np.radians(dec1))
    return float(np.max(np.hypot(dra, np.asarray(dec1) - dec2))) * 3.6e6


def _psf_difference(pa_: Path, a: Exposure, pb_: Path, b: Exposure) -> float:
    """Relative difference of the two PSF models: FWHM and the model at the patch's centre and near its
    four corners (the model varies across the patch)."""
    psf_a, psf_b = read_coadd_psf(pa_, a), read_coadd_psf(pb_, b)
    ny, nx = a.image.shape
    d = np.arange(-10, 11, dtype=np.float64)
    worst = abs(psf_a.fwhm_pix - psf_b.fwhm_pix) / max(psf_a.fwhm_pix, psf_b.fwhm_pix, 1e-300)
    for fx, fy in ((0.5, 0.5), (0.1, 0.1), (0.9, 0.1), (0.1, 0.9), (0.9, 0.9)):
        sa = psf_a.stamp(fx * (nx - 1), fy * (ny - 1), d, d)
        sb = psf_b.stamp(fx * (nx - 1), fy * (ny - 1), d, d)
        peak = max(float(sa.max()), float(sb.max()), 1e-300)
        worst = max(worst, float(np.max(np.abs(sa - sb))) / peak)
    return worst


def _add_patch(
    sums: _BandSums, patch: int, pa_: Path, pb_: Path, default_ratio: float, sky_only: bool
) -> None:
    ea, eb = read_exposure(pa_), read_exposure(pb_)
    ra, rb = (float(e.header.get("VARRATIO", default_ratio)) for e in (ea, eb))
    if ea.image.shape != eb.image.shape:
        sums.problems.append(f"patch {patch}: shapes {ea.image.shape} and {eb.image.shape} differ")
        return
    sums.wcs_mas = max(sums.wcs_mas, _wcs_offset_mas(ea, eb))
    try:
        sums.psf = max(sums.psf, _psf_difference(pa_, ea, pb_, eb))
    except (InvalidInputError, KeyError, ValueError) as err:
        sums.problems.append(f"patch {patch}: PSF model unreadable ({err})")
    va, vb = ea.variance.astype(np.float64), eb.variance.astype(np.float64)
    ok = np.isfinite(va) & np.isfinite(vb) & (va + vb > 0) & np.isfinite(ea.image) & np.isfinite(eb.image)
    noise = np.sqrt(np.where(ok, va * ra + vb * rb, 1.0))
    if sky_only:
        # Independent processings calibrate each object slightly differently (a few mas, a few mmag),
        # which shows on bright objects far above their noise: compare the sky. Selecting on the sum
        # leaves the difference's distribution alone (for equal Gaussian noise they are independent).
        total = np.where(ok, ea.image.astype(np.float64) + eb.image, 0.0)
        ok &= ~ndimage.binary_dilation(np.abs(total) > 3.0 * noise, iterations=3)
    d = ea.image.astype(np.float64)[ok] - eb.image.astype(np.float64)[ok]
    z = d / noise[ok]
    sums.chi2 += float(np.sum(z * z))
    sums.n += int(ok.sum())
    if z.size:
        sums.largest = max(sums.largest, float(np.max(np.abs(z))))


def compare_coadds(
    pairs: Sequence[tuple[int, str, Path, Path]], cfg: ValidationSection, sites: tuple[str, str] = ("a", "b")
) -> list[Check]:
    """Per band, over the (patch, band, path at site a, path at site b) pairs: ``coadd_pull_rms``,
    ``coadd_pull_max``, ``coadd_wcs_mas`` and ``coadd_psf``. A coadd missing at one site fails by name."""
    lim = Limits(cfg)
    noise = resampling_noise(WarpConfig().spline_order)
    by_band: dict[str, _BandSums] = {}
    for patch, band, pa_, pb_ in pairs:
        sums = by_band.setdefault(band, _BandSums())
        absent = [s for s, p in zip(sites, (pa_, pb_), strict=True) if not p.is_file()]
        if absent:
            sums.problems.append(f"patch {patch} missing at {', '.join(absent)}")
            continue
        try:
            _add_patch(sums, patch, pa_, pb_, noise.variance, sky_only=not lim.identical)
        except InvalidInputError as err:
            sums.problems.append(f"patch {patch}: {err}")
    checks = []
    for band in sorted(by_band):
        s = by_band[band]
        problems = "; ".join(s.problems[:3]) + (
            f" (+{len(s.problems) - 3} more)" if len(s.problems) > 3 else ""
        )
        rms = math.sqrt(s.chi2 / s.n) if s.n else float("nan")
        dof = s.n / noise.sum_rho2
        checks.append(
            Check(
                "coadd_pull_rms",
                band,
                rms,
                lim.rms(dof),
                not s.problems and s.n > 0 and rms <= lim.rms(dof),
                problems or f"{s.n} pixels, {dof:.0f} independent",
            )
        )
        if s.n:
            ok = s.largest <= lim.largest(s.n)
            checks.append(Check("coadd_pull_max", band, s.largest, lim.largest(s.n), ok, f"{s.n} pixels"))
            wcs_ok = s.wcs_mas <= cfg.max_wcs_offset_mas
            checks.append(Check("coadd_wcs_mas", band, s.wcs_mas, cfg.max_wcs_offset_mas, wcs_ok))
            psf_limit = lim.fraction(cfg.max_psf_fwhm_difference, lim.tol)
            detail = "relative: FWHM and the model at the centre and corners"
            checks.append(Check("coadd_psf", band, s.psf, psf_limit, s.psf <= psf_limit, detail))
    return checks
