"""What resampling with the warp's spline does to white noise: it smooths it (less variance per
pixel than the variance plane, which carries the input's) and correlates neighbouring pixels. The
cross-validation needs both to judge a coadd difference in units of its real noise."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage


@dataclass(frozen=True)
class ResamplingNoise:
    """What resampling white noise of unit variance does to it, averaged over sub-pixel phases:
    ``variance`` per output pixel (< 1: the kernel smooths), ``sum_rho`` Σ of the correlation
    coefficients over all lags (a mean of N pixels has variance ``variance * sum_rho / N``) and
    ``sum_rho2`` Σρ² (a mean of N squared pulls has variance ``2 * sum_rho2 / N``)."""

    variance: float
    sum_rho: float
    sum_rho2: float


@lru_cache(maxsize=8)
def _kernel_table(order: int, phases: int) -> NDArray[np.float64]:
    """Per sub-pixel phase of the separable spline: 1-D variance Σk², Σρ and Σρ². Exact: the kernel at
    a phase is the response to an impulse. Rows: variance, Σρ, Σρ²."""
    n, mid = 64, 32
    impulse = np.zeros(n)
    impulse[mid] = 1.0
    table = np.zeros((3, phases))
    for i, phase in enumerate(np.arange(phases) / phases):
        out = ndimage.map_coordinates(impulse, [np.arange(n) + phase], order=order, mode="constant")
        k = out[np.abs(out) > 1e-12]  # the weights of the input pixel in each output pixel
        r = float(np.sum(k * k))
        rho = np.correlate(k, k, mode="full") / r
        table[:, i] = (r, float(np.sum(rho)), float(np.sum(rho * rho)))
    return table


def resampling_variance(order: int, fx: NDArray[np.float64], fy: NDArray[np.float64]) -> NDArray[np.float64]:
    """Variance per output pixel of unit white noise resampled at sub-pixel phases (fx, fy)."""
    r = _kernel_table(order, 64)[0]
    grid = np.arange(65) / 64
    table = np.append(r, r[0])  # periodic in the phase
    return np.interp(np.mod(fx, 1.0), grid, table) * np.interp(np.mod(fy, 1.0), grid, table)


@lru_cache(maxsize=8)
def resampling_noise(order: int) -> ResamplingNoise:
    """The 2-D figures averaged over independent x and y phases (products of the 1-D means)."""
    var, s1, s2 = _kernel_table(order, 64)
    return ResamplingNoise(float(np.mean(var)) ** 2, float(np.mean(s1)) ** 2, float(np.mean(s2)) ** 2)
