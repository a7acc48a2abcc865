"""The campaign driver: a persistent state machine that one bounded, idempotent ``tick`` advances.

Phases (``campaigns.state``; each phase's start, end, ticks and failures in ``campaign_phases``)::

    CREATED ─plan─► PLANNED ─register─► REGISTERED ─► REPLICATING ─► PROCESSING ─► COLLECTING
        ─► VALIDATING ─► CONSOLIDATING ─► DONE            (FAILED, PAUSED, CANCELLED on the side)

- **plan**: split the release's tracts between the sites (drp.split), stored with its rules.
- **register**: the raw visits at the lead, each in the input dataset of its home tract (the lowest
  tract it touches), and the release metadata (manifest, reference catalogue, truth). Rules then
  send every input dataset to every site that processes a tract its visits touch, and the metadata to
  every site.
- **replicate**: the transfer engine works for at most ``ticks.transfer_seconds`` per tick, until every
  rule of the campaign is OK; a STUCK rule fails the campaign with the rule's reason.
- **process**: each site's DAG is submitted to its compute back-end (detached) and polled.
- **collect**: job reports are ingested (attempts, profiles).
- **validate**: the overlap tracts are cross-validated between the lead and each satellite
  (science.crossval); results go to ``validations``; a failure names tract, sites and quantity.
- **consolidate**: every site's outputs for its own tracts are registered and replicated to every site.

Every phase is idempotent, so ``kill -9`` at any moment followed by another tick resumes: registration
skips files already catalogued, rules are found again, the engine re-queues interrupted copies, and
the compute back-end resumes from the job reports on storage. A FAILED campaign keeps the phase it
failed in; ``retry`` makes it try that phase again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from bookkeeping import aggregates, campaigns
from bookkeeping import files as filedb
from bookkeeping import rules as ruledb
from bookkeeping.campaigns import TERMINAL, create_campaign, transition
from bookkeeping.database import Database
from bookkeeping.files import FileRow
from bookkeeping.plans import load_plan
from bookkeeping.sites import unavailable, upsert_sites
from bookkeeping.states import CampaignState, RuleState, TransferState
from common.errors import (
    EXIT_FAILED,
    EXIT_IN_PROGRESS,
    EXIT_OK,
    InvalidInputError,
    NotFoundError,
    ServiceUnavailableError,
)
from common.permissions import PRIVATE, Modes
from drp.campaign_config import CampaignConfig
from drp.locking import campaign_lock
from drp.split import META_DATASET, site_expression, tract_dataset
from science.pipeline.calibrate import check_raw
from science.pipeline.jobs import ReleaseContext
from sites.catalogue import SiteCatalogue, SiteConfig, require_clients
from transfer.checksum import adler32_file
from transfer.engine import run_until_idle
from transfer.replication.base import ReplicationBackend
from transfer.replication.registry import get_replication


@dataclass(frozen=True)
class TickResult:
    campaign: str
    before: str
    after: str
    message: str
    retry_in: float | None = None  # waiting on a service: seconds until the next try

    @property
    def exit_code(self) -> int:
        if self.after == CampaignState.DONE.name:
            return EXIT_OK
        if self.after in (CampaignState.FAILED.name, CampaignState.CANCELLED.name):
            return EXIT_FAILED
        return EXIT_IN_PROGRESS

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "exit_code": self.exit_code}


class CampaignDriver:
    def __init__(
        self, db: Database, cfg: CampaignConfig, catalogue: SiteCatalogue, *, modes: Modes = PRIVATE
    ) -> None:
        require_clients(catalogue)  # a missing production client stops us before any work
        self.db = db
        self.cfg = cfg
        self.catalogue = catalogue
        self.modes = modes  # of the operators' files: lock, report
        self._replication: ReplicationBackend | None = None

    def lock(self) -> AbstractContextManager[Path]:
        return campaign_lock(self.cfg.workdir, self.name, modes=self.modes)

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def release(self) -> str:
        return self.cfg.campaign.release

    @property
    def replication(self) -> ReplicationBackend:
        if self._replication is None:
            self._replication = get_replication(self.catalogue)
        return self._replication

    # -- lifecycle ---------------------------------------------------------------------------------
    def create(self) -> bool:
        """Create the campaign (and its sites) in bookkeeping; False if it existed already."""
        with self.db.session() as session:
            upsert_sites(session, [s.to_row() for s in self.catalogue.sites])
            created = not campaigns.exists(session, self.name)
            if created:
                camp = create_campaign(session, self.name, self.release, self.cfg.model_dump(mode="json"))
                campaigns.enter_first_state(session, camp)
            campaigns.set_data_path(session, self.name, self.replication.data_path())
        return created

    def tick(self, *, now: bool = False) -> TickResult:
        """One bounded step under the campaign lock (CampaignBusy, exit 0, if another tick runs).

        A service that cannot be reached (Rucio, FTS3, XRootD, the schedd) is a wait, not a failure:
        the state stays, an event records it, and ticks back off (``ticks.poll_seconds`` doubled per
        wait in a row, at most ``ticks.backoff_max_seconds``); a tick inside the back-off touches no
        service unless ``now``."""
        with self.lock():
            camp = self.campaign()
            state = camp.state
            if state in TERMINAL:
                message = camp.message or state.name.lower()
                return TickResult(self.name, state.name, state.name, message)
            with self.db.session() as session:
                wait = campaigns.current_wait(session, camp.id, state)
            left = None if wait is None else wait.retry_at - time.time()
            if wait is not None and left is not None and left > 0 and not now:
                message = f"{wait.message.partition('; retry in')[0]}; next try in {_seconds(left)} s"
                return TickResult(self.name, state.name, state.name, message, retry_in=left)
            try:
                after, message = self._handlers()[state]()
            except InvalidInputError as err:
                after, message = CampaignState.FAILED, f"{state.name.lower()}: {err}"
            except ServiceUnavailableError as err:  # stays where it is; a later tick retries
                return self._wait(camp.id, state, err, wait)
            with self.db.session() as session:
                transition(session, camp.id, after, message)
                if wait is not None:
                    campaigns.note_resumed(session, camp.id, self.name, state, wait)
            return TickResult(self.name, state.name, after.name, message)

    def _wait(
        self, campaign: int, state: CampaignState, err: ServiceUnavailableError, last: campaigns.Wait | None
    ) -> TickResult:
        count = 1 if last is None else last.count + 1
        ticks = self.cfg.ticks
        delay = min(ticks.poll_seconds * 2 ** (count - 1), ticks.backoff_max_seconds)
        message = f"{state.name.lower()}: waiting: {err}; retry in {_seconds(delay)} s (wait {count})"
        wait = campaigns.Wait(count, time.time() + delay, message)
        with self.db.session() as session:
            transition(session, campaign, state, message)
            campaigns.note_wait(session, campaign, self.name, state, message, wait)
        return TickResult(self.name, state.name, state.name, message, retry_in=delay)

    def run(
        self, *, max_ticks: int | None = None, on_tick: Callable[[TickResult], None] | None = None
    ) -> TickResult:
        """Tick until DONE/FAILED/CANCELLED/PAUSED, pausing between ticks that only wait."""
        n = 0
        while True:
            result = self.tick()
            n += 1
            if on_tick is not None:
                on_tick(result)
            if result.after in {s.name for s in TERMINAL} or (max_ticks is not None and n >= max_ticks):
                return result
            if result.retry_in is not None:
                time.sleep(max(result.retry_in, 0.0))
            elif result.before == result.after:
                time.sleep(self.cfg.ticks.poll_seconds)

    def retry(self) -> str:
        """A FAILED campaign goes back to the phase it failed in (its failed transfers re-queued)."""
        from bookkeeping.transfers import retry_failed

        with self.lock(), self.db.session() as session:
            camp = campaigns.get(session, self.name)
            if camp.state is not CampaignState.FAILED:
                raise InvalidInputError(f"campaign {self.name} is {camp.state.name}, not FAILED")
            phase = campaigns.failed_phase(session, camp.id) or CampaignState.CREATED
            requeued = retry_failed(session, rule=None) if phase is CampaignState.REPLICATING else 0
            transition(session, camp.id, phase, f"retrying {phase.name.lower()}", tick=False)
        return f"{self.name}: back to {phase.name}" + (
            f", {requeued} transfer(s) re-queued" if requeued else ""
        )

    def cancel(self) -> str:
        with self.db.session() as session:
            camp = campaigns.get(session, self.name)
            if camp.state is CampaignState.DONE:
                return f"{self.name} is DONE; nothing to cancel"
            transition(session, camp.id, CampaignState.CANCELLED, "cancelled by an operator", tick=False)
        from drp import processing

        for site in self.catalogue.sites:
            if not processing.has_workflow(self.cfg.workdir, self.name, site.name):
                continue  # nothing was ever submitted there
            try:
                processing.cancel(self.name, site, self.cfg.workdir)
            except (NotFoundError, OSError, ValueError):
                pass
        return f"{self.name}: CANCELLED"

    # -- phases ------------------------------------------------------------------------------------
    def _handlers(self) -> dict[CampaignState, Callable[[], tuple[CampaignState, str]]]:
        return {
            CampaignState.CREATED: self._plan,
            CampaignState.PLANNED: self._register,
            CampaignState.REGISTERED: lambda: (CampaignState.REPLICATING, "replicating inputs"),
            CampaignState.REPLICATING: lambda: self._replicate(CampaignState.PROCESSING),
            CampaignState.PROCESSING: self._process,
            CampaignState.COLLECTING: self._collect,
            CampaignState.VALIDATING: self._validate,
            CampaignState.CONSOLIDATING: self._consolidate,
        }

    def _plan(self) -> tuple[CampaignState, str]:
        from drp import processing

        stored = processing.plan_campaign(
            self.db, self.name, self.release, self.catalogue, self.cfg.split.overlap
        )
        per_site = {s: len(stored.plan.tracts_of(s)) for s in stored.plan.sites}
        return CampaignState.PLANNED, f"split plan v{stored.version}: " + ", ".join(
            f"{s} {n} tracts" for s, n in per_site.items()
        )

    def _register(self) -> tuple[CampaignState, str]:
        from drp.processing import site_root

        lead = self.catalogue.lead
        root = site_root(lead)
        ctx = ReleaseContext(root, self.release)
        candidates = [ctx.layout.raw(v["band"], vid).as_posix() for vid, v in ctx.visits.items()]
        candidates += [p.as_posix() for p in (ctx.layout.manifest(), ctx.layout.refcat(), ctx.layout.truth())]
        with self.db.session() as session:
            stored = load_plan(session, self.name)
            known = filedb.known_names(session, candidates)
        assert stored is not None
        plan = stored.plan
        by_home: dict[int, list[FileRow]] = {}
        needs: dict[int, set[str]] = {}
        bad: list[str] = []
        shape = (ctx.config.image_pix, ctx.config.image_pix)
        for vid, v in sorted(ctx.visits.items()):
            tracts = sorted({int(t) for t, _ in v["patches"]})
            if not tracts:
                continue
            home = tracts[0]
            sites = set()
            for t in tracts:
                sites |= (
                    set(plan.sites)
                    if t in plan.overlap
                    else ({plan.assignment[t]} if t in plan.assignment else set())
                )
            needs.setdefault(home, set()).update(sites)
            name = ctx.layout.raw(v["band"], vid).as_posix()
            if name not in known:
                try:
                    check_raw(root / name, shape)
                except InvalidInputError as err:
                    bad.append(str(err))
                    continue
                by_home.setdefault(home, []).append(_file_row(root, name))
        if bad:  # nothing is registered until every raw file is sound
            raise InvalidInputError(
                f"{len(bad)} raw file(s) fail the input check, nothing registered: " + "; ".join(bad[:3])
            )
        meta = [
            p.as_posix()
            for p in (ctx.layout.manifest(), ctx.layout.refcat(), ctx.layout.truth())
            if (root / p).is_file() and p.as_posix() not in known
        ]
        registered = 0
        with self.db.session() as session:
            for home, rows in sorted(by_home.items()):
                res = self.replication.register(
                    session, f"{self.release}:{tract_dataset(home)}", rows, lead.name, campaign=self.name
                )
                registered += res.n_files
            if meta:
                rows = [_file_row(root, n) for n in meta]
                registered += self.replication.register(
                    session, f"{self.release}:{META_DATASET}", rows, lead.name, campaign=self.name
                ).n_files
            rules = 0
            for home, sites in sorted(needs.items()):
                if sites:
                    self.replication.add_rule(
                        session,
                        f"{self.release}:{tract_dataset(home)}",
                        site_expression(sites),
                        len(sites),
                        campaign=self.name,
                    )
                    rules += 1
            everywhere, n_sites = self._everywhere(session)
            self.replication.add_rule(
                session, f"{self.release}:{META_DATASET}", everywhere, n_sites, campaign=self.name
            )
            # the split's own per-tract rules on datasets that hold no visits are satisfied at once
        return (
            CampaignState.REGISTERED,
            f"{registered} files registered at {lead.name}, {rules + 1} input rules",
        )

    def _replicate(self, then: CampaignState) -> tuple[CampaignState, str]:
        report = run_until_idle(
            self.db, self.catalogue, self.replication, max_seconds=self.cfg.ticks.transfer_seconds, poll_s=0.2
        )
        if report.unreachable and report.done == 0:  # queued again with no attempt counted
            link, why = next(iter(sorted(report.unreachable.items())))
            raise ServiceUnavailableError(f"copies {link}: {why}")
        with self.db.session() as session:
            camp = campaigns.get(session, self.name)
            ours = {r.id for r in ruledb.listed(session, campaign_id=camp.id)}
            mine = [
                r
                for r in self.replication.rules(session)
                if r.id in ours and r.state is not RuleState.SUSPENDED
            ]
            by_state = aggregates.campaign_transfers(session, camp.id)
        stuck = [r for r in mine if r.state is RuleState.STUCK]
        moved = f"{report.done} copied, {report.retried} retried, {report.failed} given up, " + (
            f"{report.pending} pending"
        )
        if not self.replication.engine_copies:  # Rucio's conveyor copies: what its requests say so far
            moved = (
                f"Rucio requests: {by_state.get(TransferState.DONE, 0)} done, "
                f"{by_state.get(TransferState.FAILED, 0)} failed, {report.pending} copies pending"
            )
        if report.pending:
            return self.campaign().state, moved
        if stuck:
            reasons = "; ".join(f"rule {r.id} ({r.dataset}): {r.stuck_reason}" for r in stuck[:3])
            return CampaignState.FAILED, f"{len(stuck)} rule(s) STUCK: {reasons}"
        if all(r.state is RuleState.OK for r in mine):
            return then, f"{len(mine)} rules OK ({moved})"
        return self.campaign().state, moved

    def _process(self) -> tuple[CampaignState, str]:
        from drp import processing
        from sites.compute import RunState

        states: dict[str, str] = {}
        failed: list[str] = []
        for site in self._processing_sites():
            if not processing.has_workflow(self.cfg.workdir, self.name, site.name):
                report, _ = processing.run(
                    self.db, self.name, site, processing.site_root(site), self.cfg.workdir, wait=False
                )
            else:
                report, _ = processing.status(self.db, self.name, site, self.cfg.workdir)
                if report.state is RunState.NOT_SUBMITTED:  # prepared, never submitted (schedd away)
                    report, _ = processing.run(
                        self.db, self.name, site, processing.site_root(site), self.cfg.workdir, wait=False
                    )
                elif report.state is RunState.FAILED and not self._site_gave_up(site.name):
                    report, _ = processing.run(
                        self.db,
                        self.name,
                        site,
                        processing.site_root(site),
                        self.cfg.workdir,
                        wait=False,
                        restart=True,
                    )
                    self._note_failure(site.name)
            states[site.name] = report.state.value
            if report.state is RunState.FAILED and self._site_gave_up(site.name):
                failed.append(f"{site.name}: {report.message or 'jobs failed'}")
        summary = ", ".join(f"{s} {st}" for s, st in states.items())
        if failed:
            return CampaignState.FAILED, "processing failed at " + "; ".join(failed)
        if all(st == RunState.SUCCEEDED.value for st in states.values()):
            for site in self._processing_sites():  # what killed jobs left behind goes before collection
                root = processing.site_root(site)
                processing.sweep_temporaries(self.db, self.name, site.name, root / self.release)
            return CampaignState.COLLECTING, f"processing done: {summary}"
        return CampaignState.PROCESSING, summary

    def _site_gave_up(self, site: str) -> bool:
        """A site's run is restarted once by the driver; failing again needs an operator (retry)."""
        with self.db.session() as session:
            camp = campaigns.get(session, self.name)
            since = campaigns.phase_started(session, camp.id, CampaignState.PROCESSING)
            return campaigns.restarts(session, camp.id, site, since) >= 1

    def _note_failure(self, site: str) -> None:
        with self.db.session() as session:
            campaigns.note_restart(session, campaigns.get(session, self.name).id, site)

    def _collect(self) -> tuple[CampaignState, str]:
        from drp import processing

        attempts = 0
        for site in self._processing_sites():
            _, ingested = processing.status(self.db, self.name, site, self.cfg.workdir)
            attempts += ingested.attempts
        return CampaignState.VALIDATING, f"job reports collected ({attempts} new attempts)"

    def _validate(self) -> tuple[CampaignState, str]:
        sites = self._processing_sites()
        lead = self._reference(sites)
        if len(sites) < 2:
            return CampaignState.CONSOLIDATING, (
                f"overlap not cross-validated: only {lead.name} processed it "
                "(the other sites are failed over)"
            )
        failures, results = self.validate_overlap()
        if failures:
            return CampaignState.FAILED, f"overlap validation failed: {'; '.join(failures[:5])}" + (
                f" (+{len(failures) - 5} more)" if len(failures) > 5 else ""
            )
        return CampaignState.CONSOLIDATING, f"overlap validation passed ({results} tract comparisons)"

    def validate_overlap(self) -> tuple[list[str], int]:
        """Compare every pair of processing sites on every overlap tract (their kept outputs once
        consolidation has begun) and record the results; returns (failures, comparisons)."""
        from drp.overlap import compare_overlap, record_path, validation_rows, write_record

        sites = self._processing_sites()
        results = compare_overlap(
            sites, self._reference(sites), self.release, self.cfg.split.overlap, self.cfg.validation
        )
        rows = [row for r in results for row in validation_rows(r)]
        write_record(record_path(self.cfg.workdir, self.name), results, self.modes)
        with self.db.session() as session:
            campaigns.replace_validations(session, campaigns.get(session, self.name).id, rows)
        return [f for r in results for f in r.failures()], len(results)

    def _consolidate(self) -> tuple[CampaignState, str]:
        from drp import processing
        from drp.overlap import keep_evidence
        from drp.processing import site_root
        from science.workflow import WorkflowSpec

        with self.db.session() as session:
            stored = load_plan(session, self.name)
        assert stored is not None
        reference = self._reference(self._processing_sites())
        registered = 0
        with self.db.session() as session:
            everywhere, n_sites = self._everywhere(session)
            for site in self.catalogue.sites:
                root = site_root(site)
                if not processing.has_workflow(self.cfg.workdir, self.name, site.name):
                    continue  # a site that never processed (its share was failed over before it started)
                spec = WorkflowSpec.load(processing.workflow_dir(self.cfg.workdir, self.name, site.name))
                own = {t for t, s in stored.plan.assignment.items() if s == site.name}
                if site.name == reference.name:
                    own |= set(stored.plan.overlap)  # the reference's overlap outputs are the release's
                outputs = [
                    (tract, out)
                    for node in spec.nodes()
                    if (tract := _tract_of(node.data_id)) is not None and tract in own
                    for out in node.outputs
                ]
                if site.name != reference.name:  # its own overlap outputs, before the reference's copies
                    kept = [
                        out
                        for node in spec.nodes()
                        if _tract_of(node.data_id) in stored.plan.overlap
                        for out in node.outputs
                    ]
                    keep_evidence(
                        session,
                        self.replication,
                        self.name,
                        self.release,
                        site.name,
                        root,
                        kept,
                        everywhere,
                        n_sites,
                    )
                known = filedb.known_names(session, [out for _, out in outputs])
                by_tract: dict[int, list[FileRow]] = {}
                for tract, out in outputs:
                    if out not in known and (root / out).is_file():
                        known.add(out)
                        by_tract.setdefault(tract, []).append(_file_row(root, out))
                for tract, rows in sorted(by_tract.items()):
                    did = f"{self.release}:outputs.tract{tract:04d}"
                    registered += self.replication.register(
                        session, did, rows, site.name, campaign=self.name
                    ).n_files
                    self.replication.add_rule(session, did, everywhere, n_sites, campaign=self.name)
        state, message = self._replicate(CampaignState.DONE)
        prefix = f"{registered} outputs registered; " if registered else ""
        return state, prefix + message

    # -- sites -------------------------------------------------------------------------------------
    def _processing_sites(self) -> list[SiteConfig]:
        """The sites that process under the latest plan and are available, in catalogue order."""
        with self.db.session() as session:
            stored = load_plan(session, self.name)
            down = unavailable(session)
        planned = set(stored.plan.sites) if stored is not None else {s.name for s in self.catalogue.sites}
        return [s for s in self.catalogue.sites if s.name in planned and s.name not in down]

    def _reference(self, sites: list[SiteConfig]) -> SiteConfig:
        """Whose overlap outputs are the release's: the lead, or the first available site after failover."""
        for s in sites:
            if s.name == self.catalogue.lead.name:
                return s
        return sites[0] if sites else self.catalogue.lead

    def _everywhere(self, session: Session) -> tuple[str, int]:
        """The expression and copies of "one copy at every site" (failed-over sites excluded)."""
        down = unavailable(session) & {s.name for s in self.catalogue.sites}
        n = len(self.catalogue.sites) - len(down)
        if not down:
            return "*", n
        return "*" + "".join(f"\\site={s}" for s in sorted(down)), n

    # -- bookkeeping -------------------------------------------------------------------------------
    def campaign(self) -> campaigns.CampaignRow:
        """The campaign as bookkeeping has it now (state, message, release)."""
        with self.db.session() as session:
            return campaigns.get(session, self.name)


def _seconds(x: float) -> str:
    return f"{x:.0f}" if x >= 10 else f"{x:.1f}".removesuffix(".0")


def _file_row(root: Path, name: str) -> FileRow:
    adler, size = adler32_file(root / name)
    return FileRow(name, size, adler)


def _tract_of(data_id: dict[str, Any]) -> int | None:
    """The tract a job's outputs belong to (visit-level jobs: None; they are consolidated with inputs)."""
    t = data_id.get("tract")
    return int(t) if t is not None else None
