"""Thresholds of the overlap cross-validation: light on purpose (the campaign file validates them
without importing the comparison code and its array libraries).

Every check is made in units of the measured noise (pulls normalised by the reported errors, χ² per
degree of freedom), and its limit follows from one of two null hypotheses:

- ``identical`` (the default): the sites ran the same code on the same inputs, so a clean comparison
  is exactly zero and any difference is a fault. The limit is ``identical_tolerance_sigma`` of the
  noise, room for round-off between CPUs and maths libraries, never for a real difference.
- ``independent``: the outputs carry independent noise (different inputs, a different software
  version). Limits come from the distribution of each statistic under that noise: χ²/dof below the
  χ² quantile, a mean offset below z/√N, the largest pull below the Bonferroni-corrected quantile,
  each at ``false_alarm_rate`` per check.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ValidationSection(BaseModel):
    """Thresholds of the overlap cross-validation (per tract, per band where it applies)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    mode: Literal["identical", "independent"] = Field(
        default="identical", description="identical: same code and inputs at every site; independent: noise"
    )
    identical_tolerance_sigma: float = Field(
        default=1e-3, gt=0, le=0.1, description="round-off allowed in identical mode, in units of the noise"
    )
    false_alarm_rate: float = Field(
        default=1e-3, gt=0, lt=0.5, description="per check, independent mode: sets every limit from the noise"
    )
    error_model_tolerance: float = Field(
        default=0.02, ge=0, lt=1, description="independent mode: how far reported variances may be off"
    )
    match_radius_arcsec: float = Field(default=0.5, gt=0)
    min_match_fraction: float = Field(default=0.95, gt=0, le=1, description="independent mode (identical: 1)")
    match_min_snr: float = Field(
        default=10.0, gt=0, description="independent mode: the match fraction counts objects above this S/N"
    )
    max_flag_mismatch_fraction: float = Field(
        default=0.02, ge=0, le=1, description="independent mode (identical: 0)"
    )
    bias_min_snr: float = Field(default=50.0, gt=0, description="S/N of the objects the bias is measured on")
    max_psf_fwhm_difference: float = Field(
        default=0.02, gt=0, description="relative, independent mode (identical: the tolerance)"
    )
    photometric_floor_mmag: float = Field(
        default=5.0, ge=0, description="independent mode: per-visit zero-point error of each site"
    )
    astrometric_floor_mas: float = Field(
        default=10.0, ge=0, description="independent mode: per-visit astrometric calibration error, per axis"
    )
    max_wcs_offset_mas: float = Field(
        default=0.1, gt=0, description="coadd WCS: largest sky offset over the patch (both modes)"
    )
