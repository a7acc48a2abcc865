"""Synthetic data release: a seeded truth catalogue rendered into raw FITS exposures.

Real survey data cannot be downloaded here, and truth lets the product measure its own accuracy.
Pixels: sky background, a Gaussian PSF whose width changes between visits (integrated over each
pixel, so the flux is exact even when the PSF is barely sampled), Poisson photon noise, Gaussian read
noise, a few cosmic rays and a bad column per exposure, small dithers, a per-visit zero point, and a
small pointing error in the header WCS that the calibrate step must fit. Deterministic for a seed:
every visit draws from its own generator seeded by (seed, visit).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from common import __version__
from common.errors import InvalidInputError
from instrumentation.progress import ProgressFactory, no_progress
from science.files import write_bytes_atomic, write_fits_atomic, write_parquet_atomic
from science.layout import Layout
from science.skymap import SkyMap, SkyMapConfig

if TYPE_CHECKING:  # the heavy libraries are imported by the functions that render, not by importers
    import pyarrow as pa
    from astropy.io import fits
    from astropy.wcs import WCS

BAND_OFFSETS = {"u": 1.2, "g": 0.5, "r": 0.0, "i": -0.25, "z": -0.4, "y": -0.5}  # typical star colours


class ReleaseConfig(BaseModel):
    """Everything that determines a synthetic release (stored in its manifest)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "dr-demo"
    seed: int = 2013
    noise_seed: int | None = Field(default=None, description="the pixel noise's seed (default: seed)")
    skymap: SkyMapConfig = SkyMapConfig(
        tracts_x=2,
        tracts_y=2,
        tract_size_deg=0.04,
        tract_overlap_deg=0.004,
        patches_per_side=2,
        patch_border_pix=30,
        pixel_scale_arcsec=0.2,
    )
    bands: tuple[str, ...] = ("g", "r", "i")
    visits_per_band: int = Field(default=2, ge=1, le=100, description="per tract and band")
    image_pix: int = Field(default=1000, ge=64, le=8192)
    exptime_s: float = 30.0
    zero_point: float = Field(default=28.0, description="mag giving 1 count/s, before per-visit jitter")
    zero_point_jitter: float = 0.05
    sky_counts: float = Field(default=400.0, description="sky level per pixel per exposure (counts)")
    read_noise: float = 5.0
    psf_fwhm_arcsec: tuple[float, float] = (0.7, 1.0)
    psf_variation: float = Field(default=0.1, ge=0, le=0.5, description="PSF sigma change, centre to edge")
    dither_deg: float = 0.003
    pointing_error_arcsec: float = 0.3
    # over mag_range: to 26 mag, so that the 50 % completeness depth (~25.2) is inside the truth
    # (the bright end as before, when the truth stopped at 24.5 with 40,000 and 60,000)
    star_density_per_deg2: float = 113_000.0
    galaxy_density_per_deg2: float = 170_000.0
    mag_range: tuple[float, float] = (17.0, 26.0)
    refcat_mag_limit: float = 22.5
    cosmic_rays: int = 6
    bad_columns: int = 1
    saturation: float = 65_000.0


@dataclass(frozen=True)
class Visit:
    visit: int
    band: str
    tract: int
    ra_deg: float
    dec_deg: float
    mjd: float
    psf_fwhm_arcsec: float
    zero_point: float  # truth; not written to the raw header
    # the PSF's sigma changes across the image: σ(x, y) = σ₀ (1 + sx (x − c)/c + sy (y − c)/c), c the
    # image centre (a focus tilt); σ₀ is psf_fwhm_arcsec / 2.3548
    psf_slope: tuple[float, float] = (0.0, 0.0)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def plan_visits(cfg: ReleaseConfig, skymap: SkyMap) -> list[Visit]:
    rng = np.random.default_rng([cfg.seed, 1])
    visits = []
    n = 0
    for tract in skymap.tracts:
        for band in cfg.bands:
            for _ in range(cfg.visits_per_band):
                cos_dec = math.cos(math.radians(tract.dec_deg))
                ra = tract.ra_deg + rng.uniform(-cfg.dither_deg, cfg.dither_deg) / cos_dec
                dec = tract.dec_deg + rng.uniform(-cfg.dither_deg, cfg.dither_deg)
                visits.append(
                    Visit(
                        visit=1000 + n,
                        band=band,
                        tract=tract.id,
                        ra_deg=ra % 360.0,
                        dec_deg=dec,
                        mjd=60600.0 + 0.01 * n,
                        psf_fwhm_arcsec=float(rng.uniform(*cfg.psf_fwhm_arcsec)),
                        zero_point=cfg.zero_point + float(rng.normal(0.0, cfg.zero_point_jitter)),
                        psf_slope=_psf_slope(cfg, 1000 + n),
                    )
                )
                n += 1
    return visits


