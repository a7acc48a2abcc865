"""``campaign.toml``: what an operator defines for one processing of one release.

Example::

    [campaign]
    name = "dr1-2026"
    release = "dr1"                 # the release directory under the lead site's storage root
    sites = "sites.toml"            # relative to this file
    workdir = "drp-work"            # workflows and back-end files; relative to this file

    [split]
    overlap = [0, 5]                # tracts processed at every site, then cross-validated

    [validation]                    # overlap cross-validation (science/thresholds.py)
    mode = "identical"              # same code, same inputs: a clean comparison is exactly zero
    identical_tolerance_sigma = 0.001

    [ticks]                         # how much one `drp campaign tick` may do
    transfer_seconds = 60

Relative paths are resolved against the file's directory. Loaded once, validated, passed explicitly;
every error names the file, the key and the reason.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from common.configfile import config_error, read_toml
from science.thresholds import ValidationSection

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"


class CampaignSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=NAME_PATTERN)
    release: str = Field(pattern=NAME_PATTERN)
    sites: Path = Path("sites.toml")
    workdir: Path = Path("drp-work")


class SplitSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    overlap: tuple[int, ...] = ()

    @field_validator("overlap")
    @classmethod
    def _distinct(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(t < 0 for t in v):
            raise ValueError("tract ids are non-negative")
        if len(set(v)) != len(v):
            raise ValueError("a tract is listed twice")
        return tuple(sorted(v))


class TickSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    transfer_seconds: float = Field(default=60.0, gt=0, description="transfer work per tick")
    poll_seconds: float = Field(
        default=5.0, gt=0, description="`campaign run`: pause between ticks that wait"
    )
    backoff_max_seconds: float = Field(
        default=600.0, gt=0, description="longest pause after ticks that found a service away"
    )


class CampaignConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    campaign: CampaignSection
    split: SplitSection = SplitSection()
    validation: ValidationSection = ValidationSection()
    ticks: TickSection = TickSection()
    source: Path = Field(default=Path("campaign.toml"), exclude=True)

    @property
    def name(self) -> str:
        return self.campaign.name

    @property
    def sites_path(self) -> Path:
        return self._resolve(self.campaign.sites)

    @property
    def workdir(self) -> Path:
        return self._resolve(self.campaign.workdir)

    def _resolve(self, p: Path) -> Path:
        return p if p.is_absolute() else (self.source.parent / p).resolve()


def parse_campaign(data: dict[str, object], source: Path) -> CampaignConfig:
    try:
        return CampaignConfig.model_validate({**data, "source": source})
    except ValidationError as err:
        raise config_error(str(source), err) from err


def load_campaign(path: Path) -> CampaignConfig:
    """Read and validate a campaign file."""
    return parse_campaign(read_toml(path, "pass the path of a campaign.toml"), path)
