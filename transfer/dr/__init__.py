"""Disaster recovery of data (``drp dr status|audit|recover|replicate``).

- **status**: per site and dataset type, how much of the catalogue has a verified (AVAILABLE) replica
  there, read from the exact ``replica_counts`` aggregate; plus the files that lack a second verified
  copy anywhere (one scan of ``replicas``).
- **audit**: walks a site's storage and compares it with what the catalogue says is there. LOST:
  catalogued AVAILABLE, absent. CORRUPT: size or (``verify_checksums``) adler32 differs. DARK: present,
  not catalogued at that site. Findings are recorded in ``audits``/``audit_findings`` with time and
  reason. LOST and CORRUPT replicas are declared to the replication back-end (embedded or Rucio),
  which queues fresh copies for the rules that need them. DARK files are reported. They are deleted
  only with ``delete_dark``, and never when the file is catalogued with no verified copy elsewhere.
- **recover**: re-copies a site's BAD and LOST replicas from a healthy site through the transfer engine
  (verified copies only). Files with no healthy copy anywhere are reported as unrecoverable and left in
  place, never silently skipped.
- **replicate**: one rule per dataset of a release to site S, then the engine: S ends with the full
  release.

Nothing here deletes a catalogued replica; the only deletion is of dark files, on request.
"""

from __future__ import annotations

from .audit import AuditReport, Finding, FindingKind, audit
from .common import dataset_type, storage_mover
from .recover import RecoverReport, ReplicateReport, recover, replicate
from .status import DrStatus, TypeCoverage, status

__all__ = [
    "AuditReport",
    "DrStatus",
    "Finding",
    "FindingKind",
    "RecoverReport",
    "ReplicateReport",
    "TypeCoverage",
    "audit",
    "dataset_type",
    "recover",
    "replicate",
    "status",
    "storage_mover",
]