def make_truth(cfg: ReleaseConfig, skymap: SkyMap) -> pa.Table:
    import pyarrow as pa

    """Stars and galaxies over the sky map with per-band magnitudes (AB-like, 'mag_<band>')."""
    rng = np.random.default_rng([cfg.seed, 0])
    ra0, ra1, dec0, dec1 = skymap.bounds_deg()
    pad = 0.01
    ra0, ra1, dec0, dec1 = ra0 - pad, ra1 + pad, dec0 - pad, dec1 + pad
    cos_dec = math.cos(math.radians((dec0 + dec1) / 2))
    area = (ra1 - ra0) * cos_dec * (dec1 - dec0)
    n_star = rng.poisson(cfg.star_density_per_deg2 * area)
    n_gal = rng.poisson(cfg.galaxy_density_per_deg2 * area)
    n = n_star + n_gal
    lo, hi = cfg.mag_range
    # Counts rising towards faint magnitudes (slope 0.3 dex/mag), by inverse transform sampling.
    u = rng.uniform(0, 1, n)
    a = 0.3 * math.log(10)
    mag_r = np.log(np.exp(a * lo) + u * (np.exp(a * hi) - np.exp(a * lo))) / a
    is_star = np.zeros(n, dtype=bool)
    is_star[:n_star] = True
    colour = rng.normal(0.0, 0.25, n)
    columns: dict[str, Any] = {
        "id": np.arange(1, n + 1, dtype=np.int64),
        "ra": rng.uniform(ra0, ra1, n),
        "dec": rng.uniform(dec0, dec1, n),
        "is_star": is_star,
        # Intrinsic Gaussian sigma of galaxies (arcsec); 0 for stars.
        "size_arcsec": np.where(is_star, 0.0, rng.uniform(0.15, 0.6, n)),
    }
    for band in cfg.bands:
        columns[f"mag_{band}"] = mag_r + BAND_OFFSETS.get(band, 0.0) * (1.0 + colour)
    return pa.table(columns)


def make_refcat(cfg: ReleaseConfig, truth: pa.Table) -> pa.Table:
    import pyarrow as pa

    """Bright stars with small, realistic errors (10 mas positions, 5 mmag magnitudes)."""
    rng = np.random.default_rng([cfg.seed, 2])
    ref_band = "r" if "r" in cfg.bands else cfg.bands[0]
    sel = np.asarray(truth["is_star"]) & (np.asarray(truth[f"mag_{ref_band}"]) < cfg.refcat_mag_limit)
    ra = np.asarray(truth["ra"])[sel]
    dec = np.asarray(truth["dec"])[sel]
    n = int(sel.sum())
    pos_err_deg = 0.010 / 3600
    cols: dict[str, Any] = {
        "id": np.asarray(truth["id"])[sel],
        "ra": ra + rng.normal(0, pos_err_deg, n) / np.cos(np.radians(dec)),
        "dec": dec + rng.normal(0, pos_err_deg, n),
    }
    for band in cfg.bands:
        cols[f"mag_{band}"] = np.asarray(truth[f"mag_{band}"])[sel] + rng.normal(0, 0.005, n)
        cols[f"mag_{band}_err"] = np.full(n, 0.005)
    return pa.table(cols)


def visit_wcs(v: Visit, cfg: ReleaseConfig, ra: float | None = None, dec: float | None = None) -> WCS:
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [v.ra_deg if ra is None else ra, v.dec_deg if dec is None else dec]
    scale = cfg.skymap.pixel_scale_arcsec / 3600
    w.wcs.cdelt = [-scale, scale]
    w.wcs.crpix = [(cfg.image_pix + 1) / 2, (cfg.image_pix + 1) / 2]
    return w


def _integrated_gaussian(offsets: NDArray[np.float64], sigma: float) -> NDArray[np.float64]:
    """Fraction of a unit 1-D Gaussian falling in pixels at ``offsets`` (pixel edges at ±0.5)."""
    s = sigma * math.sqrt(2)
    from scipy.special import erf

    return 0.5 * (erf((offsets + 0.5) / s) - erf((offsets - 0.5) / s))


def _psf_slope(cfg: ReleaseConfig, visit: int) -> tuple[float, float]:
    """A tilt of ``cfg.psf_variation`` in a random direction (its own random stream, so that adding it
    changed no other draw)."""
    phi = float(np.random.default_rng([cfg.seed, 3, visit]).uniform(0, 2 * math.pi))
    return (cfg.psf_variation * math.cos(phi), cfg.psf_variation * math.sin(phi))


