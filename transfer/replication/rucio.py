"""The ``rucio`` replication back-end: datasets, replicas and rules in a real Rucio, through rucio-clients.

satdrp's bookkeeping stays the operators' record: everything done in Rucio is mirrored there with the
same logic as the embedded back-end (placement, transfers, reasons), and Rucio is told of every
change satdrp makes:

- sites are RSEs named ``SITE`` upper-cased plus ``rse_suffix``, with a ``file`` (posix) or ``root``
  protocol at the site's storage root, deterministic with the ``identity`` path algorithm, and the
  attributes ``site``, ``role`` and the catalogue's own (so rule expressions mean the same in both);
- a file's DID is its logical name split at the first ``/``: ``dr1/raw/x.fits`` is ``dr1:raw/x.fits``
  (its path under the RSE prefix is then exactly the logical name);
- a rule is created in Rucio, its expression restricted to the catalogue's RSEs, and placed where
  Rucio put its locks; Rucio queues transfer requests,
  but with no FTS here satdrp's engine copies, verifies, and then sets the destination replicas
  AVAILABLE in Rucio (``update_replicas_states``), which completes the locks and the rule;
- bad replicas are declared in Rucio (``declare_bad_file_replicas``) with the reason, and in
  bookkeeping; a Rucio rule that Rucio itself marks STUCK shows Rucio's error as its reason.

Credentials come from settings (``password`` or, better, ``password_env``) and are never logged.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlparse

from sqlalchemy.orm import Session

from bookkeeping import files as filedb
from bookkeeping import rules as ruledb
from bookkeeping.files import FileRow, RegisterResult, set_replica_states
from bookkeeping.states import ReplicaState, RuleState
from common.errors import DrpError
from common.probes import TIMEOUT_S, Health, Probe, credential_file, http, tcp
from sites.catalogue import SiteCatalogue, SiteConfig
from transfer.expressions import to_rucio

from .base import RuleInfo, StepReport, split_did
from .conveyor import RequestMirror, mirror_replicas
from .embedded import EmbeddedBackend, ensure_sites
from .rucio_client import RucioError, chunks, connect, in_flight, password
from .rucio_settings import RucioSettings, file_did

CHUNK = 500
LIST_MAX = 1000  # Rucio's schemas take at most 1,000 DIDs (or attachments) in one list
RECONCILE_S = 60.0  # satdrp-copies mode: how often a rule is checked against Rucio's own view


class RucioBackend(EmbeddedBackend):
    name = "rucio"
    Settings = RucioSettings
    settings: RucioSettings

    def __init__(self, settings: RucioSettings, catalogue: SiteCatalogue) -> None:
        super().__init__(settings, catalogue)
        self._client: Any = None
        self._topology_done = False
        self._scopes: set[str] = set()
        self._spares: list[Any] = []  # more clients, for the registration calls sent at once
        self._requests: RequestMirror | None = None
        self._reconciled: dict[int, float] = {}  # rule id → when it was last reconciled with Rucio

    # -- connection and topology -------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _connect(self) -> Any:
        """A new authenticated client (its own HTTP session: one per thread that sends calls)."""
        return connect(self.settings)

    def probe(self) -> list[Probe]:
        s = self.settings
        server = http("Rucio server", s.host.rstrip("/") + "/ping")
        creds = self._credentials()
        if server.health is not Health.OK or creds.health is not Health.OK:
            return [server, creds]
        if s.auth_type == "userpass":  # ask the auth server itself: the client would reuse a cached token
            return [server, self._check_userpass(creds), *self._transfer_probes()]
        try:
            who = self.client.whoami()
        except Exception as err:  # rucio's own tree; its text is not shown, it may echo a credential
            cause = err.__cause__ or err
            return [server, Probe(creds.check, Health.NO_CREDENTIALS, f"refused: {type(cause).__name__}")]
        account = (who or {}).get("account", s.account)
        return [
            server,
            Probe(creds.check, Health.OK, f"{creds.detail}; authenticated as {account}"),
            *self._transfer_probes(),
        ]

    def _transfer_probes(self) -> list[Probe]:
        """Which mode moves the bytes and, in conveyor mode, whether the FTS3 endpoint answers."""
        mode = Probe("transfers", Health.OK, self.data_path())
        if not self.conveyor or not self.settings.fts:
            return [mode]
        url = urlparse(self.settings.fts)
        port = url.port or (443 if url.scheme == "https" else 80)
        return [mode, tcp("FTS3 endpoint", url.hostname or "localhost", port)]

    def _check_userpass(self, creds: Probe) -> Probe:
        import urllib.error
        import urllib.request

        s = self.settings
        request = urllib.request.Request(
            (s.auth_host or s.host).rstrip("/") + "/auth/userpass",
            headers={
                "X-Rucio-Account": s.account,
                "X-Rucio-Username": s.username or "",
                "X-Rucio-Password": password(self.settings) or "",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S):
                return Probe(creds.check, Health.OK, f"{creds.detail}; authenticated as {s.account}")
        except urllib.error.HTTPError as err:
            health = Health.NO_CREDENTIALS if err.code in (401, 403) else Health.UNREACHABLE
            return Probe(creds.check, health, f"refused by the auth server (HTTP {err.code})")
        except (urllib.error.URLError, OSError) as err:
            return Probe(creds.check, Health.UNREACHABLE, f"auth server: {getattr(err, 'reason', err)}")

    def _credentials(self) -> Probe:
        s = self.settings
        check = f"Rucio credentials ({s.auth_type}, account {s.account})"
        if s.auth_type == "userpass":
            if not s.username:
                return Probe(check, Health.NO_CREDENTIALS, "no username configured")
            if s.password_env:
                if os.environ.get(s.password_env) is None:
                    return Probe(check, Health.NO_CREDENTIALS, f"${s.password_env} is not set")
                return Probe(check, Health.OK, f"user {s.username}, password in ${s.password_env}")
            if s.password is None:
                return Probe(check, Health.NO_CREDENTIALS, "no password or password_env configured")
            return Probe(check, Health.OK, f"user {s.username}, password configured")
        if s.auth_type in ("x509", "x509_proxy"):
            path = s.client_cert or os.environ.get("X509_USER_PROXY") or f"/tmp/x509up_u{os.getuid()}"
            return credential_file(check, path, "certificate" if s.client_cert else "X.509 proxy")
        return Probe(check, Health.OK, "OIDC tokens are handled by the Rucio client")

    @property
    def conveyor(self) -> bool:
        """Rucio's daemons move the data (satdrp only places rules and watches)."""
        return self.settings.transfers == "conveyor"

    @property
    def engine_copies(self) -> bool:
        return not self.conveyor

    def data_path(self) -> str:
        if self.conveyor:
            return (
                f"Rucio rules at {self.settings.host}; Rucio's conveyor and FTS3 at {self.settings.fts} "
                "copy (transfers = conveyor), satdrp watches"
            )
        host = self.settings.host
        return f"Rucio rules at {host}; satdrp's engine copies and tells Rucio (transfers = satdrp)"

    def outstanding(self, session: Session) -> int:
        if not self.conveyor:
            return 0
        # a REPLICATING rule's stuck locks are ones Rucio is repairing (see _evaluate)
        return sum(
            r.locks_replicating + r.locks_stuck for r in self.rules(session, state=RuleState.REPLICATING)
        )

    def _site_of_rse(self, session: Session) -> dict[str, int]:
        ids = ensure_sites(session, self)
        return {self.rse(name): ids[name] for name in ids if name in {s.name for s in self.catalogue.sites}}

    def rse(self, site: str) -> str:
        return site.upper().replace("-", "_") + self.settings.rse_suffix

    def _protocol(self, site: SiteConfig) -> dict[str, Any]:
        url = urlparse(site.storage)
        domains = {
            "lan": {"read": 1, "write": 1, "delete": 1},
            "wan": {
                "read": 1,
                "write": 1,
                "delete": 1,
                "third_party_copy_read": 1,
                "third_party_copy_write": 1,
            },
        }
        if url.scheme == "file":
            return {
                "scheme": "file",
                "impl": "rucio.rse.protocols.posix.Default",
                "hostname": "",
                "port": 0,
                "prefix": url.path.rstrip("/") + "/",
                "domains": domains,
            }
        if url.scheme == "root":
            return {
                "scheme": "root",
                "impl": "rucio.rse.protocols.xrootd.Default",
                "hostname": url.hostname or "",
                "port": url.port or 1094,
                # root://host:port//abs/path: Rucio joins host:port and the prefix as they are, and an
                # XRootD server refuses a path without the second slash ("relative path disallowed")
                "prefix": "//" + url.path.lstrip("/").rstrip("/") + "/",
                "domains": domains,
            }
        scheme = "davs" if url.scheme in ("davs", "https") else url.scheme
        return {
            "scheme": scheme,
            "impl": "rucio.rse.protocols.gfal.Default",
            "hostname": url.hostname or "",
            "port": url.port or 443,
            "prefix": url.path.rstrip("/") + "/",
            "domains": domains,
        }

    def ensure_topology(self) -> None:
        """RSEs, protocols, attributes, quotas and distances for the catalogue's sites (idempotent)."""
        if self._topology_done:
            return
        from rucio.common.exception import Duplicate, RSEProtocolPriorityError

        c = self.client
        rses = []
        for site in self.catalogue.sites:
            rse = self.rse(site.name)
            rses.append(rse)
            try:
                c.add_rse(rse)
            except Duplicate:
                pass
            try:
                c.add_protocol(rse, self._protocol(site))
            except (Duplicate, RSEProtocolPriorityError):
                pass
            attributes = {**site.all_attributes, "lfn2pfn_algorithm": "identity"}
            if self.conveyor and self.settings.fts:
                attributes["fts"] = self.settings.fts  # the conveyor submits only for RSEs that have it
            for key, value in attributes.items():
                c.add_rse_attribute(rse, key, value)
            c.set_local_account_limit(self.settings.account, rse, -1)
        for a in rses:
            for b in rses:
                if a < b:
                    try:
                        c.add_distance(a, b, {"distance": 1})
                        c.add_distance(b, a, {"distance": 1})
                    except Duplicate:
                        pass
        self._topology_done = True

    def _scope(self, scope: str) -> None:
        if scope in self._scopes:
            return
        from rucio.common.exception import Duplicate

        try:
            self.client.add_scope(self.settings.account, scope)
        except Duplicate:
            pass
        self._scopes.add(scope)

    def _dataset_did(self, scope: str, name: str) -> None:
        """The dataset DID (and its scope) in Rucio, made if missing."""
        from rucio.common.exception import DataIdentifierAlreadyExists

        self._scope(scope)
        try:
            self.client.add_dataset(scope, name)
        except DataIdentifierAlreadyExists:
            pass

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
        rows = list(files)
        dids = [file_did(r.name) for r in rows]  # validate before anything is written
        result = super().register(session, dataset, rows, site, campaign=campaign)
        self.ensure_topology()
        scope, name = split_did(dataset)
        for s in {d[0] for d in dids}:
            self._scope(s)
        self._dataset_did(scope, name)
        content = [
            {"scope": s, "name": n, "bytes": r.size, "adler32": r.adler32}
            for (s, n), r in zip(dids, rows, strict=True)
        ]
        rse = self.rse(site)
        self._in_flight(
            [
                [
                    {"scope": scope, "name": name, "rse": rse, "dids": list(part)}
                    for part in chunks(call, LIST_MAX)
                ]
                for call in chunks(content, self.settings.register_batch)
            ]
        )
        return result

    def _in_flight(self, calls: list[list[dict[str, Any]]]) -> None:
        """Each call (attachments of at most LIST_MAX files, Rucio's limit) adds the replicas at the
        RSE and attaches the files to the dataset in one transaction, skipping what exists (so a
        registration cut short is simply sent again); up to ``register_in_flight`` calls at once, each
        thread with its own client, so that the client's encoding, the server's work and its
        database's overlap instead of taking turns (``bench/rucio_register.py`` sizes both settings)."""
        width = min(self.settings.register_in_flight, len(calls))
        while len(self._spares) < width - 1:
            self._spares.append(self._connect())

        def send(client: Any, call: list[dict[str, Any]]) -> None:
            try:
                client.attach_dids_to_dids(call, ignore_duplicate=True)
            except DrpError:
                raise
            except Exception as err:  # Rucio's own tree: a file it knows with other bytes, a bad name…
                first = call[0]
                raise RucioError(
                    f"Rucio refused the registration of {sum(len(a['dids']) for a in call)} file(s) in "
                    f"{first['scope']}:{first['name']} at {first['rse']}: {err}"
                ) from err

        in_flight([self.client, *self._spares[: width - 1]], calls, send)

    # -- rules -------------------------------------------------------------------------------------
    def add_rule(
        self, session: Session, dataset: str, expression: str, copies: int = 1, *, campaign: str | None = None
    ) -> RuleInfo:
        self.ensure_topology()
        return super().add_rule(session, dataset, expression, copies, campaign=campaign)

    def _rucio_rule(self, rule: ruledb.RuleRow) -> str:
        """Create the rule in Rucio (or find the identical one); returns its id."""
        from rucio.common.exception import DuplicateRule

        scope, name = split_did(rule.dataset)
        # A Rucio instance serves many sites (and experiments): only this catalogue's RSEs qualify.
        mine = "|".join(sorted(self.rse(site.name) for site in self.catalogue.sites))
        expr = f"({to_rucio(rule.expression)})&({mine})"
        did = {"scope": scope, "name": name}
        self._dataset_did(scope, name)  # a rule may come before any file (a tract with no visits yet)
        try:
            (rule_id,) = self.client.add_replication_rule(
                [did], rule.copies, expr, account=self.settings.account, grouping="DATASET"
            )
        except DuplicateRule:
            found = [
                r
                for r in self.client.list_replication_rules(did)
                if r["rse_expression"] == expr
                and r["copies"] == rule.copies
                and r["account"] == self.settings.account
            ]
            if not found:
                raise
            rule_id = found[0]["id"]
        return str(rule_id)

    def _place(self, session: Session, rule: ruledb.RuleRow, ids: dict[str, int]) -> list[int] | str:
        external = rule.external_id
        if external is None:
            external = self._rucio_rule(rule)
            ruledb.set_external_id(session, rule.id, external)
        by_rse = {self.rse(s.name): s.name for s in self.catalogue.sites}
        rses = {lock["rse"] for lock in self.client.list_replica_locks(external)}
        unknown = rses - set(by_rse)
        if unknown:
            return f"Rucio placed the rule on RSEs outside the catalogue: {', '.join(sorted(unknown))}"
        if not rses:
            return super()._place(session, rule, ids)
        chosen = [ids[by_rse[r]] for r in sorted(rses)]
        ruledb.place(session, rule.id, chosen)
        return chosen

    def _queue(
        self, session: Session, rule: ruledb.RuleRow, site_id: int, only: Sequence[int] | None = None
    ) -> int:
        """Conveyor mode: Rucio makes the requests; the missing replicas only become COPYING (until the
        judge's locks and the conveyor's replicas are mirrored), so a file attached to a dataset whose
        rule is OK turns the rule REPLICATING at once, as in Rucio."""
        if not self.conveyor:
            return super()._queue(session, rule, site_id, only)
        rows = filedb.copy_sources(session, rule.dataset_id, site_id, only)
        set_replica_states(session, ((f, site_id, ReplicaState.COPYING) for f, _, _ in rows))
        return 0

    def _evaluate(self, session: Session, rule: ruledb.RuleRow, sites: Sequence[int]) -> RuleState:
        """Conveyor mode: bookkeeping's replicas from Rucio, then the embedded judgement of the rule on
        them; a BAD replica Rucio can repair from a healthy copy keeps the rule REPLICATING, and when
        Rucio says STUCK its error joins the reason."""
        if not self.conveyor:
            return super()._evaluate(session, rule, sites)
        rule = ruledb.get(session, rule.id)  # placement may have given it its Rucio id since
        info = mirror_replicas(session, self.client, rule, self._site_of_rse(session))
        state = super()._evaluate(session, rule, sites)
        rule = ruledb.get(session, rule.id)
        if info.get("state") == "STUCK":
            reason = "; ".join(p for p in (rule.stuck_reason, f"Rucio: {info.get('error') or 'stuck'}") if p)
            return ruledb.set_state(session, rule, RuleState.STUCK, reason)
        if state is RuleState.STUCK and self._repairable(session, rule, sites):
            return ruledb.set_state(session, rule, RuleState.REPLICATING, None)
        return state

    def _repairable(self, session: Session, rule: ruledb.RuleRow, sites: Sequence[int]) -> bool:
        """Every replica that makes the rule STUCK is BAD or LOST with a verified copy elsewhere: Rucio's
        necromancer and judge are repairing it."""
        damaged = ruledb.stuck_replicas(session, rule.dataset_id, sites)
        if not damaged or any(st not in (ReplicaState.BAD, ReplicaState.LOST) for _, _, st, _ in damaged):
            return False
        ids = filedb.file_ids(session, [name for name, _, _, _ in damaged])
        return all(
            filedb.healthy_source(session, ids[name], [site]) is not None for name, site, _, _ in damaged
        )

    def step(self, session: Session) -> StepReport:
        if self.conveyor:
            # Requests before the replicas, so that a lock Rucio gave up on finds its request's error,
            # and after them, so that every copy seen AVAILABLE has its request in the books (Rucio can
            # queue, copy and archive a request between two passes).
            if self._requests is None:
                self._requests = RequestMirror(self.client, self._site_of_rse(session))
            self._requests.mirror(session)
            report = super().step(session)  # rules placed, replicas mirrored and judged; nothing queued
            self._requests.mirror(session)
            return report
        report = super().step(session)
        live = [s for s in RuleState if s is not RuleState.SUSPENDED]
        now = time.monotonic()
        for rule in ruledb.listed(session, states=live, external=True):
            # each rule once per process start (the crash case), then at most every RECONCILE_S: reading
            # every rule's locks on every engine round made this mode 15x slower than the direct mover
            if now - self._reconciled.get(rule.id, -RECONCILE_S) >= RECONCILE_S:
                self._reconcile(session, rule)
                self._reconciled[rule.id] = now
        return report

    def _reconcile(self, session: Session, rule: ruledb.RuleRow) -> None:
        """Push AVAILABLE replicas Rucio has not heard of (after a crash between the two), then show
        Rucio's own STUCK error when bookkeeping has none."""
        assert rule.external_id is not None
        info = self.client.get_replication_rule(rule.external_id)
        if info["state"] == "REPLICATING":
            pending = [
                (lk["rse"], lk["scope"], lk["name"])
                for lk in self.client.list_replica_locks(rule.external_id)
                if lk["state"] != "OK"
            ]
            names = {f"{s}/{n}": (rse, s, n) for rse, s, n in pending}
            if names:
                by_rse = {self.rse(s.name): s.name for s in self.catalogue.sites}
                site_ids = ensure_sites(session, self)
                available = filedb.available_replicas(session, rule.dataset_id)
                push: dict[str, list[dict[str, str]]] = defaultdict(list)
                for fname, (rse, s, n) in names.items():
                    if rse in by_rse and (fname, site_ids[by_rse[rse]]) in available:
                        push[rse].append({"scope": s, "name": n, "state": "A"})
                for rse, files in push.items():
                    for chunk in chunks(files, CHUNK):
                        self.client.update_replicas_states(rse, list(chunk))
        elif info["state"] == "STUCK" and rule.state is not RuleState.STUCK:
            reason = f"Rucio: {info.get('error') or 'stuck, no error given'}"
            ruledb.set_state(session, rule, RuleState.STUCK, reason)

    # -- replicas ----------------------------------------------------------------------------------
    def copied(self, session: Session, replicas: Sequence[tuple[int, int]]) -> None:
        if self.conveyor:  # the one place satdrp would write replica states to Rucio for a transfer
            raise RucioError("conveyor mode: Rucio's conveyor makes the copies, satdrp's engine must not")
        super().copied(session, replicas)
        self._available_in_rucio(session, replicas)

    def _available_in_rucio(self, session: Session, replicas: Sequence[tuple[int, int]]) -> None:
        """Tell Rucio the verified copies are AVAILABLE. Rucio made a destination replica when the rule
        locked the file; a file attached after the rule has none until Rucio's judge re-evaluates it
        (no judge runs in this mode), so its copy is added as a new AVAILABLE replica instead."""
        from rucio.common.exception import ReplicaNotFound

        names = {v: k for k, v in ensure_sites(session, self).items()}
        by_rse: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
        for chunk in chunks(list(replicas), CHUNK):
            file_names = filedb.file_names(session, [f for f, _ in chunk])
            for f, site in chunk:
                by_rse[self.rse(names[site])].append((f, *file_did(file_names[f])))
        for rse, files in by_rse.items():
            for part in chunks(files, CHUNK):
                try:
                    self.client.update_replicas_states(
                        rse, [{"scope": s, "name": n, "state": "A"} for _, s, n in part]
                    )
                except ReplicaNotFound:
                    self._add_missing(session, rse, part)

    def _add_missing(self, session: Session, rse: str, part: Sequence[tuple[int, str, str]]) -> None:
        from rucio.common.exception import ReplicaNotFound

        missing: list[tuple[int, str, str]] = []
        for f, scope, name in part:
            try:
                self.client.update_replicas_states(rse, [{"scope": scope, "name": name, "state": "A"}])
            except ReplicaNotFound:
                missing.append((f, scope, name))
        rows = filedb.file_rows(session, [f for f, _, _ in missing])
        if missing:
            self.client.add_replicas(
                rse,
                [
                    {"scope": s, "name": n, "bytes": rows[f].size, "adler32": rows[f].adler32}
                    for f, s, n in missing
                ],
            )

    def declare_bad(
        self,
        session: Session,
        replicas: Sequence[tuple[str, str]],
        reason: str,
        *,
        state: ReplicaState = ReplicaState.BAD,
        source: str = "operator",
    ) -> int:
        dids = [
            {**dict(zip(("scope", "name"), file_did(n), strict=True)), "rse": self.rse(s)}
            for n, s in replicas
        ]
        refused = self.client.declare_bad_file_replicas(dids, reason) if dids else {}
        if refused:
            raise RucioError(f"Rucio refused to declare bad replicas: {refused}")
        return super().declare_bad(session, replicas, reason, state=state, source=source)
