"""The overlap region's cross-validation as campaigns run it, and the evidence it keeps.

Every pair of sites that processed an overlap tract is compared (the reference, the lead unless it
was failed over, first in each pair it is in). Consolidation then makes the reference's outputs the
release's, and its copies replace the other sites' own overlap outputs on their storage: before that,
each other site's own outputs are copied to ``RELEASE/crossval/SITE/NAME`` on its storage and
catalogued (dataset ``RELEASE:crossval.SITE``, replicated like every output, so each site keeps a
copy), so the comparison can be run again at any time (``drp campaign validate``) and the report
shows what was compared.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from bookkeeping import files as filedb
from bookkeeping.campaigns import ValidationRow
from bookkeeping.files import FileRow
from common.atomic import write_bytes_atomic
from common.errors import InvalidInputError
from common.permissions import Modes, make_dir
from common.temporaries import sweep, temp_path
from science.crossval import TractComparison, compare_tract
from science.crossval_limits import finite_or_none
from science.thresholds import ValidationSection
from sites.catalogue import SiteConfig
from transfer.checksum import adler32_file
from transfer.replication.base import ReplicationBackend

EVIDENCE = "crossval"
RECORD_VERSION = 1


def record_path(workdir: Path, campaign: str) -> Path:
    """The last validation's results, samples included: what the report shows (tables, JSON, plots)."""
    return workdir / "validation" / f"{campaign}.json"


def write_record(path: Path, results: Sequence[TractComparison], modes: Modes) -> None:
    make_dir(make_dir(path.parent.parent, modes) / path.parent.name, modes)
    body = {"version": RECORD_VERSION, "comparisons": [r.to_record() for r in results]}
    write_bytes_atomic(path, json.dumps(body, allow_nan=False).encode(), mode=modes.file)


def read_record(path: Path) -> list[TractComparison] | None:
    """The recorded comparisons, or None when the campaign was never validated."""
    try:
        body = json.loads(path.read_text())
        return [TractComparison.from_record(d) for d in body["comparisons"]]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InvalidInputError(
            f"{path}: unreadable validation record ({err}); run `drp campaign validate`"
        ) from err


def evidence_name(release: str, site: str, name: str) -> str:
    """Where a site keeps its own copy of the overlap output ``name`` (a release-relative path)."""
    return f"{release}/{EVIDENCE}/{site}/{name}"


def evidence_root(root: Path, release: str, site: str) -> Path:
    """The root under which a site's kept outputs have the release's layout."""
    return root / release / EVIDENCE / site


def comparison_root(site: SiteConfig, release: str, reference: str) -> Path:
    """Where a site's own overlap outputs are: its kept copies once consolidation has begun (the
    reference's copies then replace them), its storage root before."""
    from drp.processing import site_root

    root = site_root(site)
    if site.name != reference:
        kept = evidence_root(root, release, site.name)
        if kept.is_dir():
            return kept
    return root


def compare_overlap(
    sites: Sequence[SiteConfig],
    reference: SiteConfig,
    release: str,
    overlap: Sequence[int],
    cfg: ValidationSection,
) -> list[TractComparison]:
    """Every pair of ``sites`` on every overlap tract."""
    from drp.processing import site_root
    from science.pipeline.jobs import ReleaseContext

    ordered = [reference, *(s for s in sites if s.name != reference.name)]
    ctx = ReleaseContext(site_root(reference), release)
    out = []
    for tract in overlap:
        patches = [p.index for p in ctx.skymap.tracts[tract].patches]
        for first, other in itertools.combinations(ordered, 2):
            out.append(
                compare_tract(
                    (
                        comparison_root(first, release, reference.name),
                        comparison_root(other, release, reference.name),
                    ),
                    (first.name, other.name),
                    release,
                    tract,
                    patches,
                    ctx.bands,
                    cfg,
                )
            )
    return out


def report_rows(results: Sequence[TractComparison]) -> list[dict[str, Any]]:
    """The checks as the report's table and report.json show them (the bookkeeping query's shape)."""
    rows = [
        {
            "tract": r.tract,
            "sites": ",".join(r.sites),
            "quantity": c.name,
            "value": finite_or_none(c.value),
            "limit": finite_or_none(c.limit),
            "passed": c.passed,
            "detail": c.detail,
            "band": c.band,
        }
        for r in results
        for c in r.checks
    ]
    return sorted(rows, key=lambda v: (v["tract"], v["sites"], v["quantity"]))


def validation_rows(result: TractComparison) -> list[ValidationRow]:
    return [
        ValidationRow(
            tract=result.tract,
            sites=",".join(result.sites),
            quantity=c.name,
            value=finite_or_none(c.value),
            threshold=finite_or_none(c.limit),
            passed=c.passed,
            details=json.dumps({"detail": c.detail, "band": c.band}),
        )
        for c in result.checks
    ]


def keep_evidence(
    session: Session,
    replication: ReplicationBackend,
    campaign: str,
    release: str,
    site: str,
    root: Path,
    names: Sequence[str],
    everywhere: str,
    copies: int,
) -> int:
    """Copy the site's own overlap outputs to their evidence names and catalogue them at the site;
    idempotent (a kept file already catalogued is left alone). Returns how many were kept now."""
    kept_root = evidence_root(root, release, site)
    if kept_root.is_dir():
        sweep(kept_root)  # what a copy killed half-way left behind
    wanted = {evidence_name(release, site, n): n for n in names if (root / n).is_file()}
    known = filedb.known_names(session, list(wanted))
    rows = []
    for kept, name in sorted(wanted.items()):
        if kept in known:
            continue
        target = root / kept
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(target)
        shutil.copyfile(root / name, tmp)
        os.replace(tmp, target)
        adler, size = adler32_file(target)
        rows.append(FileRow(kept, size, adler))
    if rows:
        did = f"{release}:{EVIDENCE}.{site}"
        replication.register(session, did, rows, site, campaign=campaign)
        replication.add_rule(session, did, everywhere, copies, campaign=campaign)
    return len(rows)
