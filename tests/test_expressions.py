"""Site expressions: Rucio's RSE expression subset, evaluated over the catalogue's sites."""

from __future__ import annotations

import pytest

from common.errors import InvalidInputError
from transfer.expressions import SiteAttributes, check, evaluate

SITES = [
    SiteAttributes("ncsa", {"site": "ncsa", "role": "lead", "country": "us", "tier": "1"}),
    SiteAttributes("slac", {"site": "slac", "role": "satellite", "country": "us"}),
    SiteAttributes("in2p3", {"site": "in2p3", "role": "satellite", "country": "fr", "tier": "1"}),
]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("site=in2p3", {"in2p3"}),
        ("in2p3", {"in2p3"}),
        ("role=satellite", {"slac", "in2p3"}),
        ("*", {"ncsa", "slac", "in2p3"}),
        ("*\\site=ncsa", {"slac", "in2p3"}),
        ("site=ncsa|site=in2p3", {"ncsa", "in2p3"}),
        ("country=us&tier=1", {"ncsa"}),
        ("role=satellite&country=us|site=ncsa", {"slac", "ncsa"}),  # left to right
        ("role=satellite&(country=us|site=ncsa)", {"slac"}),
        (" ( tier=1 ) \\ country=fr ", {"ncsa"}),
        ("site=cern", set()),
        ("nowhere", set()),
    ],
)
def test_evaluate(expr: str, expected: set[str]) -> None:
    assert evaluate(expr, SITES) == expected


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("", "empty"),
        ("site=", "unexpected end"),
        ("site=in2p3|", "unexpected end"),
        ("(site=ncsa", "expected ')'"),
        ("site=ncsa)", "unexpected ')' at position 10"),
        ("|site=ncsa", "expected a site name or KEY=VALUE, got '|' at position 1"),
        ("site=ncsa;rm", "unexpected character at position 10"),
        ("site==x", "expected a value after 'site='"),
    ],
)
def test_bad_expressions_say_where(expr: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check(expr)


def test_rucio_syntax() -> None:
    from transfer.expressions import to_rucio

    assert to_rucio("in2p3") == "site=in2p3"
    assert to_rucio("(ncsa | role=satellite) \\ country=fr") == "(site=ncsa|role=satellite)\\country=fr"
    assert to_rucio("*\\site=ncsa") == "*\\site=ncsa"
