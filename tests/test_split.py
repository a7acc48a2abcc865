"""Split policy: exact shares, determinism, and stability when sites or shares change."""

from __future__ import annotations

from collections import Counter

import pytest

from common.errors import InvalidInputError
from drp.split import plan_split, quotas

TRACTS = range(1000)


def test_shares_are_respected_within_one_tract() -> None:
    for shares in ({"ncsa": 0.5, "in2p3": 0.5}, {"a": 0.7, "b": 0.2, "c": 0.1}, {"a": 1, "b": 1, "c": 1}):
        plan = plan_split(TRACTS, shares, overlap=[0, 1, 2])
        counts = Counter(plan.assignment.values())
        total = sum(shares.values())
        for site, share in shares.items():
            assert abs(counts[site] - 997 * share / total) <= 1, (shares, counts)
        assert set(plan.assignment) == set(range(3, 1000))
        for site in shares:
            assert {0, 1, 2} <= plan.tracts_of(site)


def test_plan_is_deterministic_and_spatially_mixed() -> None:
    a = plan_split(TRACTS, {"ncsa": 0.5, "in2p3": 0.5})
    b = plan_split(reversed(TRACTS), {"in2p3": 0.5, "ncsa": 0.5})
    assert a.assignment == b.assignment
    # Not a contiguous cut: both sites hold tracts in every tenth of the tract range.
    for k in range(10):
        assert len({a.assignment[t] for t in range(100 * k, 100 * k + 100)}) == 2


def test_adding_a_site_moves_tracts_only_to_it() -> None:
    two = plan_split(TRACTS, {"ncsa": 0.5, "in2p3": 0.5})
    three = plan_split(TRACTS, {"ncsa": 0.4, "in2p3": 0.4, "ral": 0.2}, previous=two)
    moved = three.moved_from(two)
    assert moved and all(new == "ral" for _, new in moved.values())
    assert len(moved) == Counter(three.assignment.values())["ral"] == 200


def test_changing_shares_moves_only_the_excess() -> None:
    before = plan_split(TRACTS, {"ncsa": 0.5, "in2p3": 0.5})
    after = plan_split(TRACTS, {"ncsa": 0.6, "in2p3": 0.4}, previous=before)
    moved = after.moved_from(before)
    assert len(moved) == 100 and all(m == ("in2p3", "ncsa") for m in moved.values())
    # Re-planning with nothing changed moves nothing.
    assert plan_split(TRACTS, {"ncsa": 0.6, "in2p3": 0.4}, previous=after).assignment == after.assignment


def test_a_site_leaving_hands_its_tracts_to_the_others() -> None:
    three = plan_split(TRACTS, {"a": 1, "b": 1, "c": 1})
    two = plan_split(TRACTS, {"a": 1, "b": 1}, previous=three)
    moved = two.moved_from(three)
    assert {old for old, _ in moved.values()} == {"c"}
    assert len(moved) == Counter(three.assignment.values())["c"]


def test_bad_shares_and_overlap_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="shares must be non-negative"):
        quotas(10, {"a": -1.0, "b": 2.0})
    with pytest.raises(InvalidInputError, match=r"overlap tracts \[5000\]"):
        plan_split(TRACTS, {"a": 1.0}, overlap=[5000])
