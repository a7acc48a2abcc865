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


_GOOD_BANDS: set[str] = set()  # bands already checked (a big DAG checks the same few millions of times)


def _band(band: str) -> str:
    if type(band) is str and band in _GOOD_BANDS:
        return band
    if type(band) is not str or not BAND_RE.match(band):
        raise InvalidInputError(f"band {band!r}: must be 1-8 lower-case letters")
    _GOOD_BANDS.add(band)
    return band


def _int(name: str, value: int) -> int:
    if type(value) is not int or value < 0:  # exactly int: bool is an int subclass
        raise InvalidInputError(f"{name} {value!r}: must be a non-negative integer")
    return value


class Layout:
    """Paths of one release's datasets, relative to a site root."""

    def __init__(self, release: str) -> None:
        if not RELEASE_RE.match(release) or ".." in release:
            raise InvalidInputError(f"release name {release!r}: letters, digits, '_', '-', '.' only")
        self.release = release
        self.base = Path(release)
        self._patch_dirs: dict[tuple[str, int, int], str] = {}  # (kind, tract, patch) -> directory

    def manifest(self) -> Path:
        return self.base / "release.json"

    def truth(self) -> Path:
        return self.base / "truth" / "truth.parquet"

    def refcat(self) -> Path:
        return self.base / "refcat" / "refcat.parquet"

    # Each dataset path also comes as a ``str`` (``*_name``): a 1,000,000-job DAG builds millions of
    # them, and making a Path of each was a third of the time (issue 22).
    def refcat_name(self) -> str:
        return f"{self.release}/refcat/refcat.parquet"

    def raw_name(self, band: str, visit: int) -> str:
        return f"{self.release}/raw/{_band(band)}/visit{_int('visit', visit):06d}.fits"

    def calexp_name(self, band: str, visit: int) -> str:
        return f"{self.release}/calexp/{_band(band)}/visit{_int('visit', visit):06d}.fits"

    def src_name(self, band: str, visit: int) -> str:
        return f"{self.release}/src/{_band(band)}/visit{_int('visit', visit):06d}.parquet"

    def _patch_dir(self, kind: str, tract: int, patch: int) -> str:
        """``RELEASE/KIND/tractTTTT/patchPPP/``, made once per patch (a big DAG asks millions of times)."""
        key = (kind, tract, patch)
        d = self._patch_dirs.get(key) if type(tract) is int and type(patch) is int else None
        if d is None:
            d = f"{self.release}/{kind}/tract{_int('tract', tract):04d}/patch{_int('patch', patch):03d}/"
            self._patch_dirs[key] = d
        return d

    def warp_name(self, tract: int, patch: int, band: str, visit: int) -> str:
        return f"{self._patch_dir('warp', tract, patch)}{_band(band)}/visit{_int('visit', visit):06d}.fits"

    def coadd_name(self, tract: int, patch: int, band: str) -> str:
        return f"{self._patch_dir('coadd', tract, patch)}{_band(band)}.fits"

    def object_name(self, tract: int, patch: int) -> str:
        return (
            f"{self.release}/object/tract{_int('tract', tract):04d}/patch{_int('patch', patch):03d}.parquet"
        )

    def object_table_name(self, tract: int) -> str:
        return f"{self.release}/objectTable/tract{_int('tract', tract):04d}.parquet"

    def raw(self, band: str, visit: int) -> Path:
        return Path(self.raw_name(band, visit))

    def calexp(self, band: str, visit: int) -> Path:
        return Path(self.calexp_name(band, visit))

    def src(self, band: str, visit: int) -> Path:
        return Path(self.src_name(band, visit))

    def warp(self, tract: int, patch: int, band: str, visit: int) -> Path:
        return Path(self.warp_name(tract, patch, band, visit))

    def coadd(self, tract: int, patch: int, band: str) -> Path:
        return Path(self.coadd_name(tract, patch, band))

    def object(self, tract: int, patch: int) -> Path:
        return Path(self.object_name(tract, patch))

    def object_table(self, tract: int) -> Path:
        return Path(self.object_table_name(tract))

    def job_log(self, step: str, job: str, attempt: int, kind: str) -> Path:
        """Report (``json``) or log (``out``/``err``) of one attempt of a job, beside the outputs."""
        if not JOB_RE.match(job) or not JOB_RE.match(step) or kind not in ("json", "out", "err"):
            raise InvalidInputError(f"job log {step}/{job}.{kind}: invalid name")
        return Path(f"{self.release}/jobs/{step}/{job}.{_int('attempt', attempt)}.{kind}")

    def job_dir(self, step: str) -> Path:
        if not JOB_RE.match(step):
            raise InvalidInputError(f"step {step!r}: invalid name")
        return Path(f"{self.release}/jobs/{step}")
