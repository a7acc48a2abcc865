"""``drp dr status``: verified copies per site and dataset type, and the files lacking a second copy."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.orm import Session

from bookkeeping import audits
from bookkeeping.sites import availability, site_names
from common.errors import EXIT_FAILED, EXIT_OK

from .common import EXAMPLES, dataset_type


@dataclass(frozen=True)
class TypeCoverage:
    scope: str
    type: str
    files: int
    bytes: int
    available: dict[str, int]  # site → files with a verified replica there
    available_bytes: dict[str, int]


@dataclass(frozen=True)
class DrStatus:
    sites: dict[str, bool]  # site → available (not failed over)
    types: list[TypeCoverage]
    files: int
    single_copy: int  # files with exactly one verified replica
    no_copy: int  # files with none
    single_copy_at: dict[str, int]  # site → files whose only verified replica is there
    examples: list[tuple[str, str]]  # (file, "only at SITE" | "no verified copy")
    # every file with no verified copy and a replica declared BAD/LOST: (file, "SITE STATE (reason); …")
    unrecoverable: list[tuple[str, str]]

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.single_copy or self.no_copy or self.unrecoverable else EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "exit_code": self.exit_code}


def status(session: Session, *, scope: str | None = None) -> DrStatus:
    names = site_names(session)
    per: dict[tuple[str, str], list[Any]] = {}
    for sc, name, n, b in audits.dataset_sizes(session, scope):
        row = per.setdefault((sc, dataset_type(name)), [0, 0, Counter(), Counter()])
        row[0] += n
        row[1] += b
    for sc, name, site, n, b in audits.available_by_dataset(session, scope):
        row = per.setdefault((sc, dataset_type(name)), [0, 0, Counter(), Counter()])
        row[2][names[site]] += n
        row[3][names[site]] += b
    types = [
        TypeCoverage(sc, t, v[0], v[1], dict(sorted(v[2].items())), dict(sorted(v[3].items())))
        for (sc, t), v in sorted(per.items())
    ]
    single: Counter[str] = Counter()
    no_copy = 0
    examples: list[tuple[str, str]] = []
    for fname, n, holder in audits.under_replicated(session, scope):
        if n == 0 or holder is None:
            no_copy += 1
            where = "no verified copy"
        else:
            single[names[holder]] += 1
            where = f"only at {names[holder]}"
        if len(examples) < EXAMPLES:
            examples.append((fname, where))
    return DrStatus(
        availability(session),
        types,
        sum(t.files for t in types),
        sum(single.values()),
        no_copy,
        dict(sorted(single.items())),
        examples,
        [
            (fname, "; ".join(f"{names[s]} {st.name} ({why or 'no reason recorded'})" for s, st, why in reps))
            for fname, reps in audits.unrecoverable(session, scope)
        ],
    )
