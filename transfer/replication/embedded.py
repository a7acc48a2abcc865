"""The ``embedded`` replication back-end: Rucio's rule semantics kept in bookkeeping (the default).

- A rule "keeps ``copies`` copies of dataset D on sites matching expression E". It is placed once
  (Rucio's DATASET grouping: all files of D on the same sites), preferring sites that already hold
  most of D, then a deterministic hash; the placement is stored in ``rule_sites``.
- A file's lock at a placed site is its replica there: AVAILABLE = OK, COPYING = REPLICATING,
  BAD/LOST/UNAVAILABLE or absent with no healthy copy anywhere = STUCK. Counts come from the exact
  ``replica_counts`` aggregate, so evaluating a rule costs the same for 10 files or 10 million.
- :meth:`step` queues a transfer (and a COPYING replica) for every file missing at a placed site,
  from an AVAILABLE replica elsewhere, then sets each rule OK / REPLICATING / STUCK. A STUCK rule
  always carries a reason built from what was recorded: the transfers' last errors and the bad
  replicas' declared reasons, with counts and examples.
- Declaring a replica BAD or LOST records who, when and why, and queues a fresh copy from a healthy
  replica when a rule needs it (Rucio's necromancer); with no healthy replica the rule goes STUCK and
  says so.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from sqlalchemy.orm import Session

from bookkeeping import files as filedb
from bookkeeping import rules as ruledb
from bookkeeping.campaigns import attach_input, campaign_id
from bookkeeping.files import (
    FileRow,
    RegisterResult,
    get_or_create_dataset,
    register_files,
    set_replica_states,
)
from bookkeeping.sites import site_ids, site_names, upsert_sites
from bookkeeping.states import ReplicaState, RuleState
from bookkeeping.transfers import TransferRow, add_transfers
from common.errors import InvalidInputError, NotFoundError
from common.probes import Health, Probe
from transfer.expressions import check, evaluate

from .base import ReplicaInfo, ReplicationBackend, RuleInfo, StepReport, split_did

_EXAMPLES = 3


def _score(dataset: str, site: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{site}\x00{dataset}".encode(), digest_size=8).digest(), "big")


def ensure_sites(session: Session, backend: ReplicationBackend) -> dict[str, int]:
    """Site name → id, creating the catalogue's sites in bookkeeping when they are not there yet."""
    ids = site_ids(session)
    missing = [s.to_row() for s in backend.catalogue.sites if s.name not in ids]
    if missing:
        ids.update(upsert_sites(session, missing))
    return ids


