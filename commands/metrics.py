"""`drp metrics`: the Prometheus exporter."""

from __future__ import annotations

import logging

import click

from .context import (
    DrpGroup,
    checked_db,
)


@click.group(cls=DrpGroup)
def metrics() -> None:
    """Prometheus metrics: a long-running exporter; ticks push their own (see `campaign tick --help`)."""


@metrics.command("serve")
@click.option(
    "--listen",
    default="127.0.0.1:9478",
    show_default=True,
    help="HOST:PORT to serve /metrics on (loopback unless you say otherwise).",
)
@click.option(
    "--refresh",
    "refresh_s",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds between recomputations of the job and transfer profiles (aggregates are read per scrape).",
)
@click.pass_context
def metrics_serve(ctx: click.Context, listen: str, refresh_s: float) -> None:
    """Serve bookkeeping's metrics for Prometheus until SIGINT/SIGTERM."""
    from instrumentation.exporter import serve

    logging.getLogger("drp.metrics").info("serving metrics on http://%s/metrics", listen)
    serve(checked_db(ctx), listen, refresh_s=refresh_s)
