"""coadd (per tract, patch and band): a weighted mean of the warps with mask handling.

Weights are one number per visit, the inverse of its median sky variance, applied to the visit's
usable pixels. Per-pixel inverse-variance weights would be optimal for the noise but bias the
photometry: the variance plane includes each source's own photon noise, so a visit in which a star
happens to be brighter would weigh less (LSST's coadds use per-visit weights for the same reason).
Pixels masked in one visit are filled from the others; pixels with no usable input are NO_DATA.
The coadd's PSF at a pixel is the weighted mixture of the Gaussian PSFs of the visits that cover it
(LSST's CoaddPsf), recorded in the header as PSFNCOMP components with PSFSIGn (arcsec), PSFWGTn and
PSFBOXn (the pixel box where visit n has data) so that ``measure`` can model it anywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from common.errors import InvalidInputError
from science.files import write_fits_atomic
from science.pipeline.common import (
    MASK_NO_DATA,
    Exposure,
    StepConfig,
    provenance,
    provenance_header,
    read_patch_exposure,
)
from science.skymap import Patch


@dataclass(frozen=True)
class CoaddConfig(StepConfig):
    min_covered_fraction: float = 0.0  # warps covering less of the patch than this are ignored


@dataclass(frozen=True)
class CoaddResult:
    tract: int
    patch: int
    band: str
    n_inputs: int
    covered_fraction: float
    psf_fwhm_arcsec: float


def coadd(
    warp_paths: list[Path],
    patch: Patch,
    band: str,
    coadd_path: Path,
    config: CoaddConfig | None = None,
) -> CoaddResult:
    cfg = config or CoaddConfig()
    if not warp_paths:
        raise InvalidInputError(f"coadd of tract {patch.tract} patch {patch.index} band {band}: no warps")
    shape = patch.shape
    num = np.zeros(shape, dtype=np.float64)
    den = np.zeros(shape, dtype=np.float64)
    var_num = np.zeros(shape, dtype=np.float64)
    psf: list[tuple[float, float, tuple[int, int, int, int]]] = []  # (sigma arcsec, weight, box)
    visits = []
    ratio: list[tuple[float, float]] = []  # (weight, the warp's pixel-noise / variance-plane ratio)
    grads: list[tuple[float, float]] = []  # each component's d sigma / d patch pixel (arcsec)
    for path in warp_paths:
        w = read_patch_exposure(path, "warp", patch.tract, patch.index, shape, band)
        h = w.header
        if "VISIT" not in h:
            raise InvalidInputError(f"{path}: header keyword VISIT missing")
        good = w.usable()
        if good.mean() <= cfg.min_covered_fraction or not good.any():
            continue
        weight = 1.0 / float(np.median(w.variance[good]))
        ratio.append((weight, float(h.get("VARRATIO", 1.0))))
        num[good] += weight * w.image[good]
        den[good] += weight
        var_num[good] += weight**2 * w.variance[good]
        cols, rows = np.flatnonzero(good.any(axis=0)), np.flatnonzero(good.any(axis=1))
        box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
        psf.append((float(h["PSF_FWHM"]) / 2.3548, weight, box))
        grads.append((float(h.get("PSFGRADX", 0.0)) / 2.3548, float(h.get("PSFGRADY", 0.0)) / 2.3548))
        visits.append(int(h["VISIT"]))
    covered = den > 0
    image = np.zeros(shape, dtype=np.float32)
    variance = np.full(shape, np.inf, dtype=np.float32)
    image[covered] = num[covered] / den[covered]
    variance[covered] = var_num[covered] / den[covered] ** 2
    mask = np.where(covered, 0, MASK_NO_DATA).astype(np.int16)

    area = [wt * (b[2] - b[0]) * (b[3] - b[1]) for _, wt, b in psf]
    fwhm = (
        2.3548 * sum(s * a for (s, _, _), a in zip(psf, area, strict=True)) / sum(area) if psf else math.nan
    )
    prov = provenance("coadd", cfg, warp_paths, tract=patch.tract, patch=patch.index, band=band)
    header = fits.Header()
    header["TRACT"] = patch.tract
    header["PATCH"] = patch.index
    header["BAND"] = band
    header["BUNIT"] = "nJy"
    header["NINPUTS"] = (len(visits), "warps stacked")
    header["VISITS"] = ",".join(str(v) for v in visits)
    header["COVERED"] = (float(covered.mean()), "fraction of the patch with data")
    if ratio:  # Σw²·v·r / Σw²·v with w = 1/v: the coadd's pixel noise over its variance plane
        header["VARRATIO"] = (sum(w * r for w, r in ratio) / sum(w for w, _ in ratio), "noise / plane")
    header["PSF_FWHM"] = (fwhm, "weighted mean PSF FWHM (arcsec)")
    header["PSFNCOMP"] = (len(psf), "Gaussian components of the coadd PSF")
    for k, (sigma, wt, b) in enumerate(psf, start=1):
        header[f"PSFSIG{k}"] = (sigma, "component sigma (arcsec)")
        header[f"PSFWGT{k}"] = (wt, "component weight where it has data")
        header[f"PSFBOX{k}"] = (",".join(map(str, b)), "x0,y0,x1,y1 of the component's data")
        header[f"PSFSGX{k}"], header[f"PSFSGY{k}"] = grads[k - 1]
    header["PSFREFX"], header["PSFREFY"] = shape[1] // 2, shape[0] // 2  # where PSFSIGn hold
    provenance_header(prov, header)
    write_fits_atomic(coadd_path, Exposure(image, mask, variance, patch.wcs, header).hdus())
    return CoaddResult(patch.tract, patch.index, band, len(visits), float(covered.mean()), fwhm)
