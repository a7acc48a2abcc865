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
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from bookkeeping.events import log_event
from bookkeeping.files import (
    FileRow,
    RegisterResult,
    get_or_create_dataset,
    register_files,
    set_replica_states,
)
from bookkeeping.models import BadReplica, Campaign, Dataset, Rule, RuleSite, Site
from bookkeeping.sites import site_ids, upsert_sites
from bookkeeping.states import ReplicaState, RuleState
from bookkeeping.transfers import TransferRow, add_transfers
from common.errors import InvalidInputError, NotFoundError
from common.probes import Health, Probe
from transfer.expressions import check, evaluate

from .base import ReplicaInfo, ReplicationBackend, RuleInfo, StepReport, split_did

_STUCK_STATES = (ReplicaState.BAD, ReplicaState.LOST, ReplicaState.UNAVAILABLE)
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
        return [Probe("catalogue", Health.OK, "rules and replicas are kept in bookkeeping")]

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
            camp = self._campaign_id(session, campaign)
            session.execute(
                text(
                    "INSERT INTO campaign_datasets (campaign_id, dataset_id, role) VALUES (:c, :d, 'input') "
                    "ON CONFLICT DO NOTHING"
                ),
                {"c": camp, "d": ds},
            )
        return result

    def replicas(self, session: Session, dataset: str) -> list[ReplicaInfo]:
        ds = self._dataset(session, dataset)
        rows = session.execute(
            text(
                "SELECT f.name, s.name, r.state, f.size, f.adler32 FROM files f "
                "JOIN replicas r ON r.file_id = f.id JOIN sites s ON s.id = r.site_id "
                "WHERE f.dataset_id = :ds ORDER BY f.name, s.name"
            ),
            {"ds": ds.id},
        )
        return [ReplicaInfo(n, s, ReplicaState(st), size, a) for n, s, st, size, a in rows]

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
        existing = session.scalar(
            select(Rule).where(
                Rule.dataset_id == ds.id,
                Rule.site_expression == expression,
                Rule.copies == copies,
                Rule.state != RuleState.SUSPENDED,
            )
        )
        if existing is None:
            now = time.time()
            existing = Rule(
                campaign_id=self._campaign_id(session, campaign) if campaign else None,
                dataset_id=ds.id,
                site_expression=expression,
                copies=copies,
                state=RuleState.REPLICATING,
                created_at=now,
                updated_at=now,
            )
            session.add(existing)
            session.flush()
            log_event(
                session,
                "rule.added",
                subject=f"rule:{existing.id}",
                message=f"{dataset} → {expression} ×{copies}",
                campaign_id=existing.campaign_id,
            )
        self._advance(session, [existing])
        return self.rule(session, existing.id)

    def rules(
        self, session: Session, *, dataset: str | None = None, state: RuleState | None = None
    ) -> list[RuleInfo]:
        q = select(Rule).order_by(Rule.id)
        if dataset is not None:
            q = q.where(Rule.dataset_id == self._dataset(session, dataset).id)
        if state is not None:
            q = q.where(Rule.state == state)
        return [self._info(session, r) for r in session.scalars(q)]

    def rule(self, session: Session, rule_id: int) -> RuleInfo:
        r = session.get(Rule, rule_id)
        if r is None:
            raise NotFoundError(f"rule {rule_id} does not exist")
        return self._info(session, r)

    def step(self, session: Session) -> StepReport:
        active = list(
            session.scalars(
                select(Rule).where(Rule.state.in_([RuleState.REPLICATING, RuleState.STUCK])).order_by(Rule.id)
            )
        )
        queued = self._advance(session, active)
        states = Counter(r.state for r in active)
        return StepReport(
            queued, states[RuleState.OK], states[RuleState.REPLICATING], states[RuleState.STUCK]
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
        pairs: list[tuple[int, int]] = []
        for name, site in replicas:
            if site not in ids:
                raise NotFoundError(f"no site named {site!r}")
            file_id = session.scalar(text("SELECT id FROM files WHERE name = :n"), {"n": name})
            if file_id is None:
                raise NotFoundError(f"no catalogued file named {name!r}")
            pairs.append((file_id, ids[site]))
        self._mark(session, [(f, s, state, reason) for f, s in pairs], source)
        # Rules that place these files at these sites get fresh copies from a healthy replica now
        # (Rucio's necromancer); with none, the replica stays declared and the rule goes STUCK.
        by_rule: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
        for f, s in pairs:
            for (rule_id,) in session.execute(
                text(
                    "SELECT r.id FROM files fl JOIN rules r ON r.dataset_id = fl.dataset_id "
                    "JOIN rule_sites rs ON rs.rule_id = r.id "
                    "WHERE fl.id = :f AND rs.site_id = :s AND r.state <> :suspended ORDER BY r.id LIMIT 1"
                ),
                {"f": f, "s": s, "suspended": int(RuleState.SUSPENDED)},
            ):
                by_rule[rule_id][s].append(f)
        for rule_id, per_site in by_rule.items():
            rule = session.get(Rule, rule_id)
            assert rule is not None
            for site_id, files in per_site.items():
                self._queue(session, rule, site_id, files)
            self._advance(session, [rule])
        return len(pairs)

    def copied(self, session: Session, replicas: Sequence[tuple[int, int]]) -> None:
        set_replica_states(session, ((f, s, ReplicaState.AVAILABLE) for f, s in replicas))

    def gave_up(self, session: Session, replicas: Sequence[tuple[int, int, ReplicaState, str]]) -> None:
        self._mark(session, replicas, "transfer")

    # -- internals ---------------------------------------------------------------------------------
    def _mark(
        self, session: Session, replicas: Sequence[tuple[int, int, ReplicaState, str]], source: str
    ) -> None:
        if not replicas:
            return
        set_replica_states(session, ((f, s, st) for f, s, st, _ in replicas))
        now = time.time()
        session.add_all(
            BadReplica(file_id=f, site_id=s, state=st, reason=why, source=source, created_at=now)
            for f, s, st, why in replicas
        )
        log_event(
            session,
            "replicas.declared_bad",
            subject=source,
            message=replicas[0][3],
            payload={"replicas": len(replicas)},
        )

    def _site_id(self, session: Session, site: str) -> int:
        ids = ensure_sites(session, self)
        if site not in ids:
            raise NotFoundError(f"no site named {site!r} in the catalogue")
        return ids[site]

    def _campaign_id(self, session: Session, campaign: str) -> int:
        found = session.scalar(select(Campaign.id).where(Campaign.name == campaign))
        if found is None:
            raise NotFoundError(f"campaign {campaign!r} does not exist")
        return found

    def _dataset(self, session: Session, did: str) -> Dataset:
        scope, name = split_did(did)
        ds = session.scalar(select(Dataset).where(Dataset.scope == scope, Dataset.name == name))
        if ds is None:
            raise NotFoundError(f"dataset {did} is not registered")
        return ds

    def _place(self, session: Session, rule: Rule, ids: dict[str, int]) -> list[int] | str:
        """Choose and store the rule's sites; a string says why it cannot be placed."""
        matched = evaluate(rule.site_expression, self.site_attributes())
        if len(matched) < rule.copies:
            return (
                f"expression {rule.site_expression!r} matches {len(matched)} site(s), "
                f"the rule needs {rule.copies}"
            )
        held: dict[int, int] = {
            int(site): int(n)
            for site, n in session.execute(
                text("SELECT site_id, n_files FROM replica_counts WHERE dataset_id = :d AND state = :a"),
                {"d": rule.dataset_id, "a": int(ReplicaState.AVAILABLE)},
            )
        }
        ds = session.get(Dataset, rule.dataset_id)
        assert ds is not None
        did = f"{ds.scope}:{ds.name}"
        ranked = sorted(matched, key=lambda s: (-held.get(ids[s], 0), -_score(did, s)))
        chosen = [ids[s] for s in ranked[: rule.copies]]
        session.add_all(RuleSite(rule_id=rule.id, site_id=s) for s in chosen)
        session.flush()
        return chosen

    def _advance(self, session: Session, rules: Sequence[Rule]) -> int:
        """Place, queue transfers for and evaluate ``rules``; returns transfers queued."""
        if not rules:
            return 0
        ids = ensure_sites(session, self)
        placed: dict[int, list[int]] = defaultdict(list)
        for rule_id, site_id in session.execute(
            text("SELECT rule_id, site_id FROM rule_sites WHERE rule_id IN :ids").bindparams(
                _expanding("ids")
            ),
            {"ids": [r.id for r in rules]},
        ):
            placed[rule_id].append(site_id)
        queued = 0
        for rule in rules:
            sites = placed.get(rule.id)
            if not sites:
                where = self._place(session, rule, ids)
                if isinstance(where, str):
                    self._set_state(session, rule, RuleState.STUCK, where)
                    continue
                sites = where
            for site_id in sites:
                queued += self._queue(session, rule, site_id)
            self._evaluate(session, rule, sites)
        return queued

    def _queue(self, session: Session, rule: Rule, site_id: int, only: Sequence[int] | None = None) -> int:
        """Transfers (and COPYING replicas) for the dataset's files absent at ``site_id`` (or, with
        ``only``, for those files whatever their replica state), each from an AVAILABLE replica
        elsewhere (lowest site id: deterministic)."""
        which = (
            "f.id IN :only"
            if only is not None
            else "NOT EXISTS (SELECT 1 FROM replicas r WHERE r.file_id = f.id AND r.site_id = :site)"
        )
        stmt = text(
            "SELECT f.id, f.size, min(src.site_id) FROM files f "
            "JOIN replicas src ON src.file_id = f.id AND src.state = :available AND src.site_id <> :site "
            f"WHERE f.dataset_id = :ds AND {which} GROUP BY f.id, f.size"
        )
        params: dict[str, Any] = {
            "available": int(ReplicaState.AVAILABLE),
            "site": site_id,
            "ds": rule.dataset_id,
        }
        if only is not None:
            stmt = stmt.bindparams(_expanding("only"))
            params["only"] = list(only)
        rows = session.execute(stmt, params).all()
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

    def _counts(self, session: Session, dataset_id: int, sites: Sequence[int]) -> tuple[int, Counter[int]]:
        n_files = session.scalar(select(Dataset.n_files).where(Dataset.id == dataset_id)) or 0
        by_state: Counter[int] = Counter()
        for site_id, state, n in session.execute(
            text("SELECT site_id, state, n_files FROM replica_counts WHERE dataset_id = :d"),
            {"d": dataset_id},
        ):
            if site_id in sites:
                by_state[state] += n
        return n_files, by_state

    def _evaluate(self, session: Session, rule: Rule, sites: Sequence[int]) -> None:
        n_files, by_state = self._counts(session, rule.dataset_id, sites)
        total = n_files * len(sites)
        ok = by_state[int(ReplicaState.AVAILABLE)]
        bad = sum(by_state[int(s)] for s in _STUCK_STATES)
        missing = total - sum(by_state.values())  # absent at a placed site although just queued: no source
        if ok == total:
            self._set_state(session, rule, RuleState.OK, None)
        elif bad or missing:
            self._set_state(session, rule, RuleState.STUCK, self._reason(session, rule, sites, bad, missing))
        else:
            self._set_state(session, rule, RuleState.REPLICATING, None)

    def _reason(self, session: Session, rule: Rule, sites: Sequence[int], bad: int, missing: int) -> str:
        parts: list[str] = []
        names = {v: k for k, v in site_ids(session).items()}
        if bad:
            rows = session.execute(
                text(
                    "SELECT f.name, r.site_id, r.state, "
                    "(SELECT b.reason FROM bad_replicas b "
                    " WHERE b.file_id = r.file_id AND b.site_id = r.site_id ORDER BY b.id DESC LIMIT 1) "
                    "FROM replicas r JOIN files f ON f.id = r.file_id "
                    "WHERE f.dataset_id = :ds AND r.state IN (3, 4, 5) ORDER BY f.name"
                ),
                {"ds": rule.dataset_id},
            ).all()
            rows = [r for r in rows if r[1] in sites]
            by_why: dict[str, list[str]] = defaultdict(list)
            for name, site_id, state, why in rows:
                by_why[
                    f"{ReplicaState(state).name} at {names[site_id]}: {why or 'no reason recorded'}"
                ].append(name)
            for why, files in sorted(by_why.items(), key=lambda kv: -len(kv[1])):
                parts.append(f"{len(files)} file(s) {why} (e.g. {files[0]})")
        if missing:
            example = session.execute(
                text(
                    "SELECT f.name FROM files f WHERE f.dataset_id = :ds AND NOT EXISTS "
                    "(SELECT 1 FROM replicas r WHERE r.file_id = f.id AND r.state = :a) "
                    "ORDER BY f.name LIMIT 1"
                ),
                {"ds": rule.dataset_id, "a": int(ReplicaState.AVAILABLE)},
            ).scalar()
            parts.append(
                f"{missing} replica(s) cannot be made: no AVAILABLE copy of the file anywhere"
                + (f" (e.g. {example})" if example else "")
            )
        return "; ".join(parts[: _EXAMPLES + 1])

    def _set_state(self, session: Session, rule: Rule, state: RuleState, reason: str | None) -> None:
        if rule.state == state and rule.stuck_reason == reason:
            return
        rule.state, rule.stuck_reason, rule.updated_at = state, reason, time.time()
        log_event(
            session,
            f"rule.{state.name.lower()}",
            subject=f"rule:{rule.id}",
            message=reason or "",
            campaign_id=rule.campaign_id,
        )

    def _info(self, session: Session, r: Rule) -> RuleInfo:
        ds = session.get(Dataset, r.dataset_id)
        assert ds is not None
        site_rows = session.execute(
            select(Site.id, Site.name)
            .join(RuleSite, RuleSite.site_id == Site.id)
            .where(RuleSite.rule_id == r.id)
        ).all()
        sites = [sid for sid, _ in site_rows]
        n_files, by_state = self._counts(session, r.dataset_id, sites)
        ok = by_state[int(ReplicaState.AVAILABLE)]
        replicating = by_state[int(ReplicaState.COPYING)]
        stuck = n_files * len(sites) - ok - replicating
        return RuleInfo(
            r.id,
            f"{ds.scope}:{ds.name}",
            r.site_expression,
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


def _expanding(name: str) -> Any:
    from sqlalchemy import bindparam

    return bindparam(name, expanding=True)
