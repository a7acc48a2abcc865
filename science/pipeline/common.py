"""What the pipeline steps share: mask bits, the exposure file format, provenance, positional matching.

Every image product after ``calibrate`` (calexp, warp, coadd) is one FITS file with HDUs PRIMARY
(metadata and provenance), IMAGE (float32), MASK (int16 bit mask) and VARIANCE (float32, ``inf``
where there is no usable data), and the IMAGE header carries the WCS.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from numpy.typing import NDArray
from scipy.spatial import cKDTree

from common import __version__
from common.errors import InvalidInputError

MASK_BAD = 1  # bad column or pixel
MASK_SAT = 2  # saturated
MASK_CR = 4  # cosmic ray
MASK_NO_DATA = 8  # outside the input exposure(s)
MASK_UNUSABLE = MASK_BAD | MASK_SAT | MASK_CR | MASK_NO_DATA

# Calibrated fluxes (warps, coadds, objects) are in nJy: AB magnitude 31.4 is 1 nJy.
NJY_ZERO_POINT = 31.4


def njy_to_mag(flux: NDArray[np.float64]) -> NDArray[np.float64]:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flux > 0, NJY_ZERO_POINT - 2.5 * np.log10(flux), np.nan)


def mag_to_njy(mag: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray(10 ** (-0.4 * (np.asarray(mag) - NJY_ZERO_POINT)), dtype=np.float64)


@dataclass(frozen=True)
class StepConfig:
    """Base of every step's configuration: a stable hash goes into each output's provenance."""

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def provenance(step: str, config: StepConfig, inputs: list[Path], **extra: Any) -> dict[str, Any]:
    return {
        "step": step,
        "software": f"satdrp {__version__}",
        "config_hash": config.hash(),
        "inputs": [p.name for p in inputs],
        **extra,
    }


def provenance_header(prov: dict[str, Any], header: fits.Header | None = None) -> fits.Header:
    """FITS cards for a provenance dict (long input lists go into CONTINUE cards via astropy)."""
    h = header if header is not None else fits.Header()
    h["STEP"] = prov["step"]
    h["SWVERS"] = prov["software"]
    h["CFGHASH"] = prov["config_hash"]
    h["INPUTS"] = ",".join(prov["inputs"])
    return h


@dataclass
class Exposure:
    """An image with mask and variance, its WCS and its primary header."""

    image: NDArray[np.float32]
    mask: NDArray[np.int16]
    variance: NDArray[np.float32]
    wcs: WCS
    header: fits.Header

    def usable(self) -> NDArray[np.bool_]:
        """Pixels with data: no unusable mask bit, finite image, finite positive variance."""
        return (
            ((self.mask & MASK_UNUSABLE) == 0)
            & np.isfinite(self.image)
            & np.isfinite(self.variance)
            & (self.variance > 0)
        )

    def hdus(self) -> list[fits.PrimaryHDU | fits.ImageHDU]:
        wcs_header = self.wcs.to_header()
        return [
            fits.PrimaryHDU(header=self.header),
            fits.ImageHDU(self.image.astype(np.float32), header=wcs_header, name="IMAGE"),
            fits.ImageHDU(self.mask.astype(np.int16), header=wcs_header, name="MASK"),
            fits.ImageHDU(self.variance.astype(np.float32), header=wcs_header, name="VARIANCE"),
        ]


def read_exposure(path: Path, *, require: tuple[str, ...] = ()) -> Exposure:
    """Read a calexp/warp/coadd; every problem is an :class:`InvalidInputError` naming the file."""
    try:
        with fits.open(path, memmap=False) as hdul:
            names = [h.name for h in hdul]
            for name in ("IMAGE", "MASK", "VARIANCE"):
                if name not in names:
                    raise InvalidInputError(f"{path}: HDU {name} missing (not a satdrp exposure)")
            header = hdul[0].header.copy()
            image = np.array(hdul["IMAGE"].data, dtype=np.float32)
            mask = np.array(hdul["MASK"].data, dtype=np.int16)
            variance = np.array(hdul["VARIANCE"].data, dtype=np.float32)
            wcs = WCS(hdul["IMAGE"].header)
    except FileNotFoundError as err:
        raise InvalidInputError(f"{path}: input file not found") from err
    except InvalidInputError:
        raise
    except (OSError, TypeError, ValueError, KeyError) as err:
        raise InvalidInputError(f"{path}: unreadable or truncated FITS ({err})") from err
    if image.ndim != 2 or image.shape != mask.shape or image.shape != variance.shape:
        raise InvalidInputError(f"{path}: IMAGE, MASK and VARIANCE shapes differ or are not 2-D")
    for key in require:
        if key not in header:
            raise InvalidInputError(f"{path}: header keyword {key} missing")
    return Exposure(image, mask, variance, wcs, header)


def read_patch_exposure(
    path: Path, kind: str, tract: int, patch: int, shape: tuple[int, int], band: str
) -> Exposure:
    """Read a warp or coadd and check it is the band, tract, patch and shape the caller expects."""
    exp = read_exposure(path, require=("BAND", "TRACT", "PATCH", "PSF_FWHM"))
    h = exp.header
    if str(h["BAND"]) != band:
        raise InvalidInputError(f"{path}: band {h['BAND']!r} where {band!r} was expected")
    if (int(h["TRACT"]), int(h["PATCH"])) != (tract, patch) or exp.image.shape != shape:
        raise InvalidInputError(
            f"{path}: {kind} of tract {h['TRACT']} patch {h['PATCH']} {exp.image.shape}, "
            f"expected tract {tract} patch {patch} {shape}"
        )
    return exp


def match_positions(
    ra1: NDArray, dec1: NDArray, ra2: NDArray, dec2: NDArray, radius_arcsec: float
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Nearest neighbour in list 2 of each entry of list 1 within a radius: (indices 1, indices 2).

    Flat-sky (tangent-plane) distances, accurate to far better than a milliarcsecond over < 1 degree.
    """
    if len(ra1) == 0 or len(ra2) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    dec0 = float(np.mean(dec2))
    c = math.cos(math.radians(dec0))
    ra0 = float(np.median(ra2))
    wrap1 = (np.asarray(ra1) - ra0 + 180.0) % 360.0 - 180.0
    wrap2 = (np.asarray(ra2) - ra0 + 180.0) % 360.0 - 180.0
    tree = cKDTree(np.column_stack([wrap2 * c, dec2]))
    d, j = tree.query(np.column_stack([wrap1 * c, dec1]), distance_upper_bound=radius_arcsec / 3600)
    ok = np.isfinite(d)
    return np.flatnonzero(ok), j[ok]


