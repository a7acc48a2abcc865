"""Where every dataset of a release lives under a site root (one convention for all sites and steps).

All paths are relative to the site root and built from validated integers and band names only, so
they can never escape the root.
"""

from __future__ import annotations

import re
from pathlib import Path

from common.errors import InvalidInputError

BAND_RE = re.compile(r"^[a-z]{1,8}$")
JOB_RE = re.compile(r"^[a-z][a-z0-9_]{0,127}$")
RELEASE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _band(band: str) -> str:
    if not BAND_RE.match(band):
        raise InvalidInputError(f"band {band!r}: must be 1-8 lower-case letters")
    return band


def _int(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidInputError(f"{name} {value!r}: must be a non-negative integer")
    return value


class Layout:
    """Paths of one release's datasets, relative to a site root."""

    def __init__(self, release: str) -> None:
        if not RELEASE_RE.match(release) or ".." in release:
            raise InvalidInputError(f"release name {release!r}: letters, digits, '_', '-', '.' only")
        self.release = release
        self.base = Path(release)

    def manifest(self) -> Path:
        return self.base / "release.json"

    def truth(self) -> Path:
        return self.base / "truth" / "truth.parquet"

    def refcat(self) -> Path:
        return self.base / "refcat" / "refcat.parquet"

    def raw(self, band: str, visit: int) -> Path:
        return Path(f"{self.release}/raw/{_band(band)}/visit{_int('visit', visit):06d}.fits")

    def calexp(self, band: str, visit: int) -> Path:
        return Path(f"{self.release}/calexp/{_band(band)}/visit{_int('visit', visit):06d}.fits")

    def src(self, band: str, visit: int) -> Path:
        return Path(f"{self.release}/src/{_band(band)}/visit{_int('visit', visit):06d}.parquet")

    def warp(self, tract: int, patch: int, band: str, visit: int) -> Path:
        return Path(
            f"{self.release}/warp/tract{_int('tract', tract):04d}/patch{_int('patch', patch):03d}/"
            f"{_band(band)}/visit{_int('visit', visit):06d}.fits"
        )

    def coadd(self, tract: int, patch: int, band: str) -> Path:
        return Path(
            f"{self.release}/coadd/tract{_int('tract', tract):04d}/patch{_int('patch', patch):03d}/"
            f"{_band(band)}.fits"
        )

    def object(self, tract: int, patch: int) -> Path:
        return Path(
            f"{self.release}/object/tract{_int('tract', tract):04d}/patch{_int('patch', patch):03d}.parquet"
        )

    def object_table(self, tract: int) -> Path:
        return Path(f"{self.release}/objectTable/tract{_int('tract', tract):04d}.parquet")

    def job_log(self, step: str, job: str, attempt: int, kind: str) -> Path:
        """Report (``json``) or log (``out``/``err``) of one attempt of a job, beside the outputs."""
        if not JOB_RE.match(job) or not JOB_RE.match(step) or kind not in ("json", "out", "err"):
            raise InvalidInputError(f"job log {step}/{job}.{kind}: invalid name")
        return Path(f"{self.release}/jobs/{step}/{job}.{_int('attempt', attempt)}.{kind}")

    def job_dir(self, step: str) -> Path:
        if not JOB_RE.match(step):
            raise InvalidInputError(f"step {step!r}: invalid name")
        return Path(f"{self.release}/jobs/{step}")
