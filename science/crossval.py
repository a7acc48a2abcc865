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

from science.crossval_coadd import compare_coadds
from science.crossval_limits import Check, Limits, finite_or_none
from science.layout import Layout
from science.pipeline.common import match_positions
from science.thresholds import ValidationSection

POSITION_COLUMNS = ("ra", "dec", "coord_err")
BAND_COLUMNS = ("{band}_psfFlux", "{band}_psfFluxErr", "{band}_flag_psf")


@dataclass(frozen=True)
class TractComparison:
    tract: int
    sites: tuple[str, str]
    n_objects: tuple[int, int]
    n_matched: int
    checks: tuple[Check, ...]
    # per-object figures for the report's plots, at most SAMPLE_LIMIT each: "ra", "dec", "dra_mas",
    # "ddec_mas", "sigma_mas"; per band "pull[B]", "mag[B]", "dmag_mmag[B]", "sigma_mmag[B]"
    samples: dict[str, list[float]] = field(default_factory=dict, repr=False)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def failures(self) -> list[str]:
        return [c.describe(self.tract, self.sites) for c in self.checks if not c.passed]

    def pulls(self, band: str) -> list[float]:
        return self.samples.get(f"pull[{band}]", [])

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("samples")
        d["checks"] = [{k: finite_or_none(v) for k, v in c.items()} for c in d["checks"]]
        d["passed"] = self.passed
        return d

    def to_record(self) -> dict[str, Any]:
        """Everything, samples included, as JSON-ready values (non-finite numbers as null)."""
        return {**self.to_dict(), "samples": self.samples}

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> TractComparison:
        nan = float("nan")
        checks = tuple(
            Check(
                c["quantity"],
                c["band"],
                nan if c["value"] is None else float(c["value"]),
                nan if c["limit"] is None else float(c["limit"]),
                bool(c["passed"]),
                c.get("detail", ""),
            )
            for c in d["checks"]
        )
        a, b = d["sites"]
        na, nb = d["n_objects"]
        samples = {k: [float(x) for x in v] for k, v in d.get("samples", {}).items()}
        return cls(int(d["tract"]), (a, b), (int(na), int(nb)), int(d["n_matched"]), checks, samples)


SAMPLE_LIMIT = 5000


def _sample(columns: dict[str, NDArray[Any]]) -> dict[str, list[float]]:
    """Every k-th object so that at most SAMPLE_LIMIT remain (the same ones in every column)."""
    n = len(next(iter(columns.values()))) if columns else 0
    step = max(1, math.ceil(n / SAMPLE_LIMIT))
    return {k: [float(x) for x in np.asarray(v)[::step]] for k, v in columns.items()}


def _primary(table: pa.Table) -> dict[str, NDArray[Any]]:
    t = table.filter(table["detect_isPrimary"]) if "detect_isPrimary" in table.column_names else table
    return {name: np.asarray(t[name]) for name in t.column_names}


@dataclass(frozen=True)
class _Matched:
    """Two sites' primary objects (columns) and the indices of their matched pairs."""

    a: dict[str, NDArray[Any]]
    b: dict[str, NDArray[Any]]
    ia: NDArray[Any]
    ib: NDArray[Any]
    sites: tuple[str, str]

    def pair(self, column: str) -> tuple[NDArray[Any], NDArray[Any]]:
        """The column at both sites, matched object by matched object."""
        return self.a[column][self.ia], self.b[column][self.ib]


def _weighted_offset(d: NDArray[Any], sigma: NDArray[Any]) -> tuple[float, float]:
    """(weighted mean of d, its standard error) for differences d with errors sigma."""
    w = 1.0 / sigma**2
    total = float(np.sum(w))
    return float(np.sum(w * d)) / total, 1.0 / math.sqrt(total)


def _missing_columns(sites: tuple[str, str], cols: tuple[Any, Any], names: Sequence[str]) -> str:
    absent = {site: [c for c in names if c not in have] for site, have in zip(sites, cols, strict=True)}
    return "; ".join(f"{site} lacks {', '.join(c)}" for site, c in absent.items() if c)