def adaptive_sigma(
    image: NDArray[np.float64], x: float, y: float, sigma0: float, iterations: int = 20
) -> float:
    """Gaussian-weighted second moment of a source, iterated until the weight matches it (SDSS-style).

    For a Gaussian source of width s, weighting with width w measures s²w²/(s²+w²) per axis; setting w²
    to twice that converges to w = s. The weight keeps neighbours and noise in the wings out of the
    estimate. Returns the width of the image profile in pixels (nan if it does not converge).
    """
    ny, nx = image.shape
    w = sigma0
    for _ in range(iterations):
        half = max(3, math.ceil(4 * w))
        x0, x1 = max(0, math.floor(x) - half), min(nx, math.floor(x) + half + 2)
        y0, y1 = max(0, math.floor(y) - half), min(ny, math.floor(y) + half + 2)
        if x1 - x0 < 3 or y1 - y0 < 3:
            return float("nan")
        dx = np.arange(x0, x1) - x
        dy = np.arange(y0, y1) - y
        r2 = dy[:, None] ** 2 + dx[None, :] ** 2
        wi = np.exp(-r2 / (2 * w * w)) * image[y0:y1, x0:x1]
        total = float(wi.sum())
        if total <= 0:
            return float("nan")
        m = float((wi * r2).sum()) / total / 2  # per axis
        new = math.sqrt(2 * m) if m > 0 else float("nan")
        if not math.isfinite(new) or new > 10 * sigma0:
            return float("nan")
        if abs(new - w) < 1e-4:
            return new
        w = new
    return w
