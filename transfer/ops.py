"""Data-management operations behind ``drp data``, ``drp rules`` and ``drp transfer``.

Each function takes what it needs explicitly (database, catalogue, back-end) and returns typed rows,
so the CLI only parses options and prints.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from bookkeeping.database import Database
from bookkeeping.files import FileRow, RegisterResult, check_name
from bookkeeping.transfers import TransferInfo, list_transfers
from common.errors import InvalidInputError, NotFoundError
from instrumentation.progress import ProgressFactory, no_progress
from sites.catalogue import SiteCatalogue

from .checksum import adler32_file
from .replication.base import ReplicationBackend, split_did


def scan(root: Path, subdir: str, progress: ProgressFactory = no_progress) -> list[FileRow]:
    """Files under ``root/subdir`` as catalogue rows (logical names relative to ``root``), with
    adler32 and size read from storage. Hidden files (temporary copies) are skipped."""
    if subdir not in ("", "."):
        check_name(subdir)
    base = (root / subdir).resolve()
    if not base.is_relative_to(root.resolve()):
        raise InvalidInputError(f"{subdir!r} is outside the site root {root}")
    if not base.is_dir():
        raise NotFoundError(f"no directory {base} to register")
    paths: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        paths.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith("."))
    rows = []
    with progress(f"checksumming {len(paths)} files", len(paths)) as advance:
        for p in paths:
            adler, size = adler32_file(p)
            rows.append(FileRow(p.relative_to(root.resolve()).as_posix(), size, adler))
            advance(1)
    return rows


def register_from_storage(
    db: Database,
    catalogue: SiteCatalogue,
    backend: ReplicationBackend,
    site: str,
    dataset: str,
    subdir: str,
    *,
    campaign: str | None = None,
    progress: ProgressFactory = no_progress,
) -> RegisterResult:
    """Register the files under ``subdir`` of a posix site as dataset ``scope:name``, AVAILABLE there."""
    split_did(dataset)
    root = catalogue.get(site).storage_path
    if root is None:
        raise InvalidInputError(f"site {site}: registering from storage needs a file:// site")
    rows = scan(root, subdir, progress)
    if not rows:
        raise InvalidInputError(f"no files under {root / subdir}")
    with db.session() as session:
        return backend.register(session, dataset, rows, site, campaign=campaign)


def iter_replicas(
    session: Session, backend: ReplicationBackend, dataset: str, *, site: str | None = None
) -> Iterator[tuple[str, str, str, int, str]]:
    for r in backend.replicas(session, dataset):
        if site is None or r.site == site:
            yield r.name, r.site, r.state.name, r.size, r.adler32


def rule_detail(db: Database, backend: ReplicationBackend, rule_id: int) -> tuple[Any, list[TransferInfo]]:
    """The rule as its back-end sees it, and its transfers that are not DONE (newest first)."""
    with db.session() as session:
        info = backend.rule(session, rule_id)
        pending = [t for t in list_transfers(session, rule=rule_id, limit=100_000) if t.state != "DONE"]
    return info, pending
