"""Accuracy of a processed release against its truth catalogue.

Positions and fluxes of measured objects are compared with the truth they were rendered from:
astrometric rms (mas), photometric bias and scatter per band (mmag), completeness versus magnitude.
Pure functions of Arrow tables, reused by the campaign report and by overlap cross-validation.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray
from scipy.spatial import cKDTree

from common.errors import InvalidInputError
from science.pipeline.common import mag_to_njy, match_positions, njy_to_mag


@dataclass(frozen=True)
class BandAccuracy:
    band: str
    n_stars: int  # matched stars above the S/N cut
    bias_mmag: float  # median(measured - true) magnitude; positive = measured too faint
    scatter_mmag: float  # 1.4826 × MAD of the same differences
    chi_scatter: float  # robust std of (flux - true) / error: 1 when errors are right
    n_galaxies: int = 0  # matched galaxies at S/N > GALAXY_SNR (Kron flux)
    galaxy_kron_bias_mmag: float = float("nan")  # median(Kron mag - true); positive = too faint
    galaxy_psf_bias_mmag: float = float("nan")  # the same with PSF fluxes (what a point model misses)


@dataclass(frozen=True)
class CompletenessBin:
    mag_lo: float
    mag_hi: float
    n_true: int
    n_found: int

    @property
    def fraction(self) -> float:
        return self.n_found / self.n_true if self.n_true else float("nan")


@dataclass(frozen=True)
class AccuracyReport:
    n_objects: int
    n_truth: int
    n_matched: int
    min_snr: float
    astrometric_rms_mas: float  # per axis, stars above the S/N cut
    n_astrometric: int
    bands: tuple[BandAccuracy, ...]
    completeness_band: str
    completeness: tuple[CompletenessBin, ...]
    mag_snr10: float  # point-source magnitude measured with S/N 10 in the completeness band
    completeness_snr10: float  # fraction of truth stars brighter than mag_snr10 that were detected
    completeness_snr10_isolated: float  # the same for stars with no truth neighbour within isolation_arcsec
    isolation_arcsec: float
    stars_classified_point: float = float("nan")  # S/N above the cut, refExtendedness 0
    galaxies_classified_extended: float = float("nan")  # refExtendedness 1
    calibration: Any = None  # science.calibration_report.CalibrationReport, when calexps are at hand

    @property
    def depth50(self) -> float | None:
        """Magnitude where the completeness falls through 50 % (interpolated), or None when it never
        does inside the truth catalogue's range (the truth is too shallow to measure it)."""
        bins = [b for b in self.completeness if b.n_true > 0]
        for a, b in itertools.pairwise(bins):
            if a.fraction >= 0.5 > b.fraction:
                ma, mb = (a.mag_lo + a.mag_hi) / 2, (b.mag_lo + b.mag_hi) / 2
                return ma + (a.fraction - 0.5) / (a.fraction - b.fraction) * (mb - ma)
        return None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for b, src in zip(d["completeness"], self.completeness, strict=True):
            b["fraction"] = src.fraction
        d["depth50"] = self.depth50
        d["calibration"] = self.calibration.to_dict() if self.calibration is not None else None
        return d


def _cols(table: pa.Table) -> dict[str, NDArray[Any]]:
    return {name: np.asarray(table[name]) for name in table.column_names}


def load_object_tables(paths: list[Path], primary_only: bool = True) -> pa.Table:
    tables = []
    for path in paths:
        try:
            t = pq.read_table(path)
        except (OSError, pa.ArrowInvalid) as err:
            raise InvalidInputError(f"{path}: cannot read object table ({err})") from err
        if primary_only:
            t = t.filter(t["detect_isPrimary"])
        tables.append(t.replace_schema_metadata(None))
    if not tables:
        raise InvalidInputError("no object tables to validate")
    return pa.concat_tables(tables)


GALAXY_SNR = 50.0


