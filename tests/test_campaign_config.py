"""campaign.toml: a good file loads with paths resolved beside it; every bad one names file, key, reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import ConfigError
from drp.campaign_config import load_campaign

GOOD = """\
[campaign]
name = "dr1-2026"
release = "dr1"
sites = "conf/sites.toml"

[split]
overlap = [5, 0]

[validation]
min_match_fraction = 0.9
"""


def test_good_file(tmp_path: Path) -> None:
    p = tmp_path / "campaign.toml"
    p.write_text(GOOD)
    cfg = load_campaign(p)
    assert cfg.name == "dr1-2026" and cfg.campaign.release == "dr1"
    assert cfg.split.overlap == (0, 5)
    assert cfg.sites_path == (tmp_path / "conf/sites.toml").resolve()
    assert cfg.workdir == (tmp_path / "drp-work").resolve()
    assert cfg.validation.min_match_fraction == 0.9 and cfg.validation.mode == "identical"


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("[campaign\n", None, "invalid TOML"),
        ("[split]\noverlap = []\n", "campaign", "required key is missing"),
        (GOOD.replace('name = "dr1-2026"', 'name = "../x"'), "campaign.name", "should match pattern"),
        (GOOD.replace("overlap = [5, 0]", "overlap = [5, 5]"), "split.overlap", "listed twice"),
        (GOOD + "\n[ticks]\ntransfer_seconds = 0\n", "ticks.transfer_seconds", "greater than 0 (got 0)"),
        (GOOD.replace("min_match_fraction = 0.9", "min_match = 0.9"), "validation.min_match", "unknown key"),
        (GOOD + 'mode = "loose"\n', "validation.mode", "'identical' or 'independent'"),
    ],
)
def test_bad_files_name_file_key_and_reason(tmp_path: Path, text: str, key: str | None, reason: str) -> None:
    p = tmp_path / "campaign.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_campaign(p)
    assert info.value.source == str(p) and info.value.key == key and reason in info.value.reason


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_campaign(tmp_path / "nope.toml")
