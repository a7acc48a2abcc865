"""measure (per tract and patch): detect on the coadds of all bands, then forced photometry per band.

Detection runs on the per-pixel S/N image of all bands combined (sum of image/variance over
sqrt(sum 1/variance)), matched-filtered with the PSF, with sep's deblending; centroids are windowed
on that image. Every band is then measured at the same positions (forced photometry):

- aperture flux within ``aperture_fwhm`` × that band's PSF FWHM (the same radius, in FWHM, that
  calibrate used for the zero points, so the two calibrations agree);
- PSF flux: the linear least-squares amplitude of the coadd's PSF model at the fixed position, with
  uniform pixel weights so the estimate is unbiased whatever the source's own photon noise. The model
  is the weighted mixture of the Gaussians of the visits covering that position (recorded by coadd),
  with widths from calibrate's adaptive moments of reference stars (good to ~0.5 %, which is ~0.5 %
  in flux). An aperture correction measured per patch would add more noise than it removes: a patch
  holds only a handful of bright stars.

Output: one object table (Parquet) per patch, with the detection flags that merge needs
(``detect_isPatchInner``, ``detect_isTractInner``) and ``detect_isPrimary`` (both).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import sep
from numpy.typing import NDArray
from scipy import ndimage
from scipy.special import erf

from common.errors import InvalidInputError
from science.files import write_parquet_atomic
from science.pipeline.common import (
    Exposure,
    StepConfig,
    provenance,
    read_patch_exposure,
)
from science.skymap import Patch, Tract

PATCH_ID_FACTOR = 1_000_000  # object id = (tract * 10_000 + patch) * 1_000_000 + n
KRON_FACTOR = 2.5  # Kron aperture in first-moment radii: 99.3 % of a Gaussian's light
KRON_MIN_RADIUS = 1.75 * 2  # pixels
EXTENDED_RATIO = 0.93  # PSF / Kron flux below this in the reference band: a galaxy


@dataclass(frozen=True)
class MeasureConfig(StepConfig):
    detect_sigma: float = 5.0
    min_area: int = 3  # pixels above threshold in the smoothed S/N image
    deblend_cont: float = 0.001
    aperture_fwhm: float = 2.0
    psf_stamp_sigma: float = 4.0  # half-size of the PSF-fit stamp, in PSF sigma


@dataclass(frozen=True)
class MeasureResult:
    tract: int
    patch: int
    n_objects: int
    n_primary: int


@dataclass(frozen=True)
class CoaddPsf:
    """The coadd PSF: at each position, the weighted mixture of the covering visits' Gaussians."""

    sigmas_pix: tuple[float, ...]  # at ``ref``
    weights: tuple[float, ...]
    boxes: tuple[tuple[int, int, int, int], ...]
    fwhm_pix: float  # patch average, for apertures and detection
    grads: tuple[tuple[float, float], ...] = ()  # d sigma / dx, d sigma / dy per component (pixels)
    ref: tuple[float, float] = (0.0, 0.0)

    def sigma(self, k: int, x: float, y: float) -> float:
        """Component k's sigma at (x, y): the visit's PSF plane carried to the patch."""
        if not self.grads:
            return self.sigmas_pix[k]
        gx, gy = self.grads[k]
        return max(self.sigmas_pix[k] + gx * (x - self.ref[0]) + gy * (y - self.ref[1]), 0.3)

    @property
    def max_sigma(self) -> float:
        corners = [(b[0], b[1]) for b in self.boxes] + [(b[2], b[3]) for b in self.boxes]
        corners += [(b[0], b[3]) for b in self.boxes] + [(b[2], b[1]) for b in self.boxes]
        return max(self.sigma(k, cx, cy) for k in range(len(self.sigmas_pix)) for cx, cy in corners)

    def stamp(
        self, x: float, y: float, dx: NDArray[np.float64], dy: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """Fraction of the PSF at (x, y) falling in each pixel at offsets (dx, dy) (pixel-integrated)."""
        out = np.zeros((len(dy), len(dx)))
        total = 0.0
        for k, (w, (x0, y0, x1, y1)) in enumerate(zip(self.weights, self.boxes, strict=True)):
            if not (x0 - 0.5 <= x < x1 - 0.5 and y0 - 0.5 <= y < y1 - 0.5):
                continue
            s = self.sigma(k, x, y)
            q = s * math.sqrt(2)
            gx = 0.5 * (erf((dx + 0.5) / q) - erf((dx - 0.5) / q))
            gy = 0.5 * (erf((dy + 0.5) / q) - erf((dy - 0.5) / q))
            out += w * np.outer(gy, gx)
            total += w
        return out / total if total > 0 else out


def read_coadd_psf(path: Path, exp: Exposure) -> CoaddPsf:
    h = exp.header
    scale = float(np.sqrt(abs(np.linalg.det(exp.wcs.pixel_scale_matrix)))) * 3600
    n = int(h["PSFNCOMP"])
    if n < 1:
        raise InvalidInputError(f"{path}: coadd has no inputs (PSFNCOMP = 0)")
    try:
        sig = tuple(float(h[f"PSFSIG{k}"]) / scale for k in range(1, n + 1))
        wts = tuple(float(h[f"PSFWGT{k}"]) for k in range(1, n + 1))
        boxes = tuple(tuple(int(v) for v in str(h[f"PSFBOX{k}"]).split(",")) for k in range(1, n + 1))
    except (KeyError, ValueError) as err:
        raise InvalidInputError(f"{path}: PSF model keywords unreadable ({err})") from err
    if any(len(b) != 4 for b in boxes):
        raise InvalidInputError(f"{path}: PSFBOXn must be x0,y0,x1,y1")
    try:
        grads = tuple(
            (float(h.get(f"PSFSGX{k}", 0.0)) / scale, float(h.get(f"PSFSGY{k}", 0.0)) / scale)
            for k in range(1, n + 1)
        )
        ref = (float(h.get("PSFREFX", 0.0)), float(h.get("PSFREFY", 0.0)))
    except ValueError as err:
        raise InvalidInputError(f"{path}: PSF gradient keywords unreadable ({err})") from err
    return CoaddPsf(sig, wts, boxes, float(h["PSF_FWHM"]) / scale, grads, ref)  # type: ignore[arg-type]


def _psf_fluxes(
    image: NDArray[np.float64],
    variance: NDArray[np.float64],
    usable: NDArray[np.bool_],
    x: NDArray[np.float64],
    y: NDArray[np.float64],
    psf: CoaddPsf,
    half_size: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    """Uniform-weight PSF amplitude at fixed positions; flag when under 90 % of the PSF is usable."""
    ny, nx = image.shape
    flux = np.full(len(x), np.nan)
    err = np.full(len(x), np.nan)
    flag = np.zeros(len(x), dtype=bool)
    offs = np.arange(-half_size, half_size + 1, dtype=np.float64)
    for k in range(len(x)):
        ix, iy = math.floor(x[k] + 0.5), math.floor(y[k] + 0.5)
        x0, x1 = max(0, ix - half_size), min(nx, ix + half_size + 1)
        y0, y1 = max(0, iy - half_size), min(ny, iy + half_size + 1)
        if x0 >= x1 or y0 >= y1:
            flag[k] = True
            continue
        dx = offs[x0 - (ix - half_size) : x1 - (ix - half_size)] + (ix - x[k])
        dy = offs[y0 - (iy - half_size) : y1 - (iy - half_size)] + (iy - y[k])
        p = psf.stamp(float(x[k]), float(y[k]), dx, dy)
        ok = usable[y0:y1, x0:x1]
        pp = p[ok]
        norm = float(np.sum(pp * pp))
        if pp.sum() < 0.9 or norm <= 0:
            flag[k] = True
        if norm <= 0:
            continue
        flux[k] = float(np.sum(pp * image[y0:y1, x0:x1][ok])) / norm
        err[k] = math.sqrt(float(np.sum(pp * pp * variance[y0:y1, x0:x1][ok]))) / norm
    return flux, err, flag


def measure(
    coadd_paths: dict[str, Path],
    tract: Tract,
    patch: Patch,
    object_path: Path,
    config: MeasureConfig | None = None,
) -> MeasureResult:
    cfg = config or MeasureConfig()
    if not coadd_paths:
        raise InvalidInputError(f"measure of tract {tract.id} patch {patch.index}: no coadds")
    exposures: dict[str, Exposure] = {}
    for band, path in coadd_paths.items():
        exp = read_patch_exposure(path, "coadd", tract.id, patch.index, patch.shape, band)
        if "PSFNCOMP" not in exp.header:
            raise InvalidInputError(f"{path}: header keyword PSFNCOMP missing")
        exposures[band] = exp

    # Combined S/N image for detection.
    num = np.zeros(patch.shape)
    inv = np.zeros(patch.shape)
    usable_by_band: dict[str, NDArray[np.bool_]] = {}
    for band, exp in exposures.items():
        usable = exp.usable()
        usable_by_band[band] = usable
        num[usable] += exp.image[usable] / exp.variance[usable]
        inv[usable] += 1.0 / exp.variance[usable]
    no_data = inv == 0
    detection = np.zeros(patch.shape)
    detection[~no_data] = num[~no_data] / np.sqrt(inv[~no_data])
    psfs = {b: read_coadd_psf(coadd_paths[b], e) for b, e in exposures.items()}
    sigma_det = float(np.mean([p.fwhm_pix for p in psfs.values()])) / 2.3548
    r = math.ceil(3 * sigma_det)
    kx = np.arange(-r, r + 1, dtype=float)
    kernel = np.exp(-(kx[:, None] ** 2 + kx[None, :] ** 2) / (2 * sigma_det**2))
    kernel /= kernel.sum()
    # Matched filter done here: the PSF-smoothed unit-noise image divided by its own noise is the
    # S/N of a point source at each pixel, so the threshold is in S/N (sep's matched mode only
    # normalises with a per-pixel noise array, and its default 5-pixel minimum area would cut S/N ~7).
    snr_map = ndimage.convolve(detection, kernel, mode="constant") / math.sqrt(float((kernel**2).sum()))
    try:
        objs = sep.extract(
            snr_map,
            cfg.detect_sigma,
            mask=no_data,
            minarea=cfg.min_area,
            filter_kernel=None,
            deblend_cont=cfg.deblend_cont,
        )
    except Exception as err:  # sep raises bare Exception on pixel-stack overflow
        raise InvalidInputError(
            f"{object_path.name}: detection failed on tract {tract.id} patch {patch.index} ({err})"
        ) from err
    x, y, _ = sep.winpos(detection, objs["x"], objs["y"], np.full(len(objs), sigma_det), mask=no_data)
    bad_pos = ~np.isfinite(x) | ~np.isfinite(y)
    x = np.where(bad_pos, objs["x"], x)
    y = np.where(bad_pos, objs["y"], y)
    ra, dec = patch.wcs.all_pix2world(x, y, 0)
    pixel_arcsec = float(np.sqrt(abs(np.linalg.det(patch.wcs.pixel_scale_matrix)))) * 3600
    centroid_scale = math.sqrt(2) * sigma_det * pixel_arcsec
    ra = np.asarray(ra) % 360.0
    tx, ty = x + patch.outer.x0, y + patch.outer.y0
    patch_inner = patch.inner.contains(tx, ty)
    tract_inner = tract.owns(ra, np.asarray(dec))
    n = len(objs)
    base = (tract.id * 10_000 + patch.index) * PATCH_ID_FACTOR
    columns: dict[str, Any] = {
        "id": base + np.arange(1, n + 1, dtype=np.int64),
        "tract": np.full(n, tract.id, dtype=np.int32),
        "patch": np.full(n, patch.index, dtype=np.int32),
        "ra": ra,
        "dec": np.asarray(dec),
        "x": tx,
        "y": ty,
        "detect_snr": np.asarray(objs["cpeak"], dtype=np.float64),
        # centroid error per axis for a Gaussian PSF of sigma s at PSF S/N ν: √2·s/ν (arcsec)
        "coord_err": centroid_scale / np.maximum(np.asarray(objs["cpeak"], float), 1e-3),
        "detect_flags": objs["flag"].astype(np.int32),
        "detect_isPatchInner": patch_inner,
        "detect_isTractInner": tract_inner,
        "detect_isPrimary": patch_inner & tract_inner,
    }
    # Kron (auto) apertures: 2.5 first-moment radii of the detection image, the same ellipse in every
    # band (consistent colours); a circle of KRON_MIN_RADIUS pixels where that would be smaller.
    a, b, theta = (np.asarray(objs[k], dtype=np.float64) for k in ("a", "b", "theta"))
    shaped = np.isfinite(a) & np.isfinite(b) & np.isfinite(theta) & (b > 0) & (a >= b)
    # float32 ±π/2 read as float64 falls just outside the range sep accepts
    theta = np.clip(np.where(shaped, theta, 0.0), -math.pi / 2, math.pi / 2)
    a, b = np.where(shaped, a, 1.0), np.where(shaped, b, 1.0)
    kron, _ = sep.kron_radius(detection, x, y, a, b, theta, 6.0, mask=no_data)
    kron = np.where(np.isfinite(kron) & (kron > 0) & shaped, kron, 0.0)
    circle = kron * np.sqrt(a * b) * KRON_FACTOR < KRON_MIN_RADIUS
    ellipse = ~circle
    for band, exp in exposures.items():
        usable = usable_by_band[band]
        image = exp.image.astype(np.float64)
        variance = np.where(usable, exp.variance, 0.0).astype(np.float64)
        image[~usable] = 0.0
        noise = np.sqrt(variance)
        psf = psfs[band]
        ap, ap_err, ap_flag = sep.sum_circle(
            image, x, y, cfg.aperture_fwhm * psf.fwhm_pix, err=noise, mask=~usable, subpix=5
        )
        half = math.ceil(cfg.psf_stamp_sigma * psf.max_sigma)
        pf, pf_err, pf_flag = _psf_fluxes(image, variance, usable, x, y, psf, half)
        columns[f"{band}_psfFlux"] = pf
        columns[f"{band}_psfFluxErr"] = pf_err
        columns[f"{band}_apFlux"] = ap
        columns[f"{band}_apFluxErr"] = ap_err
        columns[f"{band}_flag_ap"] = (ap_flag & (sep.APER_HASMASKED | sep.APER_TRUNC)) != 0
        columns[f"{band}_flag_psf"] = pf_flag
        kf, kf_err = np.full(n, np.nan), np.full(n, np.nan)
        k_flag = np.zeros(n, dtype=np.int64)
        if ellipse.any():
            e = ellipse
            kf[e], kf_err[e], k_flag[e] = sep.sum_ellipse(
                image, x[e], y[e], a[e], b[e], theta[e], KRON_FACTOR * kron[e],
                err=noise, mask=~usable, subpix=1,
            )  # fmt: skip
        if circle.any():
            kf[circle], kf_err[circle], k_flag[circle] = sep.sum_circle(
                image, x[circle], y[circle], KRON_MIN_RADIUS, err=noise, mask=~usable, subpix=1
            )  # fmt: skip
        columns[f"{band}_kronFlux"] = kf
        columns[f"{band}_kronFluxErr"] = kf_err
        columns[f"{band}_flag_kron"] = (k_flag & (sep.APER_HASMASKED | sep.APER_TRUNC)) != 0
    # Star/galaxy: a point source's PSF flux is its Kron flux (to the <1 % the aperture misses); a
    # galaxy's is less. Undetermined (NaN) below S/N 10 in the reference band.
    ref = "r" if "r" in exposures else next(iter(exposures))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = columns[f"{ref}_psfFlux"] / columns[f"{ref}_kronFlux"]
        kron_snr = columns[f"{ref}_kronFlux"] / columns[f"{ref}_kronFluxErr"]
    columns["refExtendedness"] = np.where(kron_snr >= 10, (ratio < EXTENDED_RATIO).astype(float), np.nan)
    # An extended object's centroid is as uncertain as its size: for a Gaussian of total size s seen
    # through a PSF of size σ, PSF/Kron flux = 2σ²/(σ² + s²), so s/σ = √(2/ratio − 1).
    size = np.sqrt(2 / np.clip(np.where(np.isfinite(ratio), ratio, 1.0), 0.3, 1.0) - 1)
    columns["coord_err"] = columns["coord_err"] * size

    prov = provenance(
        "measure",
        cfg,
        list(coadd_paths.values()),
        tract=tract.id,
        patch=patch.index,
        bands=list(coadd_paths),
    )
    write_parquet_atomic(object_path, pa.table(columns), prov)
    return MeasureResult(tract.id, patch.index, n, int((patch_inner & tract_inner).sum()))