def psf_sigma_at(
    v: Visit, cfg: ReleaseConfig, x: NDArray[np.float64], y: NDArray[np.float64]
) -> NDArray[np.float64]:
    """The true PSF sigma (pixels) at visit pixel positions."""
    c = cfg.image_pix / 2
    sx, sy = v.psf_slope
    return (
        v.psf_fwhm_arcsec / 2.3548 / cfg.skymap.pixel_scale_arcsec * (1 + sx * (x - c) / c + sy * (y - c) / c)
    )


def render_visit(v: Visit, cfg: ReleaseConfig, truth: pa.Table) -> tuple[NDArray[np.float32], fits.Header]:
    noise = cfg.seed if cfg.noise_seed is None else cfg.noise_seed
    rng = np.random.default_rng([noise, 100, v.visit])
    n = cfg.image_pix
    true_wcs = visit_wcs(v, cfg)
    scale = cfg.skymap.pixel_scale_arcsec
    model = np.zeros((n, n), dtype=np.float64)
    ra = np.asarray(truth["ra"])
    dec = np.asarray(truth["dec"])
    x, y = true_wcs.all_world2pix(ra, dec, 0)
    margin = 20
    inside = (x > -margin) & (x < n + margin) & (y > -margin) & (y < n + margin)
    mags = np.asarray(truth[f"mag_{v.band}"])
    sizes = np.asarray(truth["size_arcsec"]) / scale
    counts_all = cfg.exptime_s * 10 ** (-0.4 * (mags - v.zero_point))
    psf_sigma = psf_sigma_at(v, cfg, x, y)
    for k in np.flatnonzero(inside):
        sigma = math.hypot(psf_sigma[k], sizes[k])
        r = math.ceil(5 * sigma) + 1
        xc, yc = x[k], y[k]
        ix0, iy0 = math.floor(xc) - r, math.floor(yc) - r
        xs = np.arange(ix0, ix0 + 2 * r + 2)
        ys = np.arange(iy0, iy0 + 2 * r + 2)
        gx = _integrated_gaussian(xs - xc, sigma)
        gy = _integrated_gaussian(ys - yc, sigma)
        x_lo, x_hi = max(0, ix0), min(n, ix0 + len(xs))
        y_lo, y_hi = max(0, iy0), min(n, iy0 + len(ys))
        if x_lo >= x_hi or y_lo >= y_hi:
            continue
        stamp = counts_all[k] * np.outer(gy[y_lo - iy0 : y_hi - iy0], gx[x_lo - ix0 : x_hi - ix0])
        model[y_lo:y_hi, x_lo:x_hi] += stamp
    # Sky with a gentle gradient, photon noise, read noise.
    yy, xx = np.mgrid[0:n, 0:n]
    sky = cfg.sky_counts * (1.0 + 0.05 * (xx / n - 0.5) + 0.03 * (yy / n - 0.5))
    image = rng.poisson(model + sky).astype(np.float64) + rng.normal(0.0, cfg.read_noise, (n, n))
    # Cosmic rays: short bright tracks; bad columns: dead (0) or hot (saturated).
    for _ in range(cfg.cosmic_rays):
        cx, cy = rng.integers(5, n - 5, 2)
        length = int(rng.integers(2, 6))
        dx, dy = rng.choice([-1, 0, 1], 2)
        for step in range(length):
            image[int(cy + dy * step), int(cx + dx * step)] += rng.uniform(3000, 20000)
    for _ in range(cfg.bad_columns):
        col = int(rng.integers(10, n - 10))
        image[:, col] = cfg.saturation if rng.uniform() < 0.5 else 0.0
    np.minimum(image, cfg.saturation, out=image)

    # The header WCS carries a pointing error that calibrate must measure and remove.
    err = cfg.pointing_error_arcsec / 3600
    head_wcs = visit_wcs(
        v,
        cfg,
        ra=v.ra_deg + rng.normal(0, err) / math.cos(math.radians(v.dec_deg)),
        dec=v.dec_deg + rng.normal(0, err),
    )
    header = head_wcs.to_header()
    header["VISIT"] = (v.visit, "visit (exposure) id")
    header["BAND"] = (v.band, "filter band")
    header["FILTER"] = v.band
    header["EXPTIME"] = (cfg.exptime_s, "exposure time (s)")
    header["MJD-OBS"] = (v.mjd, "start of exposure (MJD)")
    header["GAIN"] = (1.0, "electrons per count")
    header["RDNOISE"] = (cfg.read_noise, "read noise (counts)")
    header["SATURATE"] = (cfg.saturation, "saturation level (counts)")
    header["RELEASE"] = cfg.name
    header["ORIGIN"] = f"satdrp {__version__} synth"
    return image.astype(np.float32), header