class EmbeddedBackend(ReplicationBackend):
    name = "embedded"

    def probe(self) -> list[Probe]:
        return [
            Probe("catalogue", Health.OK, "rules and replicas are kept in bookkeeping"),
            Probe("transfers", Health.OK, self.data_path()),
        ]

    # -- catalogue ---------------------------------------------------------------------------------
    def register(
        self,
        session: Session,
        dataset: str,
        files: Iterable[FileRow],
        site: str,
        *,
        campaign: str | None = None,
    ) -> RegisterResult:
        scope, name = split_did(dataset)
        site_id = self._site_id(session, site)
        ds = get_or_create_dataset(session, scope, name)
        result = register_files(session, ds, files, replicas_at=[(site_id, ReplicaState.AVAILABLE)])
        if campaign is not None:
            attach_input(session, campaign_id(session, campaign), ds)
        if result.n_files:  # a rule covers files attached after it (Rucio's semantics): OK ones resume
            self._advance(session, ruledb.listed(session, dataset_id=ds, states=[RuleState.OK]))
        return result

    def replicas(self, session: Session, dataset: str) -> list[ReplicaInfo]:
        ds = self._dataset(session, dataset)
        return [ReplicaInfo(*row) for row in filedb.replicas_of(session, ds.id)]

    # -- rules -------------------------------------------------------------------------------------
    def add_rule(
        self, session: Session, dataset: str, expression: str, copies: int = 1, *, campaign: str | None = None
    ) -> RuleInfo:
        ds = self._dataset(session, dataset)
        check(expression)
        if copies < 1:
            raise InvalidInputError(f"rule on {dataset}: copies must be at least 1 (got {copies})")
        matched = evaluate(expression, self.site_attributes())
        if len(matched) < copies:
            raise InvalidInputError(
                f"rule on {dataset}: expression {expression!r} matches {len(matched)} site(s) "
                f"({', '.join(sorted(matched)) or 'none'}), the rule needs {copies}"
            )
        existing = ruledb.find(session, ds.id, expression, copies)
        if existing is None:
            camp = campaign_id(session, campaign) if campaign else None
            existing = ruledb.add(session, camp, ds.id, ds.did, expression, copies)
        self._advance(session, [existing])
        return self.rule(session, existing.id)

    def rules(
        self, session: Session, *, dataset: str | None = None, state: RuleState | None = None
    ) -> list[RuleInfo]:
        ds = self._dataset(session, dataset).id if dataset is not None else None
        found = ruledb.listed(session, dataset_id=ds, states=None if state is None else [state])
        return [self._info(session, r) for r in found]

    def rule(self, session: Session, rule_id: int) -> RuleInfo:
        return self._info(session, ruledb.get(session, rule_id))

    def step(self, session: Session) -> StepReport:
        active = ruledb.listed(session, states=[RuleState.REPLICATING, RuleState.STUCK])
        queued, states = self._advance(session, active)
        counts = Counter(states.values())
        return StepReport(
            queued, counts[RuleState.OK], counts[RuleState.REPLICATING], counts[RuleState.STUCK]
        )

    # -- replicas ----------------------------------------------------------------------------------
    def declare_bad(
        self,
        session: Session,
        replicas: Sequence[tuple[str, str]],
        reason: str,
        *,
        state: ReplicaState = ReplicaState.BAD,
        source: str = "operator",
    ) -> int:
        if state not in (ReplicaState.BAD, ReplicaState.LOST):
            raise InvalidInputError(f"a replica is declared BAD or LOST, not {state.name}")
        if not reason.strip():
            raise InvalidInputError("declaring a bad replica needs a reason")
        ids = ensure_sites(session, self)
        known = filedb.file_ids(session, [name for name, _ in replicas])
        pairs: list[tuple[int, int]] = []
        for name, site in replicas:
            if site not in ids:
                raise NotFoundError(f"no site named {site!r}")
            if name not in known:
                raise NotFoundError(f"no catalogued file named {name!r}")
            pairs.append((known[name], ids[site]))
        filedb.record_bad(session, [(f, s, state, reason) for f, s in pairs], source)
        # Rules that place these files at these sites get fresh copies from a healthy replica now
        # (Rucio's necromancer); with none, the replica stays declared and the rule goes STUCK.
        by_rule: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
        for f, s in pairs:
            rule_id = ruledb.placing(session, f, s)
            if rule_id is not None:
                by_rule[rule_id][s].append(f)
        for rule_id, per_site in by_rule.items():
            rule = ruledb.get(session, rule_id)
            for site_id, fids in per_site.items():
                self._queue(session, rule, site_id, fids)
            self._advance(session, [rule])
        return len(pairs)

    def copied(self, session: Session, replicas: Sequence[tuple[int, int]]) -> None:
        set_replica_states(session, ((f, s, ReplicaState.AVAILABLE) for f, s in replicas))

    def gave_up(self, session: Session, replicas: Sequence[tuple[int, int, ReplicaState, str]]) -> None:
        filedb.record_bad(session, replicas, "transfer")

    # -- internals ---------------------------------------------------------------------------------
    def _site_id(self, session: Session, site: str) -> int:
        ids = ensure_sites(session, self)
        if site not in ids:
            raise NotFoundError(f"no site named {site!r} in the catalogue")
        return ids[site]

    def _dataset(self, session: Session, did: str) -> filedb.DatasetRef:
        scope, name = split_did(did)
        ds = filedb.dataset(session, scope, name)
        if ds is None:
            raise NotFoundError(f"dataset {did} is not registered")
        return ds

    def _place(self, session: Session, rule: ruledb.RuleRow, ids: dict[str, int]) -> list[int] | str:
        """Choose and store the rule's sites; a string says why it cannot be placed."""
        matched = evaluate(rule.expression, self.site_attributes())
        if len(matched) < rule.copies:
            return (
                f"expression {rule.expression!r} matches {len(matched)} site(s), the rule needs {rule.copies}"
            )
        held = filedb.available_per_site(session, rule.dataset_id)
        ranked = sorted(matched, key=lambda s: (-held.get(ids[s], 0), -_score(rule.dataset, s)))
        chosen = [ids[s] for s in ranked[: rule.copies]]
        ruledb.place(session, rule.id, chosen)
        return chosen

    def _advance(self, session: Session, todo: Sequence[ruledb.RuleRow]) -> tuple[int, dict[int, RuleState]]:
        """Place, queue transfers for and evaluate rules; returns transfers queued and each rule's state."""
        states: dict[int, RuleState] = {}
        if not todo:
            return 0, states
        ids = ensure_sites(session, self)
        placed = ruledb.placements(session, [r.id for r in todo])
        queued = 0
        for rule in todo:
            sites = placed.get(rule.id)
            if not sites:
                where = self._place(session, rule, ids)
                if isinstance(where, str):
                    states[rule.id] = ruledb.set_state(session, rule, RuleState.STUCK, where)
                    continue
                sites = where
            for site_id in sites:
                queued += self._queue(session, rule, site_id)
            states[rule.id] = self._evaluate(session, rule, sites)
        return queued, states

    def _queue(
        self, session: Session, rule: ruledb.RuleRow, site_id: int, only: Sequence[int] | None = None
    ) -> int:
        """Transfers (and COPYING replicas) for the dataset's files missing at ``site_id`` (see
        :func:`bookkeeping.filedb.copy_sources`)."""
        rows = filedb.copy_sources(session, rule.dataset_id, site_id, only)
        if not rows:
            return 0
        link_mover: dict[int, str] = {}
        names = {v: k for k, v in ensure_sites(session, self).items()}
        for _, _, src in rows:
            if src not in link_mover:
                link_mover[src] = self.catalogue.link(names[src], names[site_id]).mover
        set_replica_states(session, ((f, site_id, ReplicaState.COPYING) for f, _, _ in rows))
        return add_transfers(
            session,
            rule.campaign_id,
            (TransferRow(f, src, site_id, size, rule.id, link_mover[src]) for f, size, src in rows),
        )

    def _evaluate(self, session: Session, rule: ruledb.RuleRow, sites: Sequence[int]) -> RuleState:
        n_files, by_state = ruledb.lock_counts(session, rule.dataset_id, sites)
        total = n_files * len(sites)
        ok = by_state[int(ReplicaState.AVAILABLE)]
        bad = sum(by_state[int(s)] for s in ruledb.STUCK_STATES)
        missing = total - sum(by_state.values())  # absent at a placed site although just queued: no source
        if ok == total:
            return ruledb.set_state(session, rule, RuleState.OK, None)
        if bad or missing:
            reason = self._reason(session, rule, sites, bad, missing)
            return ruledb.set_state(session, rule, RuleState.STUCK, reason)
        return ruledb.set_state(session, rule, RuleState.REPLICATING, None)

    def _reason(
        self, session: Session, rule: ruledb.RuleRow, sites: Sequence[int], bad: int, missing: int
    ) -> str:
        parts: list[str] = []
        names = site_names(session)
        if bad:
            by_why: dict[str, list[str]] = defaultdict(list)
            for name, site_id, state, why in ruledb.stuck_replicas(session, rule.dataset_id, sites):
                by_why[f"{state.name} at {names[site_id]}: {why or 'no reason recorded'}"].append(name)
            for why, names_ in sorted(by_why.items(), key=lambda kv: -len(kv[1])):
                parts.append(f"{len(names_)} file(s) {why} (e.g. {names_[0]})")
        if missing:
            example = ruledb.unreplicable_example(session, rule.dataset_id)
            parts.append(
                f"{missing} replica(s) cannot be made: no AVAILABLE copy of the file anywhere"
                + (f" (e.g. {example})" if example else "")
            )
        return "; ".join(parts[: _EXAMPLES + 1])

    def _info(self, session: Session, r: ruledb.RuleRow) -> RuleInfo:
        site_rows = ruledb.placed_site_names(session, r.id)
        sites = [sid for sid, _ in site_rows]
        n_files, by_state = ruledb.lock_counts(session, r.dataset_id, sites)
        ok = by_state[int(ReplicaState.AVAILABLE)]
        replicating = by_state[int(ReplicaState.COPYING)]
        stuck = n_files * len(sites) - ok - replicating
        return RuleInfo(
            r.id,
            r.dataset,
            r.expression,
            r.copies,
            r.state,
            tuple(sorted(name for _, name in site_rows)),
            ok,
            replicating,
            stuck,
            r.stuck_reason,
            r.external_id,
            r.created_at,
            r.updated_at,
        )
