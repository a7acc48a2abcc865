"""State enums of bookkeeping rows.

They are stored as small integers: the replica table holds one row per file and site (50 million
rows for the 2013 challenge at two sites), so a state costs two bytes, not a string. Values are part
of the schema: never renumber, only append.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ReplicaState(IntEnum):
    """Rucio's replica states (AVAILABLE, COPYING, BAD, LOST, UNAVAILABLE)."""

    AVAILABLE = 1
    COPYING = 2
    BAD = 3
    LOST = 4
    UNAVAILABLE = 5


class RuleState(IntEnum):
    """Rucio's rule states; STUCK always comes with a recorded reason."""

    REPLICATING = 1
    OK = 2
    STUCK = 3
    SUSPENDED = 4


class TransferState(IntEnum):
    QUEUED = 1
    SUBMITTED = 2
    ACTIVE = 3
    DONE = 4
    FAILED = 5
    CANCELED = 6


class JobState(IntEnum):
    PENDING = 1
    READY = 2
    SUBMITTED = 3
    RUNNING = 4
    SUCCEEDED = 5
    FAILED = 6
    CANCELLED = 7


class CampaignState(IntEnum):
    CREATED = 1
    PLANNED = 2
    REGISTERED = 3
    REPLICATING = 4
    PROCESSING = 5
    COLLECTING = 6
    CONSOLIDATING = 7
    VALIDATING = 8
    DONE = 9
    FAILED = 10
    PAUSED = 11
    CANCELLED = 12


class SiteRole(StrEnum):
    LEAD = "lead"
    SATELLITE = "satellite"


# Bounds (seconds) of the duration histograms: attempts' in ``attempt_durations``, and the exporter's.
DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)
