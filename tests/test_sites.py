"""Site catalogue: valid files load; every bad file names the file, the key and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import ConfigError
from sites.catalogue import load_catalogue

GOOD = """\
[[site]]
name = "ncsa"
role = "lead"
share = 0.35
storage = "file:///data/ncsa"
[site.compute]
backend = "htcondor"
schedd = "sched1.ncsa"

[[site]]
name = "ral"
role = "satellite"
share = 0.25
storage = "root://xrootd.ral.example:1094//lsst"

[[site]]
name = "in2p3"
role = "satellite"
share = 0.40
storage = "davs://webdav.in2p3.example/lsst"
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "sites.toml"
    p.write_text(text)
    return p


def test_good_catalogue_loads_with_backend_settings(tmp_path: Path) -> None:
    cat = load_catalogue(_write(tmp_path, GOOD))
    assert [s.name for s in cat.sites] == ["ncsa", "ral", "in2p3"]
    assert cat.lead.name == "ncsa"
    assert cat.get("ncsa").compute.backend == "htcondor"
    assert cat.get("ncsa").compute.settings == {"schedd": "sched1.ncsa"}
    assert cat.get("ral").compute.backend == "local"
    assert cat.get("ncsa").storage_path == Path("/data/ncsa")
    assert cat.get("in2p3").storage_path is None


def test_default_path_comes_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRP_SITES", str(_write(tmp_path, GOOD)))
    assert len(load_catalogue().sites) == 3


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("[[site]\nname = 'x'\n", None, "invalid TOML"),
        ("name = 'x'\n", "site", "required key is missing"),
        ("site = []\n", "site", "at least 1"),
        (GOOD.replace("share = 0.35\n", 'share = 0.35\ncolour = "red"\n'), "site[1].colour", "unknown key"),
        (GOOD + "\n[archive]\nbackend = 'x'\n", "archive", "unknown key"),
        (GOOD + "\n[transfer]\nretry = 3\n", "transfer.retry", "unknown key"),
        (
            GOOD + "\n[[transfer.link]]\nsource = 'ncsa'\ndest = 'nowhere'\nmover = 'local'\n",
            "transfer.link[1].dest",
            "no site named 'nowhere'",
        ),
        (
            GOOD.replace("share = 0.35\n", "share = 0.35\nattributes = { role = 'x' }\n"),
            "site[1].attributes",
            "bad attribute name 'role'",
        ),
        (GOOD.replace("share = 0.35", "share = -0.1"), "site[1].share", "greater than or equal to 0"),
        (GOOD.replace("share = 0.35", "share = 1.5"), "site[1].share", "less than or equal to 1"),
        (
            GOOD.replace('name = "ral"', 'name = "ncsa"'),
            "site[2].name",
            "duplicate site name 'ncsa' (also site[1])",
        ),
        (GOOD.replace("share = 0.40", "share = 0.30"), "site.share", "add up to 1 (they add up to 0.9)"),
        (
            GOOD.replace('role = "satellite"\nshare = 0.25', 'role = "lead"\nshare = 0.25'),
            "site.role",
            "exactly one",
        ),
        (GOOD.replace('role = "lead"', 'role = "boss"'), "site[1].role", "'lead' or 'satellite'"),
        (GOOD.replace("file:///data/ncsa", "s3://bucket"), "site[1].storage", "scheme must be one of"),
        (GOOD.replace("file:///data/ncsa", "file://data/ncsa"), "site[1].storage", "absolute path"),
        (GOOD.replace('name = "ncsa"', 'name = "../etc"'), "site[1].name", "should match pattern"),
        (GOOD.replace("share = 0.35", 'share = "half"'), "site[1].share", "valid number"),
    ],
)
def test_bad_catalogue_names_file_key_and_reason(
    tmp_path: Path, text: str, key: str | None, reason: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_catalogue(path)
    assert err.value.source == str(path)
    assert err.value.key == key
    assert reason in err.value.reason
    assert err.value.exit_code == 2
    assert str(err.value).startswith(f"{path}: ")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_catalogue(tmp_path / "nope.toml")


def test_not_utf8(tmp_path: Path) -> None:
    p = tmp_path / "sites.toml"
    p.write_bytes(b"\xff\xfe[[site]]")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_catalogue(p)


def test_link_movers_most_specific_first_then_by_scheme(tmp_path: Path) -> None:
    text = GOOD + (
        "\n[[transfer.link]]\nsource = '*'\ndest = 'in2p3'\nmover = 'fts3'\nendpoint = 'https://fts:8446'\n"
        "\n[[transfer.link]]\nsource = 'ral'\ndest = 'in2p3'\nmover = 'xrootd'\nmax_active = 4\n"
    )
    cat = load_catalogue(_write(tmp_path, text))
    assert cat.link("ncsa", "in2p3").mover == "fts3"
    assert cat.link("ncsa", "in2p3").settings == {"endpoint": "https://fts:8446"}
    exact = cat.link("ral", "in2p3")
    assert (exact.mover, exact.max_active) == ("xrootd", 4)
    assert cat.link("ral", "ral").mover == "xrootd"  # root → root by default
    with pytest.raises(ConfigError, match=r"no mover for ncsa \(file://\) → ral \(root://\)"):
        cat.link("ncsa", "ral")
    assert cat.get("ncsa").all_attributes == {"site": "ncsa", "role": "lead"}