def compare_objects(
    a: pa.Table,
    b: pa.Table,
    bands: Sequence[str],
    cfg: ValidationSection,
    sites: tuple[str, str] = ("a", "b"),
) -> tuple[list[Check], int, dict[str, list[float]]]:
    """Checks on two object tables of one tract; returns (checks, matched count, samples)."""
    lim = Limits(cfg)
    why = _missing_columns(sites, (a.column_names, b.column_names), POSITION_COLUMNS)
    if why:
        return [Check("object_table", None, float("nan"), 0.0, False, why)], 0, {}
    ca, cb = _primary(a), _primary(b)
    na, nb = len(ca["ra"]), len(cb["ra"])
    ia, ib = match_positions(ca["ra"], ca["dec"], cb["ra"], cb["dec"], cfg.match_radius_arcsec)
    m = _Matched(ca, cb, ia, ib, sites)
    checks: list[Check] = []
    if lim.identical:  # every object has its twin
        frac = len(ia) / max(na, nb) if max(na, nb) else 0.0
        detail = f"{sites[0]} {na} objects, {sites[1]} {nb}, {len(ia)} matched"
    else:  # objects near the threshold come and go with the noise: count those well above it
        frac, detail = _bright_match_fraction(m, cfg.match_min_snr)
    frac_limit = lim.fraction(cfg.min_match_fraction, 1.0)
    checks.append(Check("match_fraction", None, frac, frac_limit, frac >= frac_limit, detail))
    if len(ia) == 0:
        return checks, 0, {}
    position_checks, samples = _position_checks(m, lim)
    checks += position_checks
    flag_diff = np.zeros(len(ia), dtype=bool)
    for band in bands:
        why = _missing_columns(sites, (ca, cb), [c.format(band=band) for c in BAND_COLUMNS])
        if why:
            checks.append(Check("columns", band, float("nan"), 0.0, False, why))
            continue
        g1, g2 = (np.asarray(g, dtype=bool) for g in m.pair(f"{band}_flag_psf"))
        flag_diff |= g1 != g2
        band_checks, band_samples = _flux_checks(m, band, ~g1 & ~g2, lim)
        checks += band_checks
        samples.update(band_samples)
    flags = float(np.mean(flag_diff))
    flag_limit = lim.fraction(cfg.max_flag_mismatch_fraction, 0.0)
    checks.append(Check("flag_mismatch_fraction", None, flags, flag_limit, flags <= flag_limit))
    return checks, len(ia), samples


def _bright_match_fraction(m: _Matched, min_snr: float) -> tuple[float, str]:
    """The smaller of the two sites' fractions of their objects at detection S/N ≥ ``min_snr`` that
    have a match at the other site."""
    fractions, parts = [], []
    for site, cols, matched in ((m.sites[0], m.a, m.ia), (m.sites[1], m.b, m.ib)):
        snr = cols.get("detect_snr")
        bright = np.ones(len(cols["ra"]), bool) if snr is None else np.asarray(snr) >= min_snr
        hit = np.zeros(len(bright), bool)
        hit[matched] = True
        n = int(bright.sum())
        fractions.append(float(hit[bright].mean()) if n else 1.0)
        parts.append(f"{site} {int(hit[bright].sum())} of {n}")
    return min(fractions), f"objects at S/N >= {min_snr:g} matched: " + ", ".join(parts)


def _position_checks(m: _Matched, lim: Limits) -> tuple[list[Check], dict[str, list[float]]]:
    """Position pulls (differences over the combined centroid errors): their rms and a mean offset."""
    (ra1, ra2), (dec1, dec2), (err1, err2) = m.pair("ra"), m.pair("dec"), m.pair("coord_err")
    cosd = math.cos(math.radians(float(np.mean(dec1))))
    dra = ((ra1 - ra2 + 180.0) % 360.0 - 180.0) * cosd * 3600.0
    ddec = (dec1 - dec2) * 3600.0
    floor = 0.0 if lim.identical else lim.cfg.astrometric_floor_mas / 1000.0  # both sites' calibrations
    sigma = np.sqrt(err1**2 + err2**2 + 2 * floor**2)
    ok = np.isfinite(sigma) & (sigma > 0) & np.isfinite(dra) & np.isfinite(ddec)
    n = int(ok.sum())
    if n == 0:
        why = "no matched object with a finite, positive coord_err at both sites"
        return [Check("position_pull_rms", None, float("nan"), 0.0, False, why)], {}
    dra, ddec, sigma = dra[ok], ddec[ok], sigma[ok]
    rms = float(math.sqrt(np.mean((dra / sigma) ** 2 + (ddec / sigma) ** 2) / 2))
    (mx, ex), (my, ey) = _weighted_offset(dra, sigma), _weighted_offset(ddec, sigma)
    offset = max(abs(mx) / ex, abs(my) / ey) / math.sqrt(n)  # in units of one object's noise
    shift = f"mean shift ({mx * 1000:+.3g} ± {ex * 1000:.2g}, {my * 1000:+.3g} ± {ey * 1000:.2g}) mas"
    checks = [
        Check("position_pull_rms", None, rms, lim.rms(2 * n), rms <= lim.rms(2 * n), f"{n} objects"),
        Check("position_offset", None, offset, lim.mean(n), offset <= lim.mean(n), shift),
    ]
    where = {"ra": ra1[ok], "dec": dec1[ok]}
    return checks, _sample({**where, "dra_mas": dra * 1e3, "ddec_mas": ddec * 1e3, "sigma_mas": sigma * 1e3})