def _galaxy_bias(
    o: dict[str, NDArray[Any]], t: dict[str, NDArray[Any]], i: NDArray[Any], j: NDArray[Any], band: str
) -> tuple[int, float, float]:
    """(galaxies, Kron-flux bias, PSF-flux bias) in mmag for matched galaxies at S/N > GALAXY_SNR."""
    if f"{band}_kronFlux" not in o:
        return 0, float("nan"), float("nan")
    kron, err = o[f"{band}_kronFlux"][i], o[f"{band}_kronFluxErr"][i]
    psf = o[f"{band}_psfFlux"][i]
    true = mag_to_njy(t[f"mag_{band}"][j])
    with np.errstate(divide="ignore", invalid="ignore"):
        sel = ~t["is_star"][j] & (kron / err > GALAXY_SNR) & (kron > 0) & (psf > 0)
        if not sel.any():
            return 0, float("nan"), float("nan")
        k = float(np.median(-2.5 * np.log10(kron[sel] / true[sel]))) * 1000
        p = float(np.median(-2.5 * np.log10(psf[sel] / true[sel]))) * 1000
    return int(sel.sum()), k, p


def _robust_std(x: NDArray[np.float64]) -> float:
    if len(x) == 0:
        return float("nan")
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def _isolated(ra: NDArray[np.float64], dec: NDArray[np.float64], radius_arcsec: float) -> NDArray[np.bool_]:
    """Whether each position has no other position within the radius."""
    if len(ra) == 0:
        return np.zeros(0, dtype=bool)
    c = math.cos(math.radians(float(np.mean(dec))))
    tree = cKDTree(np.column_stack([((ra - ra[0] + 180.0) % 360.0 - 180.0) * c, dec]))
    counts = np.array([len(n) for n in tree.query_ball_point(tree.data, radius_arcsec / 3600)])
    return np.asarray(counts == 1)


