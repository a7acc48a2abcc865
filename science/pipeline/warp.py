"""warp (per visit and patch): resample a calibrated exposure onto the patch's pixel grid, in nJy.

The patch grid is the tract's TAN projection, so every warp of a patch shares one pixel grid and the
coadd is a per-pixel stack. The pixel mapping (patch pixel -> sky -> visit pixel) is smooth, so it is
evaluated exactly on a coarse grid and interpolated (cheap, errors far below a millipixel). The image
is resampled with a cubic spline (flux-conserving for equal pixel areas, scaled by the Jacobian
otherwise); masked pixels are filled with the (zero) background first so they cannot ring, and every
mask bit is carried to each output pixel whose interpolation kernel touched it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from numpy.typing import NDArray
from scipy import ndimage

from science.files import write_fits_atomic
from science.pipeline.common import (
    MASK_BAD,
    MASK_CR,
    MASK_NO_DATA,
    MASK_SAT,
    MASK_UNUSABLE,
    NJY_ZERO_POINT,
    Exposure,
    StepConfig,
    provenance,
    provenance_header,
    read_exposure,
)
from science.resampling import resampling_variance
from science.skymap import Patch

CALEXP_KEYS = ("VISIT", "BAND", "EXPTIME", "PHOTOZP", "PSF_FWHM")


@dataclass(frozen=True)
class WarpConfig(StepConfig):
    spline_order: int = 3
    coarse_step_pix: int = 16  # spacing of the exactly computed pixel mapping
    margin_pix: int = 6  # extra input pixels around the needed region (spline support)


@dataclass(frozen=True)
class WarpResult:
    visit: int
    band: str
    tract: int
    patch: int
    covered_fraction: float  # of the patch's outer box with usable data


def _pixel_mapping(patch: Patch, calexp: Exposure, step: int) -> tuple[NDArray, NDArray]:
    """Visit pixel coordinates (x, y) of every patch pixel centre."""
    ny, nx = patch.shape
    gx = np.unique(np.append(np.arange(0, nx, step), nx - 1)).astype(float)
    gy = np.unique(np.append(np.arange(0, ny, step), ny - 1)).astype(float)
    cx, cy = np.meshgrid(gx, gy)
    ra, dec = patch.wcs.all_pix2world(cx.ravel(), cy.ravel(), 0)
    vx, vy = calexp.wcs.all_world2pix(ra, dec, 0)
    vx, vy = vx.reshape(cx.shape), vy.reshape(cx.shape)
    # Fractional coarse-grid index of every fine pixel, then bilinear interpolation of the mapping.
    fx = np.interp(np.arange(nx), gx, np.arange(len(gx)))
    fy = np.interp(np.arange(ny), gy, np.arange(len(gy)))
    iy, ix = np.meshgrid(fy, fx, indexing="ij")
    x = ndimage.map_coordinates(vx, [iy, ix], order=1)
    y = ndimage.map_coordinates(vy, [iy, ix], order=1)
    return x, y


def _psf_on_patch(h: fits.Header, x: NDArray, y: NDArray) -> tuple[float, float, float]:
    """The visit's PSF plane (FWHM at a reference pixel and its gradient) carried to the patch grid:
    the FWHM at the patch centre and its gradient per patch pixel, through the pixel mapping."""
    ny, nx = x.shape
    cy, cx = ny // 2, nx // 2
    gx, gy = float(h.get("PSFGRADX", 0.0)), float(h.get("PSFGRADY", 0.0))
    rx, ry = float(h.get("PSFREFX", x[cy, cx])), float(h.get("PSFREFY", y[cy, cx]))
    fwhm = float(h["PSF_FWHM"]) + gx * (x[cy, cx] - rx) + gy * (y[cy, cx] - ry)
    dxdX, dydX = x[cy, cx + 1] - x[cy, cx], y[cy, cx + 1] - y[cy, cx]
    dxdY, dydY = x[cy + 1, cx] - x[cy, cx], y[cy + 1, cx] - y[cy, cx]
    return fwhm, float(gx * dxdX + gy * dydX), float(gx * dxdY + gy * dydY)


def warp(calexp_path: Path, patch: Patch, warp_path: Path, config: WarpConfig | None = None) -> WarpResult:
    cfg = config or WarpConfig()
    calexp = read_exposure(calexp_path, require=CALEXP_KEYS)
    h = calexp.header
    visit, band = int(h["VISIT"]), str(h["BAND"])
    ny, nx = patch.shape
    x, y = _pixel_mapping(patch, calexp, cfg.coarse_step_pix)
    vny, vnx = calexp.image.shape
    inside = (x >= -0.5) & (x <= vnx - 0.5) & (y >= -0.5) & (y <= vny - 0.5)

    image = np.zeros((ny, nx), dtype=np.float32)
    var_ratio = 1.0
    variance = np.full((ny, nx), np.inf, dtype=np.float32)
    mask = np.full((ny, nx), MASK_NO_DATA, dtype=np.int16)
    if inside.any():
        m = cfg.margin_pix
        x0 = max(0, int(np.floor(x[inside].min())) - m)
        x1 = min(vnx, int(np.ceil(x[inside].max())) + m + 1)
        y0 = max(0, int(np.floor(y[inside].min())) - m)
        y1 = min(vny, int(np.ceil(y[inside].max())) + m + 1)
        src_img = calexp.image[y0:y1, x0:x1].astype(np.float64)
        src_var = calexp.variance[y0:y1, x0:x1].astype(np.float64)
        src_mask = calexp.mask[y0:y1, x0:x1]
        unusable = ((src_mask & MASK_UNUSABLE) != 0) | ~np.isfinite(src_var) | ~np.isfinite(src_img)
        src_img[unusable] = 0.0  # background-subtracted: zero is the sky level
        good_var = src_var[~unusable]
        src_var[unusable] = float(np.median(good_var)) if good_var.size else 0.0
        coords = [y - y0, x - x0]
        out_img = ndimage.map_coordinates(src_img, coords, order=cfg.spline_order, mode="constant", cval=0.0)
        out_var = ndimage.map_coordinates(src_var, coords, order=1, mode="nearest")
        out_mask = np.where(inside, 0, MASK_NO_DATA).astype(np.int16)
        for bit in (MASK_BAD, MASK_SAT, MASK_CR, MASK_NO_DATA):
            plane = (src_mask & bit) != 0
            if plane.any():
                touched = ndimage.map_coordinates(plane.astype(np.float32), coords, order=1) > 0.01
                out_mask[ndimage.binary_dilation(touched)] |= bit
        # Calibrate to nJy and conserve flux if the pixel areas differ.
        area_ratio = abs(np.linalg.det(patch.wcs.pixel_scale_matrix)) / abs(
            np.linalg.det(calexp.wcs.pixel_scale_matrix)
        )
        scale = 10 ** (0.4 * (NJY_ZERO_POINT - float(h["PHOTOZP"]))) / float(h["EXPTIME"]) * area_ratio
        image = (out_img * scale).astype(np.float32)
        variance = (out_var * scale**2).astype(np.float32)
        mask = out_mask
        bad = (mask & MASK_UNUSABLE) != 0
        image[bad] = 0.0
        variance[bad] = np.inf
        if (~bad).any():  # the spline smooths the noise: what is left per pixel, for the cross-validation
            var_ratio = float(np.mean(resampling_variance(cfg.spline_order, x[~bad], y[~bad])))
    covered = float(((mask & MASK_UNUSABLE) == 0).mean())

    prov = provenance(
        "warp", cfg, [calexp_path], visit=visit, band=band, tract=patch.tract, patch=patch.index
    )
    header = fits.Header()
    for key in ("VISIT", "BAND", "EXPTIME", "MJD-OBS", "PSF_FWHM", "PHOTOZP", "RELEASE"):
        if key in h:
            header[key] = h[key]
    header["PSF_FWHM"], header["PSFGRADX"], header["PSFGRADY"] = _psf_on_patch(h, x, y)
    header["PSFREFX"], header["PSFREFY"] = nx // 2, ny // 2
    header["TRACT"] = patch.tract
    header["PATCH"] = patch.index
    header["BUNIT"] = "nJy"
    header["COVERED"] = (covered, "fraction of the patch with usable data")
    header["VARRATIO"] = (var_ratio, "pixel noise var / variance plane")
    provenance_header(prov, header)
    write_fits_atomic(warp_path, Exposure(image, mask, variance, patch.wcs, header).hdus())
    return WarpResult(visit, band, patch.tract, patch.index, covered)
