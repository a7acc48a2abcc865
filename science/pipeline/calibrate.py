"""calibrate (per visit): mask, background, detection, astrometric fit and photometric zero point.

Input: a raw exposure (FITS with TAN WCS) and the reference catalogue. Output: a calibrated exposure
(IMAGE background-subtracted, MASK, VARIANCE; header with the fitted WCS, PHOTOZP and PSF_FWHM) and
a source table (Parquet). Pure function of paths: it knows nothing of sites or databases.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import sep
from astropy.io import fits
from astropy.wcs import WCS
from numpy.typing import NDArray
from scipy.spatial import cKDTree

from common.errors import InvalidInputError
from science.files import write_fits_atomic, write_parquet_atomic
from science.pipeline.common import (
    MASK_BAD,
    MASK_CR,
    MASK_SAT,
    Exposure,
    StepConfig,
    adaptive_sigma,
    match_positions,
    provenance,
    provenance_header,
)


@dataclass(frozen=True)
class CalibrateConfig(StepConfig):
    detect_sigma: float = 5.0
    min_area: int = 5
    match_radius_arcsec: float = 1.5
    min_ref_matches: int = 3
    zp_min_snr: float = 10.0
    zp_star_floor: float = 0.0015  # mag per star: what the fluxes errors leave out (flat field, PSF model)
    aperture_fwhm: float = 2.0  # radius in PSF FWHM: 4.7 sigma encloses 99.998 % of a Gaussian PSF
    psf_plane_min_stars: int = 8  # fewer reference stars with a measured width: a constant PSF
    zp_aperture_fwhm: float = 1.5  # the zero point's aperture (3.5 sigma), corrected by the PSF model


@dataclass(frozen=True)
class CalibrateResult:
    visit: int
    band: str
    n_sources: int
    n_ref_matches: int
    zero_point: float
    zero_point_err: float
    psf_fwhm_arcsec: float
    astrometric_shift_mas: tuple[float, float]
    astrometric_rms_mas: float


@lru_cache(maxsize=512)
def psf_aperture_fraction(sigma_pix: float, radius: float) -> float:
    """Fraction of a pixel-integrated Gaussian PSF of ``sigma_pix`` that sep's circular aperture of
    ``radius`` (subpix 5, as measured) collects, averaged over sixteen sub-pixel positions."""
    from scipy.special import erf

    half = math.ceil(radius + 4 * sigma_pix) + 2
    n = 2 * half + 1
    edges = np.arange(n + 1) - 0.5
    q = sigma_pix * math.sqrt(2)
    fractions = []
    for fy in (0.0, 0.25, 0.5, 0.75):
        for fx in (0.0, 0.25, 0.5, 0.75):
            gx = np.diff(0.5 * erf((edges - half - fx) / q))
            gy = np.diff(0.5 * erf((edges - half - fy) / q))
            stamp = np.outer(gy, gx)
            f, _, _ = sep.sum_circle(stamp, np.array([half + fx]), np.array([half + fy]), radius, subpix=5)
            fractions.append(float(f[0]) / float(stamp.sum()))
    return float(np.mean(fractions))


def fit_psf_plane(
    x: NDArray[np.float64],
    y: NDArray[np.float64],
    sigma: NDArray[np.float64],
    centre: tuple[float, float],
    min_stars: int,
) -> tuple[float, float, float]:
    """sigma = s0 + gx (x − cx) + gy (y − cy) by least squares, one 3-sigma clip; a constant (the
    median) when there are fewer than ``min_stars`` stars to fit three numbers."""
    if len(sigma) < min_stars:
        return float(np.median(sigma)), 0.0, 0.0
    a = np.column_stack([np.ones_like(x), x - centre[0], y - centre[1]])
    keep = np.ones(len(sigma), dtype=bool)
    coef: NDArray[Any] = np.zeros(3)
    for _ in range(2):
        coef, *_ = np.linalg.lstsq(a[keep], sigma[keep], rcond=None)
        resid = sigma - a @ coef
        scatter = 1.4826 * float(np.median(np.abs(resid[keep]))) or 1e-6
        keep = np.abs(resid) < 3 * scatter
        if keep.sum() < min_stars:
            break
    return float(coef[0]), float(coef[1]), float(coef[2])


def read_raw(path: Path) -> tuple[NDArray[np.float64], fits.Header]:
    """Read a raw exposure; every problem is an :class:`InvalidInputError` naming the file."""
    try:
        with fits.open(path, memmap=False) as hdul:
            header = hdul[0].header.copy()
            data = hdul[0].data
            if data is None or data.ndim != 2:
                raise InvalidInputError(f"{path}: primary HDU holds no 2-D image")
            data = np.array(data, dtype=np.float64)  # native byte order, as sep needs
    except FileNotFoundError as err:
        raise InvalidInputError(f"{path}: input file not found") from err
    except (OSError, TypeError, ValueError) as err:
        raise InvalidInputError(f"{path}: unreadable or truncated FITS ({err})") from err
    for key in ("VISIT", "BAND", "EXPTIME", "CTYPE1", "CRVAL1"):
        if key not in header:
            raise InvalidInputError(f"{path}: header keyword {key} missing")
    return data, header


def check_raw(path: Path, shape: tuple[int, int]) -> None:
    """What a raw exposure must be before it is registered: FITS readable to its last byte (astropy
    only warns about a truncated file: here that is an error), a 2-D image of the release's shape, the
    header keywords calibration needs. An :class:`InvalidInputError` names the file and the fault."""
    from astropy.utils.exceptions import AstropyUserWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", AstropyUserWarning)
        try:
            data, _ = read_raw(path)
        except AstropyUserWarning as err:
            raise InvalidInputError(f"{path}: unreadable or truncated FITS ({err})") from err
    if data.shape != shape:
        raise InvalidInputError(
            f"{path}: image is {data.shape[0]}×{data.shape[1]}, the release's are {shape[0]}×{shape[1]}"
        )


def build_mask(data: NDArray[np.float64], saturation: float, noise: float) -> NDArray[np.int16]:
    mask = np.zeros(data.shape, dtype=np.int16)
    mask[data >= saturation] |= MASK_SAT
    med = float(np.median(data))
    col_med = np.median(data, axis=0)
    bad_cols = np.abs(col_med - med) > 20 * noise
    mask[:, bad_cols] |= MASK_BAD
    # Cosmic rays are sharper than any PSF: a pixel far above the mean of its four neighbours.
    pad = np.pad(data, 1, mode="edge")
    neigh = (pad[:-2, 1:-1] + pad[2:, 1:-1] + pad[1:-1, :-2] + pad[1:-1, 2:]) / 4
    excess = data - med
    cr = (excess > 8 * noise) & (excess > 2.5 * (neigh - med)) & ~bad_cols[np.newaxis, :]
    mask[cr] |= MASK_CR
    # Grow CR by one pixel (the tail of the deposit).
    grown = np.zeros_like(cr)
    grown[1:, :] |= cr[:-1, :]
    grown[:-1, :] |= cr[1:, :]
    grown[:, 1:] |= cr[:, :-1]
    grown[:, :-1] |= cr[:, 1:]
    mask[grown] |= MASK_CR
    return mask


def calibrate(
    raw_path: Path,
    refcat_path: Path,
    calexp_path: Path,
    src_path: Path,
    config: CalibrateConfig | None = None,
) -> CalibrateResult:
    cfg = config or CalibrateConfig()
    data, header = read_raw(raw_path)
    band = str(header["BAND"])
    visit = int(header["VISIT"])
    exptime = float(header["EXPTIME"])
    gain = float(header.get("GAIN", 1.0))
    read_noise = float(header.get("RDNOISE", 0.0))
    saturation = float(header.get("SATURATE", np.inf))
    try:
        ref = pq.read_table(refcat_path)
    except (OSError, pa.ArrowInvalid) as err:
        raise InvalidInputError(f"{refcat_path}: cannot read reference catalogue ({err})") from err
    if f"mag_{band}" not in ref.column_names:
        raise InvalidInputError(f"{refcat_path}: no magnitudes for band {band!r} (columns mag_*)")

    rough_noise = float(1.4826 * np.median(np.abs(data - np.median(data))))
    mask = build_mask(data, saturation, rough_noise)
    bad = mask != 0
    bkg = sep.Background(data, mask=bad, bw=64, bh=64, fw=3, fh=3)
    sub = data - bkg.back()
    variance = np.clip(data, 0, None) / gain + read_noise**2
    sigma_map = np.sqrt(variance)

    objs = sep.extract(sub, cfg.detect_sigma, err=sigma_map, mask=bad, minarea=cfg.min_area)
    if len(objs) == 0:
        raise InvalidInputError(f"{raw_path}: no sources detected")
    # PSF size from compact sources (the lower quartile of half-light radii is dominated by stars).
    # The total is the flux within rmax (sep's isophotal flux would underestimate it, and the radius).
    rmax = np.maximum(6.0 * objs["a"], 10.0)
    r_half, _ = sep.flux_radius(sub, objs["x"], objs["y"], rmax, 0.5, subpix=5)
    good = np.isfinite(r_half) & (objs["flag"] == 0) & (r_half > 0)
    if good.sum() < 3:
        raise InvalidInputError(f"{raw_path}: too few clean sources to measure the PSF")
    sigma_pix = float(np.percentile(r_half[good], 25)) / 1.1774
    fwhm_pix = 2.3548 * sigma_pix
    x, y, _ = sep.winpos(sub, objs["x"], objs["y"], np.full(len(objs), sigma_pix))
    radius = cfg.aperture_fwhm * fwhm_pix
    flux, flux_err, aflag = sep.sum_circle(sub, x, y, radius, err=sigma_map, mask=bad, subpix=5)

    wcs = WCS(header)
    scale_arcsec = float(np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix)))) * 3600
    ra, dec = wcs.all_pix2world(x, y, 0)
    ref_ra, ref_dec = np.asarray(ref["ra"]), np.asarray(ref["dec"])
    snr = np.where(flux_err > 0, flux / np.where(flux_err > 0, flux_err, 1), 0)

    # Astrometry: a shift of the tangent point, from matches to the reference stars, two passes.
    shift_ra = shift_dec = 0.0
    radius_match = cfg.match_radius_arcsec
    i_src = j_ref = np.zeros(0, dtype=np.int64)
    for _ in range(2):
        i_src, j_ref = match_positions(ra + shift_ra, dec + shift_dec, ref_ra, ref_dec, radius_match)
        if len(i_src) < cfg.min_ref_matches:
            raise InvalidInputError(
                f"{raw_path}: only {len(i_src)} reference stars matched (need {cfg.min_ref_matches})"
            )
        shift_ra = float(np.median(ref_ra[j_ref] - ra[i_src]))
        shift_dec = float(np.median(ref_dec[j_ref] - dec[i_src]))
        radius_match = min(radius_match, 0.5)
    header["CRVAL1"] = float(header["CRVAL1"]) + shift_ra
    header["CRVAL2"] = float(header["CRVAL2"]) + shift_dec
    wcs = WCS(header)
    ra, dec = wcs.all_pix2world(x, y, 0)
    cos_dec = math.cos(math.radians(float(np.mean(dec))))
    resid = np.hypot((ref_ra[j_ref] - ra[i_src]) * cos_dec, ref_dec[j_ref] - dec[i_src]) * 3.6e6
    astro_rms = float(np.sqrt(np.mean(resid**2) / 2))  # per coordinate

    # Photometry: zero point (mag for 1 count/s) from matched, unsaturated, high-S/N stars.
    # Blends are left out: a reference star matched by two sources (split by deblending) or a source
    # with another detection within two aperture radii (its light is in the aperture).
    _, ref_uses = np.unique(j_ref, return_inverse=True)
    single = np.bincount(ref_uses)[ref_uses] == 1
    tree = cKDTree(np.column_stack([x, y]))
    crowded = np.array([len(tree.query_ball_point((x[k], y[k]), 2 * radius)) > 1 for k in i_src], dtype=bool)
    sel = (snr[i_src] > cfg.zp_min_snr) & (aflag[i_src] == 0) & (flux[i_src] > 0) & single & ~crowded
    if sel.sum() < cfg.min_ref_matches:
        raise InvalidInputError(f"{raw_path}: only {int(sel.sum())} clean reference stars for the zero point")
    # The PSF again, from the reference stars only (no galaxies to widen it), by adaptive moments;
    # the pixelated image is the PSF convolved with the pixel, whose variance is 1/12 px².
    # Across the image the PSF changes (focus): sigma is fitted as a plane in the pixel position.
    stars = i_src[sel]
    widths = np.array([adaptive_sigma(sub, x[k], y[k], sigma_pix) for k in stars])
    measured = np.isfinite(widths)
    centre = (data.shape[1] / 2, data.shape[0] / 2)
    psf_plane = (sigma_pix, 0.0, 0.0)  # sigma at the centre, d sigma / dx, d sigma / dy (pixels)
    if measured.sum() >= cfg.min_ref_matches:
        sig = np.sqrt(np.maximum(widths[measured] ** 2 - 1 / 12, 0.01))
        psf_plane = fit_psf_plane(
            x[stars][measured], y[stars][measured], sig, centre, cfg.psf_plane_min_stars
        )
        sigma_pix = psf_plane[0]
        fwhm_pix = 2.3548 * sigma_pix

    # Zero point from a small aperture (less sky noise, fewer faint neighbours in it) corrected to
    # total flux by the PSF model's own fraction within that aperture, at each star's position.
    r_zp = cfg.zp_aperture_fwhm * fwhm_pix
    f_zp, e_zp, flag_zp = sep.sum_circle(
        sub,
        x[stars],
        y[stars],
        r_zp,
        err=sigma_map,
        mask=bad,
        subpix=5,
        bkgann=(2.5 * fwhm_pix, 4.0 * fwhm_pix),
    )
    local = psf_plane[0] + psf_plane[1] * (x[stars] - centre[0]) + psf_plane[2] * (y[stars] - centre[1])
    aperture_correction = np.array([psf_aperture_fraction(round(float(s_), 2), r_zp) for s_ in local])
    usable = (f_zp > 0) & (e_zp > 0) & (flag_zp == 0)
    if usable.sum() < cfg.min_ref_matches:
        raise InvalidInputError(
            f"{raw_path}: only {int(usable.sum())} clean reference stars for the zero point"
        )
    f_zp, e_zp, ref_rows = f_zp[usable], e_zp[usable], j_ref[sel][usable]
    aperture_correction = aperture_correction[usable]
    zps = np.asarray(ref[f"mag_{band}"])[ref_rows] + 2.5 * np.log10(f_zp / aperture_correction / exptime)
    ref_err = np.asarray(ref[f"mag_{band}_err"])[ref_rows] if f"mag_{band}_err" in ref.column_names else 0.0
    zp_sigma = np.sqrt((1.0857 * e_zp / f_zp) ** 2 + ref_err**2 + cfg.zp_star_floor**2)
    # Inverse-variance mean, clipped at 3 sigma around a start from the median (robust with few stars;
    # outliers are blends we could not see, always too bright).
    zp = float(np.median(zps))
    keep = np.ones(len(zps), dtype=bool)
    for _ in range(5):
        keep = np.abs(zps - zp) < 3 * zp_sigma
        if not keep.any():
            raise InvalidInputError(f"{raw_path}: reference-star zero points disagree; none within 3 sigma")
        wts = 1 / zp_sigma[keep] ** 2
        zp = float(np.sum(wts * zps[keep]) / np.sum(wts))
    n_zp = int(keep.sum())
    zp_chi2 = float(np.sum(((zps[keep] - zp) / zp_sigma[keep]) ** 2) / max(n_zp - 1, 1))
    # The stars scatter more than their errors say (neighbours, background): scale by the Birge ratio
    zp_err = float(1 / math.sqrt(np.sum(1 / zp_sigma[keep] ** 2))) * math.sqrt(max(zp_chi2, 1.0))

    ref_id = np.full(len(x), -1, dtype=np.int64)
    ref_id[i_src] = np.asarray(ref["id"])[j_ref]
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.where(flux > 0, zp - 2.5 * np.log10(flux / exptime), np.nan)
        mag_err = np.where(flux > 0, 1.0857 * flux_err / flux, np.nan)
    prov = provenance("calibrate", cfg, [raw_path, refcat_path], visit=visit, band=band)
    header["PHOTOZP"] = (zp, "mag giving 1 count/s")
    header["PHOTOZPE"] = (zp_err, "zero point uncertainty (mag)")
    header["PHOTOZPC"] = (zp_chi2, "chi2/dof of the reference stars' zero points")
    header["PHOTOZPN"] = (n_zp, "reference stars in the zero point")
    header["PHOTOAPC"] = (-2.5 * math.log10(float(np.median(aperture_correction))), "aperture corr. (mag)")
    header["PSF_FWHM"] = (fwhm_pix * scale_arcsec, "PSF FWHM at PSFREFX/Y (arcsec)")
    header["PSFREFX"], header["PSFREFY"] = centre
    header["PSFGRADX"] = (2.3548 * psf_plane[1] * scale_arcsec, "d FWHM / dx (arcsec per pixel)")
    header["PSFGRADY"] = (2.3548 * psf_plane[2] * scale_arcsec, "d FWHM / dy (arcsec per pixel)")
    header["ASTRMS"] = (astro_rms, "astrometric rms vs reference, per axis (mas)")
    header["NREFMTCH"] = (len(i_src), "reference stars matched")
    provenance_header(prov, header)
    var_out = variance.astype(np.float32)
    var_out[bad] = np.inf
    calexp = Exposure(sub.astype(np.float32), mask, var_out, wcs, header)
    write_fits_atomic(calexp_path, calexp.hdus())
    table = pa.table(
        {
            "id": np.arange(len(x), dtype=np.int64),
            "x": x,
            "y": y,
            "ra": ra,
            "dec": dec,
            "flux": flux,
            "flux_err": flux_err,
            "mag": mag,
            "mag_err": mag_err,
            "flags": objs["flag"].astype(np.int32) | aflag.astype(np.int32),
            "ref_id": ref_id,
        }
    )
    write_parquet_atomic(src_path, table, prov)
    return CalibrateResult(
        visit,
        band,
        len(x),
        len(i_src),
        zp,
        zp_err,
        fwhm_pix * scale_arcsec,
        (shift_ra * cos_dec * 3.6e6, shift_dec * 3.6e6),
        astro_rms,
    )
