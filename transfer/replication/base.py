"""The replication interface: register files, add rules, read rule and replica states, declare bad
replicas, and advance (turn rules into transfers, mirror states into bookkeeping).

Both back-ends keep bookkeeping as satdrp's record: ``embedded`` *is* bookkeeping; ``rucio`` drives a
Rucio server and mirrors its rules and replicas into it. Transfers are always bookkeeping rows that
the transfer engine hands to movers; after a verified copy the engine calls :meth:`copied`, after a
transfer was given up :meth:`gave_up`, so each back-end records what its catalogue needs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from pydantic import BaseModel, ConfigDict
from sqlalchemy.orm import Session

from bookkeeping.files import FileRow, RegisterResult, check_did
from bookkeeping.states import ReplicaState, RuleState
from common.errors import InvalidInputError
from common.probes import Probe
from sites.catalogue import SiteCatalogue
from transfer.expressions import SiteAttributes


def split_did(did: str) -> tuple[str, str]:
    """``scope:name`` → (scope, name), with a clear error."""
    scope, sep, name = did.partition(":")
    if not sep or not scope or not name:
        raise InvalidInputError(f"dataset {did!r}: expected SCOPE:NAME, e.g. dr1:raw/tract0042")
    return check_did(scope, name)


@dataclass(frozen=True)
class RuleInfo:
    id: int
    dataset: str  # scope:name
    expression: str
    copies: int
    state: RuleState
    sites: tuple[str, ...]
    locks_ok: int
    locks_replicating: int
    locks_stuck: int
    stuck_reason: str | None
    external_id: str | None
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class ReplicaInfo:
    name: str
    site: str
    state: ReplicaState
    size: int
    adler32: str


@dataclass(frozen=True)
class StepReport:
    """What one :meth:`ReplicationBackend.step` did."""

    transfers_queued: int
    rules_ok: int
    rules_replicating: int
    rules_stuck: int


class ReplicationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReplicationBackend(ABC):
    name: ClassVar[str]
    Settings: ClassVar[type[ReplicationSettings]] = ReplicationSettings

    def __init__(self, settings: ReplicationSettings, catalogue: SiteCatalogue) -> None:
        self.settings = settings
        self.catalogue = catalogue

    def site_attributes(self) -> list[SiteAttributes]:
        return [SiteAttributes(s.name, s.all_attributes) for s in self.catalogue.sites]

    @abstractmethod
    def register(
        self,
        session: Session,
        dataset: str,
        files: Iterable[FileRow],
        site: str,
        *,
        campaign: str | None = None,
    ) -> RegisterResult:
        """Register new files of dataset ``scope:name`` (created if new) with an AVAILABLE replica at
        ``site``; the caller has verified them on that site's storage."""

    @abstractmethod
    def add_rule(
        self, session: Session, dataset: str, expression: str, copies: int = 1, *, campaign: str | None = None
    ) -> RuleInfo:
        """Keep ``copies`` copies of the dataset on sites matching ``expression``; idempotent: the same
        rule again returns the existing one."""

    @abstractmethod
    def rules(
        self, session: Session, *, dataset: str | None = None, state: RuleState | None = None
    ) -> list[RuleInfo]:
        """Rules, newest state (after :meth:`step`)."""

    @abstractmethod
    def rule(self, session: Session, rule_id: int) -> RuleInfo:
        """One rule by bookkeeping id (NotFoundError if none)."""

    @abstractmethod
    def replicas(self, session: Session, dataset: str) -> list[ReplicaInfo]:
        """Every replica of every file of the dataset."""

    @abstractmethod
    def declare_bad(
        self,
        session: Session,
        replicas: Sequence[tuple[str, str]],
        reason: str,
        *,
        state: ReplicaState = ReplicaState.BAD,
        source: str = "operator",
    ) -> int:
        """Declare (file name, site) replicas BAD or LOST with a reason; rules that need them get
        them copied again from a healthy replica at the next :meth:`step`. Returns how many."""

    @abstractmethod
    def step(self, session: Session) -> StepReport:
        """Advance every active rule: queue the transfers it needs, then set its state (and reason)."""

    @abstractmethod
    def copied(self, session: Session, replicas: Sequence[tuple[int, int]]) -> None:
        """(file id, site id) replicas were copied and verified: they are AVAILABLE."""

    @abstractmethod
    def gave_up(self, session: Session, replicas: Sequence[tuple[int, int, ReplicaState, str]]) -> None:
        """(file id, site id, new state, reason): copies the engine stopped retrying."""

    @abstractmethod
    def probe(self) -> list[Probe]:
        """For `drp doctor`: can the back-end reach its catalogue, with credentials? (no raising)"""

    # -- who moves the bytes -----------------------------------------------------------------------
    @property
    def engine_copies(self) -> bool:
        """Whether satdrp's transfer engine makes this back-end's copies. False when the replication
        service's own daemons do (Rucio's conveyor): satdrp then only places rules and watches, and
        repairs of damaged replicas are the service's too."""
        return True

    def data_path(self) -> str:
        """One line for operators (`drp doctor`, `campaign status`): who moves the data."""
        return f"{self.name} rules; satdrp's transfer engine copies (the link's mover)"

    def outstanding(self, session: Session) -> int:
        """Copies the service still has to make (its rules' replicating locks), whether or not it has
        made a request for them yet; 0 when satdrp's engine copies, as its transfer rows say it all."""
        return 0
