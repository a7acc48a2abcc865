"""Thresholds of the overlap cross-validation: light on purpose (the campaign file validates them
without importing the comparison code and its array libraries)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ValidationSection(BaseModel):
    """Thresholds of the overlap cross-validation (per tract, per band where it applies)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    match_radius_arcsec: float = Field(default=0.5, gt=0)
    min_match_fraction: float = Field(default=0.95, gt=0, le=1)
    max_position_rms_arcsec: float = Field(default=0.05, gt=0)
    max_flux_pull_rms: float = Field(default=1.5, gt=0, description="rms of (f1 - f2) / sqrt(e1² + e2²)")
    max_flux_pull_median: float = Field(default=0.3, gt=0, description="|median| of the same: a bias")
    max_flux_bias_mmag: float = Field(default=5.0, gt=0, description="|median| Δmag of bright objects")
    bias_min_snr: float = Field(default=50.0, gt=0, description="S/N of the objects the bias is measured on")
    max_flag_mismatch_fraction: float = Field(default=0.02, ge=0, le=1)
    max_coadd_chi2: float = Field(default=1.5, gt=0, description="mean (c1 - c2)² / (v1 + v2) per pixel")
