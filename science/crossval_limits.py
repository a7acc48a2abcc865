"""Checks of the cross-validation and their limits from the noise (see science.thresholds for the two
null hypotheses)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from scipy.stats import chi2, norm

from science.thresholds import ValidationSection


@dataclass(frozen=True)
class Check:
    quantity: str
    band: str | None
    value: float
    limit: float
    passed: bool
    detail: str = ""

    @property
    def name(self) -> str:
        """quantity[band], or the quantity when it is not per band: how the books and reports name it."""
        return f"{self.quantity}[{self.band}]" if self.band else self.quantity

    def describe(self, tract: int, sites: tuple[str, str]) -> str:
        verdict = "ok" if self.passed else "FAILED"
        return (
            f"tract {tract} {sites[0]} vs {sites[1]}: {self.name} = {self.value:.4g} "
            f"(limit {self.limit:.4g}) {verdict}" + (f": {self.detail}" if self.detail else "")
        )


class Limits:
    """The limit of each kind of statistic, in units of the noise, under the configured null."""

    def __init__(self, cfg: ValidationSection):
        self.cfg = cfg
        self.identical = cfg.mode == "identical"
        self.tol = cfg.identical_tolerance_sigma

    def rms(self, dof: float) -> float:
        """Largest rms pull (√(χ²/dof)) over ``dof`` degrees of freedom."""
        if self.identical:
            return self.tol
        if dof <= 0:
            return math.inf
        # the reported variances are a model: at a million pixels a 1 % error in them would be 10 σ
        return math.sqrt(
            float(chi2.isf(self.cfg.false_alarm_rate, dof)) / dof * (1 + self.cfg.error_model_tolerance)
        )

    def mean(self, n: float) -> float:
        """Largest |mean pull| of ``n`` pulls of unit variance (a mean offset)."""
        if self.identical:
            return self.tol
        return float(norm.isf(self.cfg.false_alarm_rate / 2)) / math.sqrt(max(n, 1.0))

    def largest(self, n: float) -> float:
        """Largest single |pull| among ``n`` (Bonferroni: the false-alarm rate is for all of them)."""
        if self.identical:
            return self.tol
        return float(norm.isf(self.cfg.false_alarm_rate / (2 * max(n, 1.0))))

    def fraction(self, independent_limit: float, identical_limit: float) -> float:
        return identical_limit if self.identical else independent_limit

    def describe(self) -> str:
        if self.identical:
            return f"identical inputs and code: tolerance {self.tol:g} sigma"
        return f"independent noise: false-alarm rate {self.cfg.false_alarm_rate:g} per check"


def finite_or_none(v: Any) -> Any:
    """A number as JSON and SQL can hold it: NaN and ±inf become None (null / NULL)."""
    return None if isinstance(v, float) and not math.isfinite(v) else v
