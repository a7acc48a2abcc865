"""``drp metrics serve`` (a long-running exporter) and the metrics a cron tick pushes or writes.

The exporter serves bookkeeping's metrics (see :mod:`instrumentation.metrics`) on ``/metrics``,
bound to 127.0.0.1 unless told otherwise, and refreshes the job and transfer profiles in a
background thread. A tick, which exits after its step, pushes to a Pushgateway under the grouping
key (campaign, site: where the tick ran) and/or writes a node_exporter textfile atomically: the
campaign-level families and the tick's own duration, exit code and last success. The per-site
figures come from the exporter.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest, push_to_gateway, start_http_server
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from bookkeeping.database import Database
from common.atomic import write_bytes_atomic
from common.errors import ConfigError, DrpError
from common.permissions import PRIVATE, Modes, make_dir

from .metrics import BookkeepingCollector


class PushError(DrpError):
    """The Pushgateway refused or could not be reached (the tick itself is unaffected)."""


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError("--listen", None, f"expected HOST:PORT, e.g. 127.0.0.1:9478 (got {listen!r})")
    return host or "127.0.0.1", int(port)


def serve(db: Database, listen: str, *, refresh_s: float = 60.0, stop: threading.Event | None = None) -> None:
    """Serve until SIGINT/SIGTERM (or ``stop`` is set)."""
    host, port = parse_listen(listen)
    registry = CollectorRegistry(auto_describe=False)
    collector = BookkeepingCollector(db)
    registry.register(collector)
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as err:
        raise ConfigError("--listen", None, f"cannot listen on {host}:{port}: {err.strerror or err}") from err
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.is_set():
            try:
                collector.refresh_profiles()
            except DrpError:
                pass  # the database is away: scrapes say so; try again later
            stop.wait(refresh_s)
    finally:
        server.shutdown()
        thread.join(5)


class _CampaignLevel(Collector):
    """Only the campaign-level families (``drp_campaign_*``): they carry no ``site`` label, which the
    push's grouping key owns, and summing them with the exporter's copies cannot double-count."""

    def __init__(self, inner: BookkeepingCollector) -> None:
        self.inner = inner

    def collect(self) -> Iterator[Metric]:
        return (m for m in self.inner.collect() if m.name.startswith("drp_campaign_"))


def tick_registry(db: Database, campaign: str, result: Any, seconds: float) -> CollectorRegistry:
    """What one tick reports: the campaign's state and phases, plus the tick's duration and outcome."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_CampaignLevel(BookkeepingCollector(db, profiles=False, campaign=campaign)))
    Gauge("drp_tick_duration_seconds", "Wall time of the last tick", registry=registry).set(seconds)
    code = Gauge(
        "drp_tick_exit_code",
        "Exit code of the last tick (0 done, 3 in progress, 1 failed)",
        registry=registry,
    )
    code.set(result.exit_code)
    ok = Gauge(
        "drp_tick_last_success_timestamp_seconds", "When a tick last ended without failing", registry=registry
    )
    if result.exit_code != 1:
        ok.set(time.time())
    return registry


def push(
    registry: CollectorRegistry, gateway: str, campaign: str, site: str, *, timeout: float = 10.0
) -> None:
    try:
        push_to_gateway(
            gateway,
            job="drp_campaign_tick",
            registry=registry,
            grouping_key={"campaign": campaign, "site": site},
            timeout=timeout,
        )
    except OSError as err:
        raise PushError(f"cannot push metrics to {gateway}: {err}") from err


def write_textfile(registry: CollectorRegistry, path: Path, modes: Modes = PRIVATE) -> None:
    """node_exporter textfile format, written atomically with the operators' file mode (node_exporter
    reading it as another account needs ``--group-readable``)."""
    make_dir(path.parent, modes)
    write_bytes_atomic(path, generate_latest(registry), mode=modes.file)


class TickMetrics:
    """What a cron tick reports to Prometheus although its process exits: created before the tick
    (it times it), called after it; pushes to a Pushgateway and/or writes a textfile. Returns the
    warnings to print: a failed push never changes the tick's outcome."""

    def __init__(
        self, push_gateway: str | None, textfile: Path | None, site: str, *, modes: Modes = PRIVATE
    ) -> None:
        self.push_gateway, self.textfile, self.site = push_gateway, textfile, site
        self.modes = modes
        self.started = time.monotonic()

    def __call__(self, db: Database, campaign: str, result: Any) -> list[str]:
        if not (self.push_gateway or self.textfile):
            return []
        registry = tick_registry(db, campaign, result, time.monotonic() - self.started)
        if self.textfile:
            write_textfile(registry, self.textfile, self.modes)
        if self.push_gateway:
            try:
                push(registry, self.push_gateway, campaign, self.site)
            except PushError as err:
                return [str(err)]
        return []
