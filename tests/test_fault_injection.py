"""The cross-validation's fault suite on real pipeline outputs: each kind of fault, at the smallest size
the validation is designed to catch (the thresholds bench/crossval.py measures), fails a named check;
clean comparisons of releases with other seeds pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from science.pipeline.jobs import ReleaseContext
from science.thresholds import ValidationSection
from tests.fault_injection import FAULTS, TINY, compare, copy_site, failed_checks, inject, process

RELEASE = TINY

# Identical mode (same code, same inputs): the smallest faults caught, as bench/crossval.py measured
# them on this release (each one a ladder step above the first size that passes).
THRESHOLDS = {
    "zero_point": 1e-5,  # fractional flux: 0.01 mmag
    "shift": 0.03,  # mas
    "wcs_shift": 0.1,  # mas
    "psf_width": 1e-3,  # fractional
    "added_noise": 3e-4,  # sigma per pixel
    "corrupted_pixels": 1,
    "dropped_visit": 1,
    "missing_band": 1,
    "missing_patch": 1,
}
# ... and below those, round-off-sized changes that must pass (the tolerance is not zero)
ROUND_OFF = {"zero_point": 1e-7, "shift": 1e-4, "psf_width": 1e-5, "added_noise": 1e-6}


@pytest.fixture(scope="module")
def site_a(tmp_path_factory: pytest.TempPathFactory) -> ReleaseContext:
    return process(tmp_path_factory.mktemp("a"), RELEASE)


def _with_fault(site_a: ReleaseContext, tmp_path: Path, fault: str, size: float) -> Path:
    b = copy_site(site_a.root, tmp_path / "b")
    inject(ReleaseContext(b, RELEASE.name), fault, size, seed=3)
    return b


@pytest.mark.parametrize("fault", sorted(THRESHOLDS))
def test_fault_at_its_threshold_fails_by_name(site_a: ReleaseContext, tmp_path: Path, fault: str) -> None:
    b = _with_fault(site_a, tmp_path, fault, THRESHOLDS[fault])
    result = compare(site_a, b, ValidationSection())
    failed = failed_checks(result)
    assert FAULTS[fault].catches & failed, (fault, failed)
    assert all("FAILED" in line and "tract 0 a vs b" in line for line in result.failures())


@pytest.mark.parametrize("fault", sorted(ROUND_OFF))
def test_round_off_passes(site_a: ReleaseContext, tmp_path: Path, fault: str) -> None:
    b = _with_fault(site_a, tmp_path, fault, ROUND_OFF[fault])
    assert failed_checks(compare(site_a, b, ValidationSection())) == set()


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_clean_release_with_another_seed_passes(tmp_path: Path, seed: int) -> None:
    """Another sky and other noise, processed at two sites from the same inputs: nothing fails."""
    a = process(tmp_path / "a", RELEASE.model_copy(update={"seed": seed}))
    b = copy_site(a.root, tmp_path / "b")
    result = compare(a, b, ValidationSection())
    assert result.passed, result.failures()
    assert {c.quantity for c in result.checks} >= {
        "position_offset",
        "flux_offset",
        "coadd_pull_rms",
        "coadd_psf",
    }


def test_every_fault_in_the_suite_has_a_threshold() -> None:
    assert set(THRESHOLDS) == set(FAULTS)
