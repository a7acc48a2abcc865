"""Split policy: which site processes which tract.

Each site gets a quota of the (non-overlap) tracts from its share, by largest remainder, so every
site is within one tract of its share. Tracts are placed by rendezvous (highest-random-weight)
hashing with capacities: every (tract, site) pair has a deterministic pseudo-random score, and
pairs are taken best first while the site has room. Given the previous plan (to be stored in
bookkeeping), a new plan starts from it and moves only what must move: tracts of sites that left,
and the excess of sites whose quota shrank, each to the under-quota site that scores it best.
Adding a site therefore moves tracts only *to* that site. The configured overlap tracts are
assigned to every site.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from bookkeeping.plans import RuleSpec, SplitPlan
from common.errors import InvalidInputError

__all__ = ["RuleSpec", "SplitPlan", "plan_split", "replication_rules", "site_expression", "tract_dataset"]


def score(tract: int, site: str) -> int:
    """Deterministic 64-bit rendezvous score of a (tract, site) pair (stable across Python versions)."""
    digest = hashlib.blake2b(f"{site}\x00{tract}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def quotas(n: int, shares: Mapping[str, float]) -> dict[str, int]:
    """Largest-remainder quotas: each site within one tract of share × n; ties by site name."""
    total = sum(shares.values())
    if n < 0 or not shares or total <= 0 or any(s < 0 for s in shares.values()):
        raise InvalidInputError(f"split: shares must be non-negative with a positive sum, got {dict(shares)}")
    exact = {site: n * s / total for site, s in shares.items()}
    q = {site: int(v) for site, v in exact.items()}
    left = n - sum(q.values())
    for site in sorted(exact, key=lambda s: (-(exact[s] - q[s]), s))[:left]:
        q[site] += 1
    return q


def plan_split(
    tracts: Iterable[int],
    shares: Mapping[str, float],
    overlap: Iterable[int] = (),
    previous: SplitPlan | None = None,
) -> SplitPlan:
    all_tracts = sorted(set(tracts))
    overlap_set = frozenset(overlap)
    unknown = overlap_set - set(all_tracts)
    if unknown:
        raise InvalidInputError(f"split: overlap tracts {sorted(unknown)} are not in the sky map")
    split_tracts = [t for t in all_tracts if t not in overlap_set]
    quota = quotas(len(split_tracts), shares)
    assignment: dict[int, str] = {}
    load = dict.fromkeys(shares, 0)
    if previous is not None:
        # Keep what may stay: a site keeps its previous tracts up to its quota, best-scored first.
        kept: dict[str, list[int]] = {s: [] for s in shares}
        for t in split_tracts:
            site = previous.assignment.get(t)
            if site in kept:
                kept[site].append(t)
        for site, ts in kept.items():
            for t in sorted(ts, key=lambda t: -score(t, site))[: quota[site]]:
                assignment[t] = site
                load[site] += 1
    pairs = sorted(
        ((score(t, s), t, s) for t in split_tracts if t not in assignment for s in shares if quota[s] > 0),
        reverse=True,
    )
    for _, t, s in pairs:
        if t not in assignment and load[s] < quota[s]:
            assignment[t] = s
            load[s] += 1
    return SplitPlan(dict(sorted(assignment.items())), overlap_set, tuple(shares))


# The release's metadata files (manifest, reference catalogue, truth). Not plain "meta": Rucio's REST
# API reads /dids/SCOPE/meta as the metadata of the scope, so a dataset of that name cannot be made.
META_DATASET = "meta.release"


def tract_dataset(tract: int) -> str:
    """Name (in the release's scope) of the dataset holding a tract's processing inputs."""
    return f"inputs.tract{tract:04d}"


def site_expression(sites: Iterable[str]) -> str:
    """A Rucio RSE expression selecting exactly these sites, e.g. ``site=in2p3|site=ncsa``."""
    return "|".join(f"site={s}" for s in sorted(sites))


def replication_rules(plan: SplitPlan) -> list[RuleSpec]:
    """The plan as rules: each tract's inputs go to the site(s) that process it (all, for overlap)."""
    rules = []
    for tract in sorted(set(plan.assignment) | plan.overlap):
        sites = plan.sites if tract in plan.overlap else (plan.assignment[tract],)
        rules.append(RuleSpec(tract_dataset(tract), site_expression(sites), len(sites), tract))
    return rules