def _flux_checks(
    m: _Matched, band: str, unflagged: NDArray[Any], lim: Limits
) -> tuple[list[Check], dict[str, list[float]]]:
    """PSF-flux pulls of one band: their rms, a relative (zero-point-like) offset and the bright-object
    median Δmag."""
    (f1, f2), (e1, e2) = m.pair(f"{band}_psfFlux"), m.pair(f"{band}_psfFluxErr")
    ok = np.isfinite(f1) & np.isfinite(f2) & (e1 > 0) & (e2 > 0) & unflagged
    f1, f2, e1, e2 = f1[ok], f2[ok], e1[ok], e2[ok]
    mean_flux = 0.5 * (f1 + f2)
    # independent processings also differ by their photometric calibrations: a common-mode error
    floor = 0.0 if lim.identical else lim.cfg.photometric_floor_mmag / 1085.7
    sigma = np.sqrt(e1**2 + e2**2 + 2 * (floor * mean_flux) ** 2)
    pulls = (f1 - f2) / sigma
    n = len(pulls)
    if n == 0:
        none = "no object with finite, unflagged fluxes at both sites"
        return [Check("flux_pull_rms", band, float("nan"), 0.0, False, none)], {}
    rms = float(math.sqrt(np.mean(pulls**2)))
    checks = [Check("flux_pull_rms", band, rms, lim.rms(n), rms <= lim.rms(n), f"{n} objects")]
    noise = np.sqrt(e1**2 + e2**2)
    det = mean_flux > 5 * noise  # a relative offset needs a flux well above its noise
    if det.any():
        rel, err = _weighted_offset((f1 - f2)[det] / mean_flux[det], noise[det] / mean_flux[det])
        err = math.sqrt(err**2 + 2 * floor**2)  # the calibrations' part does not average down
        n_det = int(det.sum())
        offset = abs(rel) / err / math.sqrt(n_det)
        detail = f"mean Δmag {-rel * 1085.7:+.3g} ± {err * 1085.7:.2g} mmag over {n_det} objects (S/N > 5)"
        checks.append(Check("flux_offset", band, offset, lim.mean(n_det), offset <= lim.mean(n_det), detail))
    bright = (f1 / e1 >= lim.cfg.bias_min_snr) & (f1 > 0) & (f2 > 0)
    if bright.any():
        dmag = -2.5 * np.log10(f1[bright] / f2[bright]) * 1000.0
        k = int(bright.sum())
        err_mmag = 1085.7 * float(np.median(noise[bright] / mean_flux[bright]))
        if lim.identical:
            limit = lim.mean(k) * err_mmag
        else:  # the median of k values has √(π/2) times the error of their mean; plus the calibrations
            stat = err_mmag * math.sqrt(math.pi / 2) / math.sqrt(k)
            limit = lim.mean(1) * math.hypot(stat, math.sqrt(2) * lim.cfg.photometric_floor_mmag)
        bias = float(np.median(dmag))
        detail = f"{k} objects with S/N >= {lim.cfg.bias_min_snr:g}; positive: {m.sites[0]} fainter"
        checks.append(Check("flux_bias_mmag", band, bias, limit, abs(bias) <= limit, detail))
    else:
        detail = f"not measured: no matched object with S/N >= {lim.cfg.bias_min_snr:g}"
        checks.append(Check("flux_bias_mmag", band, float("nan"), float("nan"), True, detail))
    positive = (f1 > 0) & (f2 > 0)
    samples = _sample({f"pull[{band}]": pulls})
    samples.update(
        _sample(
            {
                f"mag[{band}]": 31.4 - 2.5 * np.log10(mean_flux[positive]),  # AB, fluxes in nJy
                f"dmag_mmag[{band}]": -2500 * np.log10(f1[positive] / f2[positive]),
                f"sigma_mmag[{band}]": 1085.7 * sigma[positive] / mean_flux[positive],
            }
        )
    )
    return checks, samples


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
    samples: dict[str, list[float]] = {}
    matched, counts = 0, (0, 0)
    if unusable:
        checks = [Check("object_table", None, float("nan"), 0.0, False, "; ".join(unusable))]
    else:
        checks, matched, samples = compare_objects(tables[0], tables[1], bands, cfg, sites)
        counts = (_primary_count(tables[0]), _primary_count(tables[1]))
    pairs = [
        (p, b, roots[0] / layout.coadd(tract, p, b), roots[1] / layout.coadd(tract, p, b))
        for p in patches
        for b in bands
    ]
    checks += compare_coadds(pairs, cfg, sites)
    return TractComparison(tract, sites, counts, matched, tuple(checks), samples)


def _primary_count(table: pa.Table) -> int:
    if "detect_isPrimary" not in table.column_names:
        return int(table.num_rows)
    return int(np.sum(np.asarray(table["detect_isPrimary"])))
