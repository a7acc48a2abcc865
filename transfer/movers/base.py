"""The mover interface: submit copies, poll them, cancel them, and look at storage.

A mover is chosen per link in ``sites.toml`` (``[[transfer.link]]``). Synchronous movers (``local``,
``xrootd``) finish copies inside :meth:`Mover.submit` and return outcomes at once; asynchronous ones
(``fts3``) return an external id per copy and report outcomes from :meth:`Mover.poll`. Either way the
transfer engine records every state in bookkeeping, and nothing becomes AVAILABLE unless its outcome
is DONE, which a mover only reports after it verified size and adler32 against the catalogue.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from common.probes import Probe


class FailureKind(StrEnum):
    """Why a copy failed; the engine's retry policy depends on it."""

    SOURCE_MISSING = "source_missing"  # the source replica is not there: try another source or give up
    CHECKSUM = "checksum"  # the copy does not match the catalogue: bad copy deleted, retried
    DESTINATION = "destination"  # cannot write at the destination (permissions, space): retried
    NETWORK = "network"  # the connection failed during the copy (reset, timed out): retried
    UNREACHABLE = "unreachable"  # the service or endpoint is not there: nothing tried, no attempt counted
    CANCELLED = "cancelled"
    OTHER = "other"


class Outcome(StrEnum):
    ACTIVE = "active"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class TransferRequest:
    """One copy: bookkeeping's transfer id, URLs, the catalogue's size and adler32, and which attempt of
    the transfer this is (a temporary copy is named after both: ``common.temporaries``)."""

    transfer_id: int
    source: str
    dest: str
    size: int
    adler32: str
    attempt: int = 1


@dataclass(frozen=True)
class TransferResult:
    transfer_id: int
    outcome: Outcome
    failure: FailureKind | None = None
    message: str = ""
    bytes: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class Submitted:
    """What :meth:`Mover.submit` says of one request: finished (``result``) or running (``external_id``)."""

    transfer_id: int
    external_id: str | None = None
    result: TransferResult | None = None


@dataclass(frozen=True)
class FileStat:
    size: int
    adler32: str | None  # None when the storage cannot checksum


class MoverSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Mover(ABC):
    """Copies files; URLs are full storage URLs (``file:///…``, ``root://host:port//…``)."""

    name: ClassVar[str]
    Settings: ClassVar[type[MoverSettings]] = MoverSettings

    def __init__(self, settings: MoverSettings) -> None:
        self.settings = settings

    @abstractmethod
    def submit(self, requests: Sequence[TransferRequest]) -> list[Submitted]:
        """Start (or do) the copies; one :class:`Submitted` per request, in any order."""

    @abstractmethod
    def poll(self, external_ids: Mapping[int, str]) -> list[TransferResult]:
        """Outcomes of copies that :meth:`submit` left running (transfer id → external id)."""

    @abstractmethod
    def cancel(self, external_ids: Mapping[int, str]) -> None:
        """Stop copies that :meth:`submit` left running."""

    @abstractmethod
    def stat(self, url: str, *, checksum: bool = True) -> FileStat | None:
        """Size and adler32 of a file on storage, or None if it is absent."""

    @abstractmethod
    def delete(self, url: str) -> None:
        """Remove a file from storage (a bad copy); absent is fine."""

    @abstractmethod
    def probe(self, roots: Sequence[str]) -> list[Probe]:
        """For `drp doctor`: can this mover reach its service and these storage roots? Bounded by
        short time-outs; never raises for an outage and never prints a credential."""

    def walk(self, url: str) -> Iterator[tuple[str, int]]:
        """Every file under a directory URL as (path relative to it, size), hidden names (temporary
        copies) skipped; what ``drp dr audit`` compares with the catalogue. Optional: FTS3 cannot."""
        raise NotImplementedError(f"the {self.name} mover cannot list storage")

    def temporaries(self, url: str) -> Iterator[tuple[str, int, float]]:
        """Every temporary copy (hidden ``.NAME.part-OWNER``) under a directory URL as (relative path,
        size, mtime): what ``drp dr audit`` judges by owner. Optional, like :meth:`walk`."""
        raise NotImplementedError(f"the {self.name} mover cannot list storage")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and threads."""
