"""Overlap cross-validation: the same tract processed at two sites must give the same science.

For one tract, the sites' object tables are matched by position and compared, and their coadds are
compared pixel by pixel. Every figure is checked against the campaign's thresholds, and each failed
check names the tract, the sites and the quantity:

- ``match_fraction``: matched primary objects / the larger of the two counts. A missing patch or
  a detection difference lowers it.
- ``position_rms_arcsec``: per-axis rms of the position differences of matched objects.
- ``flux_pull_rms`` and ``flux_pull_median``, per band: (f₁ − f₂)/√(e₁² + e₂²) of PSF fluxes. Their
  rms should stay below the threshold (for independent noise it would be about 1), and their median
  near 0.
- ``flux_bias_mmag``, per band: the median magnitude difference of bright objects (S/N ≥
  ``bias_min_snr``). A 1 % zero-point error shows as about 10.9 mmag, whatever the noise. With no
  such object it is recorded as not measured (passed, saying so), never silently left out.
- ``object_table`` and ``columns``: a catalogue missing, unreadable, empty or lacking a band's
  columns at one site is a failed check naming the site, the band and the reason, not an error.
- ``flag_mismatch_fraction``: matched objects whose PSF-flux flag differs between the sites.
- ``coadd_chi2``, per band: the mean (c₁ − c₂)²/(v₁ + v₂) over pixels both coadds cover. A coadd
  missing at one site fails by name.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

from science.layout import Layout
from science.pipeline.common import match_positions, read_exposure
from science.thresholds import ValidationSection

POSITION_COLUMNS = ("ra", "dec")
BAND_COLUMNS = ("{band}_psfFlux", "{band}_psfFluxErr", "{band}_flag_psf")


@dataclass(frozen=True)
class Check:
    quantity: str
    band: str | None
    value: float
    limit: float
    passed: bool
    detail: str = ""

    def describe(self, tract: int, sites: tuple[str, str]) -> str:
        what = f"{self.quantity}[{self.band}]" if self.band else self.quantity
        verdict = "ok" if self.passed else "FAILED"
        return (
            f"tract {tract} {sites[0]} vs {sites[1]}: {what} = {self.value:.4g} "
            f"(limit {self.limit:g}) {verdict}" + (f": {self.detail}" if self.detail else "")
        )


@dataclass(frozen=True)
class TractComparison:
    tract: int
    sites: tuple[str, str]
    n_objects: tuple[int, int]
    n_matched: int
    checks: tuple[Check, ...]
    pulls: dict[str, list[float]] = field(default_factory=dict, repr=False)  # for the report's histograms

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def failures(self) -> list[str]:
        return [c.describe(self.tract, self.sites) for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("pulls")
        d["passed"] = self.passed
        return d


def _primary(table: pa.Table) -> dict[str, NDArray[Any]]:
    t = table.filter(table["detect_isPrimary"]) if "detect_isPrimary" in table.column_names else table
    return {name: np.asarray(t[name]) for name in t.column_names}


def compare_objects(
    a: pa.Table,
    b: pa.Table,
    bands: Sequence[str],
    cfg: ValidationSection,
    sites: tuple[str, str] = ("a", "b"),
) -> tuple[list[Check], int, dict[str, list[float]]]:
    """Checks on two object tables of one tract; returns (checks, matched count, pulls per band)."""
    lacking = {
        site: [c for c in POSITION_COLUMNS if c not in t.column_names]
        for site, t in zip(sites, (a, b), strict=True)
    }
    if any(lacking.values()):
        why = "; ".join(f"{site} lacks {', '.join(cols)}" for site, cols in lacking.items() if cols)
        return [Check("object_table", None, float("nan"), 0.0, False, why)], 0, {}
    ca, cb = _primary(a), _primary(b)
    na, nb = len(ca["ra"]), len(cb["ra"])
    ia, ib = match_positions(ca["ra"], ca["dec"], cb["ra"], cb["dec"], cfg.match_radius_arcsec)
    checks: list[Check] = []
    frac = len(ia) / max(na, nb) if max(na, nb) else 0.0
    checks.append(
        Check(
            "match_fraction",
            None,
            frac,
            cfg.min_match_fraction,
            frac >= cfg.min_match_fraction,
            f"{sites[0]} {na} objects, {sites[1]} {nb}, {len(ia)} matched",
        )
    )
    if len(ia) == 0:
        return checks, 0, {}
    cosd = math.cos(math.radians(float(np.mean(ca["dec"][ia]))))
    dra = ((ca["ra"][ia] - cb["ra"][ib] + 180.0) % 360.0 - 180.0) * cosd * 3600.0
    ddec = (ca["dec"][ia] - cb["dec"][ib]) * 3600.0
    rms = float(math.sqrt(np.mean(np.concatenate([dra, ddec]) ** 2)))
    checks.append(
        Check(
            "position_rms_arcsec", None, rms, cfg.max_position_rms_arcsec, rms <= cfg.max_position_rms_arcsec
        )
    )
    pulls_by_band: dict[str, list[float]] = {}
    flag_diff = np.zeros(len(ia), dtype=bool)
    for band in bands:
        absent = {
            site: [c.format(band=band) for c in BAND_COLUMNS if c.format(band=band) not in cols]
            for site, cols in zip(sites, (ca, cb), strict=True)
        }
        if any(absent.values()):
            why = "; ".join(f"{site} lacks {', '.join(cols)}" for site, cols in absent.items() if cols)
            checks.append(Check("columns", band, float("nan"), 0.0, False, why))
            continue
        f1, f2 = ca[f"{band}_psfFlux"][ia], cb[f"{band}_psfFlux"][ib]
        e1, e2 = ca[f"{band}_psfFluxErr"][ia], cb[f"{band}_psfFluxErr"][ib]
        g1, g2 = ca[f"{band}_flag_psf"][ia], cb[f"{band}_flag_psf"][ib]
        flag_diff |= np.asarray(g1, dtype=bool) != np.asarray(g2, dtype=bool)
        ok = (
            np.isfinite(f1)
            & np.isfinite(f2)
            & (e1 > 0)
            & (e2 > 0)
            & ~np.asarray(g1, bool)
            & ~np.asarray(g2, bool)
        )
        pulls = (f1[ok] - f2[ok]) / np.sqrt(e1[ok] ** 2 + e2[ok] ** 2)
        pulls_by_band[band] = [float(p) for p in pulls]
        p_rms = float(math.sqrt(np.mean(pulls**2))) if len(pulls) else float("nan")
        p_med = float(np.median(pulls)) if len(pulls) else float("nan")
        none = "" if len(pulls) else "no object with finite, unflagged fluxes at both sites"
        checks.append(
            Check(
                "flux_pull_rms",
                band,
                p_rms,
                cfg.max_flux_pull_rms,
                bool(p_rms <= cfg.max_flux_pull_rms),
                none,
            )
        )
        checks.append(
            Check(
                "flux_pull_median",
                band,
                p_med,
                cfg.max_flux_pull_median,
                bool(abs(p_med) <= cfg.max_flux_pull_median),
                none,
            )
        )
        bright = ok & (f1 / np.where(e1 > 0, e1, np.inf) >= cfg.bias_min_snr) & (f1 > 0) & (f2 > 0)
        if bright.any():
            bias = float(np.median(-2.5 * np.log10(f1[bright] / f2[bright])) * 1000.0)
            checks.append(
                Check(
                    "flux_bias_mmag",
                    band,
                    bias,
                    cfg.max_flux_bias_mmag,
                    abs(bias) <= cfg.max_flux_bias_mmag,
                    f"{int(bright.sum())} objects with S/N >= {cfg.bias_min_snr:g}; "
                    f"positive: {sites[0]} fainter",
                )
            )
        else:
            checks.append(
                Check(
                    "flux_bias_mmag",
                    band,
                    float("nan"),
                    cfg.max_flux_bias_mmag,
                    True,
                    f"not measured: no matched object with S/N >= {cfg.bias_min_snr:g}",
                )
            )
    flags = float(np.mean(flag_diff))
    checks.append(
        Check(
            "flag_mismatch_fraction",
            None,
            flags,
            cfg.max_flag_mismatch_fraction,
            flags <= cfg.max_flag_mismatch_fraction,
        )
    )
    return checks, len(ia), pulls_by_band


def compare_coadds(
    pairs: Sequence[tuple[int, str, Path, Path]], cfg: ValidationSection, sites: tuple[str, str] = ("a", "b")
) -> list[Check]:
    """One ``coadd_chi2`` check per band over the (patch, band, path at site a, path at site b) pairs."""
    sums: dict[str, list[float]] = {}
    missing: dict[str, list[str]] = {}
    for patch, band, pa_, pb_ in pairs:
        absent = [s for s, p in zip(sites, (pa_, pb_), strict=True) if not p.is_file()]
        if absent:
            missing.setdefault(band, []).append(f"patch {patch} missing at {', '.join(absent)}")
            continue
        ea, eb = read_exposure(pa_), read_exposure(pb_)
        if ea.image.shape != eb.image.shape:
            missing.setdefault(band, []).append(
                f"patch {patch}: shapes {ea.image.shape} and {eb.image.shape} differ"
            )
            continue
        va, vb = ea.variance.astype(np.float64), eb.variance.astype(np.float64)
        ok = np.isfinite(va) & np.isfinite(vb) & (va + vb > 0) & np.isfinite(ea.image) & np.isfinite(eb.image)
        d = ea.image.astype(np.float64)[ok] - eb.image.astype(np.float64)[ok]
        acc = sums.setdefault(band, [0.0, 0.0])
        acc[0] += float(np.sum(d * d / (va[ok] + vb[ok])))
        acc[1] += float(ok.sum())
    checks = []
    for band in sorted(set(sums) | set(missing)):
        total, n = sums.get(band, [0.0, 0.0])
        chi2 = total / n if n else float("inf")
        problems = missing.get(band, [])
        checks.append(
            Check(
                "coadd_chi2",
                band,
                chi2,
                cfg.max_coadd_chi2,
                not problems and chi2 <= cfg.max_coadd_chi2,
                "; ".join(problems[:3]) + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""),
            )
        )
    return checks


def compare_tract(
    roots: tuple[Path, Path],
    sites: tuple[str, str],
    release: str,
    tract: int,
    patches: Sequence[int],
    bands: Sequence[str],
    cfg: ValidationSection,
) -> TractComparison:
    """Compare the tract's merged object tables and coadds at two site roots."""
    layout = Layout(release)
    tables: list[pa.Table] = []
    unusable: list[str] = []
    for root, site in zip(roots, sites, strict=True):
        path = root / layout.object_table(tract)
        try:
            table = pq.read_table(path)
        except FileNotFoundError:
            unusable.append(f"{site}: {path} is missing")
            continue
        except (OSError, pa.ArrowInvalid) as err:
            unusable.append(f"{site}: cannot read {path} ({str(err).splitlines()[0]})")
            continue
        if table.num_rows == 0:
            unusable.append(f"{site}: {path} holds no object")
        tables.append(table)
    pulls: dict[str, list[float]] = {}
    matched, counts = 0, (0, 0)
    if unusable:
        checks = [Check("object_table", None, float("nan"), 0.0, False, "; ".join(unusable))]
    else:
        checks, matched, pulls = compare_objects(tables[0], tables[1], bands, cfg, sites)
        counts = (_primary_count(tables[0]), _primary_count(tables[1]))
    pairs = [
        (p, b, roots[0] / layout.coadd(tract, p, b), roots[1] / layout.coadd(tract, p, b))
        for p in patches
        for b in bands
    ]
    checks += compare_coadds(pairs, cfg, sites)
    return TractComparison(tract, sites, counts, matched, tuple(checks), pulls)


def _primary_count(table: pa.Table) -> int:
    if "detect_isPrimary" not in table.column_names:
        return int(table.num_rows)
    return int(np.sum(np.asarray(table["detect_isPrimary"])))