def accuracy(
    objects: pa.Table,
    truth: pa.Table,
    bands: tuple[str, ...],
    *,
    within: Callable[[NDArray[np.float64], NDArray[np.float64]], NDArray[np.bool_]] | None = None,
    min_snr: float = 20.0,
    match_radius_arcsec: float = 0.5,
    mag_step: float = 0.5,
    isolation_arcsec: float = 2.0,
) -> AccuracyReport:
    """Compare measured objects with truth. ``within(ra, dec)`` selects the truth that was processed."""
    o, t = _cols(objects), _cols(truth)
    if within is not None:
        keep = within(t["ra"], t["dec"])
        t = {k: v[keep] for k, v in t.items()}
    i, j = match_positions(o["ra"], o["dec"], t["ra"], t["dec"], match_radius_arcsec)
    cos_dec = math.cos(math.radians(float(np.mean(t["dec"])))) if len(t["dec"]) else 1.0

    ref_band = "r" if "r" in bands else bands[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        snr_ref = o[f"{ref_band}_psfFlux"] / o[f"{ref_band}_psfFluxErr"]
    stars = t["is_star"][j] & (snr_ref[i] > min_snr)
    dra = (o["ra"][i] - t["ra"][j])[stars] * cos_dec * 3.6e6
    ddec = (o["dec"][i] - t["dec"][j])[stars] * 3.6e6
    astro = float(np.sqrt(np.mean(np.concatenate([dra, ddec]) ** 2))) if stars.any() else float("nan")

    per_band = []
    for band in bands:
        flux, err = o[f"{band}_psfFlux"][i], o[f"{band}_psfFluxErr"][i]
        true = mag_to_njy(t[f"mag_{band}"][j])
        with np.errstate(divide="ignore", invalid="ignore"):
            sel = t["is_star"][j] & (flux / err > min_snr) & (flux > 0)
            dmag = -2.5 * np.log10(flux[sel] / true[sel]) * 1000
            chi = (flux[sel] - true[sel]) / err[sel]
        per_band.append(
            BandAccuracy(
                band,
                int(sel.sum()),
                float(np.median(dmag)) if sel.any() else float("nan"),
                _robust_std(dmag),
                _robust_std(chi),
                *_galaxy_bias(o, t, i, j, band),
            )
        )
    extended = o["refExtendedness"][i] if "refExtendedness" in o else np.full(len(i), np.nan)
    decided = np.isfinite(extended) & (snr_ref[i] > min_snr)
    star_j = t["is_star"][j]
    stars_point = (
        float(np.mean(extended[decided & star_j] == 0)) if (decided & star_j).any() else float("nan")
    )
    gal = decided & ~star_j
    galaxies_extended = float(np.mean(extended[gal] == 1)) if gal.any() else float("nan")

    # Point-source depth: faint sources' PSF-flux errors are set by the sky, so the flux with S/N 10
    # is ten times the median error of the fainter half of the measured objects.
    true_mag = t[f"mag_{ref_band}"]
    errs = o[f"{ref_band}_psfFluxErr"]
    errs = errs[np.isfinite(errs) & (errs > 0)]
    faint = errs[errs <= np.median(errs)] if len(errs) else errs
    mag_snr10 = float(njy_to_mag(np.array([10 * float(np.median(faint))]))[0]) if len(faint) else float("nan")
    edges = np.arange(
        math.floor(float(np.min(true_mag))), math.ceil(float(np.max(true_mag))) + mag_step, mag_step
    )
    # A truth object is recovered when a detection lies within the match radius of it (two objects
    # closer than that are one source at this seeing, and both count as recovered).
    k_truth, _ = match_positions(t["ra"], t["dec"], o["ra"], o["dec"], match_radius_arcsec)
    found = np.zeros(len(true_mag), dtype=bool)
    found[k_truth] = True
    bins = tuple(
        CompletenessBin(
            float(lo),
            float(hi),
            int(((true_mag >= lo) & (true_mag < hi)).sum()),
            int((found & (true_mag >= lo) & (true_mag < hi)).sum()),
        )
        for lo, hi in itertools.pairwise(edges)
    )
    bright = t["is_star"] & (true_mag < mag_snr10)
    comp10 = float(found[bright].mean()) if bright.any() else float("nan")
    # Blends closer than ~2 FWHM are a deblending limit, reported apart from detection completeness.
    isolated = _isolated(t["ra"], t["dec"], isolation_arcsec)
    iso = bright & isolated
    comp10_iso = float(found[iso].mean()) if iso.any() else float("nan")
    return AccuracyReport(
        n_objects=len(o["ra"]),
        n_truth=len(t["ra"]),
        n_matched=len(i),
        min_snr=min_snr,
        astrometric_rms_mas=astro,
        n_astrometric=int(stars.sum()),
        bands=tuple(per_band),
        completeness_band=ref_band,
        completeness=bins,
        mag_snr10=mag_snr10,
        completeness_snr10=comp10,
        completeness_snr10_isolated=comp10_iso,
        isolation_arcsec=isolation_arcsec,
        stars_classified_point=stars_point,
        galaxies_classified_extended=galaxies_extended,
    )


def validate_release(root: Path, release: str | None, *, min_snr: float = 20.0) -> AccuracyReport:
    """Accuracy of the merged tract tables under a site root against the release's truth."""
    from science.pipeline.jobs import ReleaseContext

    ctx = ReleaseContext.discover(root, release)
    paths = [root / ctx.layout.object_table(t.id) for t in ctx.skymap.tracts]
    present = [p for p in paths if p.is_file()]
    if not present:
        raise InvalidInputError(f"{root}: no merged object tables under {ctx.layout.base / 'objectTable'}")
    done = {int(p.stem.removeprefix("tract")) for p in present}
    try:
        truth = pq.read_table(root / ctx.layout.truth())
    except (OSError, pa.ArrowInvalid) as err:
        raise InvalidInputError(f"{root / ctx.layout.truth()}: cannot read truth ({err})") from err
    skymap = ctx.skymap
    report = accuracy(
        load_object_tables(present),
        truth,
        ctx.bands,
        within=lambda ra, dec: np.isin(skymap.find_tracts(ra, dec), list(done)),
        min_snr=min_snr,
    )
    from science.calibration_report import calibration_report

    return replace(report, calibration=calibration_report(root, ctx.layout.release))