def visit_corners(v: Visit, cfg: ReleaseConfig) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    n = cfg.image_pix
    xs = np.array([0, n - 1, 0, n - 1], dtype=float)
    ys = np.array([0, 0, n - 1, n - 1], dtype=float)
    ra, dec = visit_wcs(v, cfg).all_pix2world(xs, ys, 0)
    return np.asarray(ra), np.asarray(dec)


def manifest_visits(cfg: ReleaseConfig, skymap: SkyMap, visits: list[Visit]) -> list[dict[str, Any]]:
    """The manifest's visit records: metadata plus the (tract, patch) pairs each visit overlaps."""
    return [
        {**v.to_dict(), "patches": [list(tp) for tp in skymap.patches_overlapping(*visit_corners(v, cfg))]}
        for v in visits
    ]


def plan_manifest(cfg: ReleaseConfig) -> dict[str, Any]:
    """The manifest a release *would* have, without rendering a pixel (for planning and tests)."""
    skymap = SkyMap(cfg.skymap)
    return {
        "release": cfg.name,
        "config": cfg.model_dump(mode="json"),
        "visits": manifest_visits(cfg, skymap, plan_visits(cfg, skymap)),
    }


def generate_release(cfg: ReleaseConfig, root: Path, *, progress: ProgressFactory = no_progress) -> Path:
    """Write the release under ``root``; returns the manifest path. Existing files are replaced."""
    if set(cfg.bands) - set(BAND_OFFSETS):
        raise InvalidInputError(
            f"unknown band(s) {sorted(set(cfg.bands) - set(BAND_OFFSETS))}; known: {', '.join(BAND_OFFSETS)}"
        )
    from astropy.io import fits

    layout = Layout(cfg.name)
    skymap = SkyMap(cfg.skymap)
    truth = make_truth(cfg, skymap)
    write_parquet_atomic(root / layout.truth(), truth, {"step": "synth", "seed": cfg.seed})
    refcat = make_refcat(cfg, truth)
    write_parquet_atomic(root / layout.refcat(), refcat, {"step": "synth", "seed": cfg.seed})
    visits = plan_visits(cfg, skymap)
    with progress("rendering raw exposures", len(visits)) as advance:
        for v in visits:
            image, header = render_visit(v, cfg, truth)
            write_fits_atomic(root / layout.raw(v.band, v.visit), [fits.PrimaryHDU(image, header)])
            advance(1)
    manifest = {
        "release": cfg.name,
        "software": f"satdrp {__version__}",
        "config": cfg.model_dump(mode="json"),
        "visits": manifest_visits(cfg, skymap, visits),
        "truth_rows": truth.num_rows,
        "refcat_rows": refcat.num_rows,
    }
    path = root / layout.manifest()
    write_bytes_atomic(path, json.dumps(manifest, indent=1, sort_keys=True).encode())
    return path


def load_manifest(root: Path, release: str) -> dict[str, Any]:
    path = root / Layout(release).manifest()
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError as err:
        raise InvalidInputError(f"{path}: release manifest not found (run `drp release generate`)") from err
    except json.JSONDecodeError as err:
        raise InvalidInputError(f"{path}: not valid JSON ({err})") from err


def read_parquet(path: Path) -> pa.Table:
    import pyarrow.parquet as pq

    return pq.read_table(path)


def release_config(
    name: str, seed: int, tracts: tuple[int, int], bands: Sequence[str], visits_per_band: int
) -> ReleaseConfig:
    """The default release with a name, seed, tract grid, bands and visits (what `drp release generate`
    takes); unknown bands and bad values fail as in :class:`ReleaseConfig`."""
    base = ReleaseConfig()
    return ReleaseConfig(
        name=name,
        seed=seed,
        bands=tuple(bands),
        visits_per_band=visits_per_band,
        skymap=base.skymap.model_copy(update={"tracts_x": tracts[0], "tracts_y": tracts[1]}),
    )


def generate_summary(
    cfg: ReleaseConfig, root: Path, *, progress: ProgressFactory = no_progress
) -> dict[str, Any]:
    """Generate the release and say what it holds: manifest path, visits, truth and reference rows."""
    manifest = generate_release(cfg, root, progress=progress)
    man = load_manifest(root, cfg.name)
    return {
        "manifest": str(manifest),
        "visits": len(man["visits"]),
        "truth_rows": man["truth_rows"],
        "refcat_rows": man["refcat_rows"],
    }
