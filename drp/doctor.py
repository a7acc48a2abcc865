"""`drp doctor`: can this host run the campaign? One row per component and check, before any work.

For the bookkeeping database (client, reachable, schema at head), the site catalogue, every back-end
it names (client installed and its version, then the back-end's own probe: scheduler, storage, REST
endpoint, credentials present and accepted) and, when given, the Prometheus Pushgateway. Nothing is
written anywhere; credentials are reported present or absent, never shown.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bookkeeping.database import Database, expected_head, redact
from common.errors import EXIT_OK, ConfigError, DrpError
from common.plugins import POSTGRES, Kind, MissingClientError
from common.probes import Health, Probe, http, tcp
from sites.catalogue import Requirement, SiteCatalogue, load_catalogue, requirements


@dataclass(frozen=True)
class Row:
    component: str
    check: str
    health: Health
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "health": self.health.value}


@dataclass(frozen=True)
class DoctorReport:
    rows: list[Row]

    @property
    def exit_code(self) -> int:
        """0 all good, 2 if anything is a configuration problem (a missing client included), else 1."""
        return max((r.health.exit_code for r in self.rows), default=EXIT_OK)

    def to_dict(self) -> dict[str, Any]:
        return {"exit_code": self.exit_code, "rows": [r.to_dict() for r in self.rows]}


def doctor(db_url: str | None, sites_path: Path | None, push_gateway: str | None = None) -> DoctorReport:
    rows = database_rows(db_url)
    try:
        catalogue = load_catalogue(sites_path)
    except ConfigError as err:
        rows.append(Row("site catalogue", "file", Health.CONFIG, str(err)))
    else:
        rows.append(
            Row("site catalogue", "file", Health.OK, f"{catalogue.source}: {len(catalogue.site)} sites")
        )
        rows.extend(backend_rows(catalogue))
    if push_gateway:
        probe = http("endpoint", push_gateway.rstrip("/") + "/-/healthy")
        rows.append(Row("push gateway", probe.check, probe.health, probe.detail))
    return DoctorReport(rows)


def database_rows(url: str | None) -> list[Row]:
    try:
        db = Database.from_env(url)
    except MissingClientError as err:
        return [Row("database", "client", Health.MISSING, str(err))]
    except ConfigError as err:
        return [Row("database", "url", Health.CONFIG, str(err))]
    shown = redact(db.url)
    try:
        if db.dialect == "sqlite":
            rows = [Row("database", "client", Health.OK, f"sqlite3 {sqlite3.sqlite_version}")]
            path = db.engine.url.database
            if path and path != ":memory:" and not Path(path).exists():
                detail = f"{shown}: no database yet: run `drp db upgrade`"
                return [*rows, Row("database", "endpoint", Health.OUTDATED, detail)]
        else:
            rows = [Row("database", "client", Health.OK, f"psycopg {POSTGRES.version()}")]
            u = db.engine.url
            reach = tcp("endpoint", u.host or "localhost", u.port or 5432)
            if reach.health is not Health.OK:
                return [*rows, Row("database", reach.check, reach.health, reach.detail)]
        try:
            current = db.current_revision()
        except DrpError as err:
            return [*rows, Row("database", "endpoint", Health.UNREACHABLE, str(err))]
        rows.append(Row("database", "endpoint", Health.OK, f"{shown} is reachable"))
        head = expected_head()
        if current == head:
            rows.append(Row("database", "schema", Health.OK, f"at {head}"))
        else:
            state = "empty" if current is None else f"at {current}"
            rows.append(
                Row("database", "schema", Health.OUTDATED, f"{state}, expected {head}: run `drp db upgrade`")
            )
        return rows
    finally:
        db.dispose()


def backend_rows(catalogue: SiteCatalogue) -> list[Row]:
    rows: list[Row] = []
    probed: dict[tuple[str, str, str], list[Probe]] = {}  # one probe per back-end configuration
    try:
        reqs = list(requirements(catalogue))
    except ConfigError as err:
        return [Row("site catalogue", "back-ends", Health.CONFIG, str(err))]
    for req in reqs:
        component = req.what
        missing = [c for c in req.plugin.clients if not c.installed()]
        for client in req.plugin.clients:
            if client in missing:
                detail = f"{req.key}: module {client.module} is not installed: {client.install}"
                rows.append(Row(component, f"client {client.module}", Health.MISSING, detail))
            else:
                rows.append(
                    Row(component, f"client {client.module}", Health.OK, client.version() or "installed")
                )
        if missing:
            continue
        key = (req.plugin.kind.value, req.plugin.name, repr(sorted(req.settings.items())) + repr(req.roots))
        if key not in probed:
            try:
                probed[key] = _probe(catalogue, req)
            except DrpError as err:
                probed[key] = [Probe("settings", Health.CONFIG, f"{req.key}: {err}")]
        rows.extend(Row(component, p.check, p.health, p.detail) for p in probed[key])
        if not req.plugin.clients and not probed[key]:
            rows.append(Row(component, "configured", Health.OK, "no client or service to reach"))
    return rows


def _probe(catalogue: SiteCatalogue, req: Requirement) -> list[Probe]:
    """The back-end's own probe, through the registries (the doctor names no concrete back-end)."""
    if req.plugin.kind is Kind.COMPUTE:
        from sites.compute.registry import get_backend

        return get_backend(req.plugin.name, req.settings, catalogue.source).probe()
    if req.plugin.kind is Kind.MOVER:
        from transfer.movers.registry import get_mover

        mover = get_mover(req.plugin.name, req.settings)
        try:
            return mover.probe(req.roots)
        finally:
            mover.close()
    from transfer.replication.registry import get_replication

    return get_replication(catalogue, catalogue.source).probe()
