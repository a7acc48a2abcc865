"""How honest each visit's calibration is: its zero point against the truth it was rendered with, in
units of its own reported uncertainty (pulls near N(0, 1) mean the errors can be trusted), and the
repeatability of bright stars between visits of a band (PA1-like: rms of Δmag / √2)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from astropy.io import fits

REPEATABILITY_MAX_ERR = 0.01  # mag: stars at S/N above ~100 in both visits


@dataclass(frozen=True)
class VisitCalibration:
    visit: int
    band: str
    zp_residual_mmag: float  # measured - true zero point
    zp_err_mmag: float  # as the calibrate step reported it
    aperture_correction_mmag: float
    n_stars: int

    @property
    def pull(self) -> float:
        return self.zp_residual_mmag / self.zp_err_mmag if self.zp_err_mmag > 0 else float("nan")


@dataclass(frozen=True)
class CalibrationReport:
    visits: tuple[VisitCalibration, ...]
    repeatability_mmag: dict[str, float]  # band -> PA1-like rms
    repeatability_stars: dict[str, int]

    @property
    def zp_residual_rms_mmag(self) -> float:
        r = [v.zp_residual_mmag for v in self.visits]
        return math.sqrt(float(np.mean(np.square(r)))) if r else float("nan")

    @property
    def zp_pull_rms(self) -> float:
        p = [v.pull for v in self.visits if math.isfinite(v.pull)]
        return math.sqrt(float(np.mean(np.square(p)))) if p else float("nan")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for row, v in zip(d["visits"], self.visits, strict=True):
            row["pull"] = v.pull
        d["zp_residual_rms_mmag"] = self.zp_residual_rms_mmag
        d["zp_pull_rms"] = self.zp_pull_rms
        return d


def calibration_report(root: Path, release: str | None) -> CalibrationReport | None:
    """From the calexp headers and src tables under ``root`` (the visits calibrated there), or None
    when there are none."""
    from science.pipeline.jobs import ReleaseContext

    ctx = ReleaseContext.discover(root, release)
    rows: list[VisitCalibration] = []
    mags: dict[str, list[dict[int, float]]] = {}
    for vid in sorted(ctx.visits):
        v = ctx.visits[vid]
        path = root / ctx.layout.calexp(v["band"], vid)
        if not path.is_file():
            continue
        h = fits.getheader(path, 0)
        rows.append(
            VisitCalibration(
                vid,
                v["band"],
                (float(h["PHOTOZP"]) - float(v["zero_point"])) * 1000,
                float(h["PHOTOZPE"]) * 1000,
                float(h.get("PHOTOAPC", 0.0)) * 1000,
                int(h.get("PHOTOZPN", 0)),
            )
        )
        src = root / ctx.layout.src(v["band"], vid)
        if src.is_file():
            t = pq.read_table(src, columns=["ref_id", "mag", "mag_err", "flags"])
            ref, mag, err, flags = (np.asarray(t[c]) for c in ("ref_id", "mag", "mag_err", "flags"))
            good = (ref >= 0) & np.isfinite(mag) & (err < REPEATABILITY_MAX_ERR) & (flags == 0)
            mags.setdefault(v["band"], []).append(
                dict(zip(ref[good].tolist(), mag[good].tolist(), strict=True))
            )
    if not rows:
        return None
    pa1: dict[str, float] = {}
    n: dict[str, int] = {}
    for band, visits in mags.items():
        diffs = [
            a[k] - b[k] for i, a in enumerate(visits) for b in visits[i + 1 :] for k in a.keys() & b.keys()
        ]
        if diffs:
            pa1[band] = float(np.std(diffs) / math.sqrt(2) * 1000)  # the mean is a zero-point difference
            n[band] = len(diffs)
    return CalibrationReport(tuple(rows), pa1, n)
