"""Rendering of jobs."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

import click

from ._base import emit_json, mib, num, table
from .campaigns import replicas_and_jobs


def job_run(step: str, result: Any, as_json: bool) -> None:
    if as_json:
        emit_json(result.to_dict())
    else:
        outputs = ", ".join(result.outputs)
        click.echo(f"{step} {json.dumps(result.data_id)}: done in {result.seconds:.2f} s -> {outputs}")


def job_list(rows: list[Any], as_json: bool) -> None:
    if as_json:
        emit_json([asdict(r) for r in rows])
        return
    table(
        None,
        ["job", "site", "state", "attempts", "memory MB"],
        [[r.name, r.site, r.state.lower(), r.attempts, r.request_memory_mb or ""] for r in rows],
    )


ATTEMPT_COLUMNS = [
    "#",
    "exit",
    "wall s",
    "user s",
    "sys s",
    "peak RSS MiB",
    "read MiB",
    "write MiB",
    "host",
    "error",
]


def job_details(details: list[Any], as_json: bool) -> None:
    if as_json:
        emit_json([d.to_dict() for d in details])
        return
    for d in details:
        j = d.job
        click.echo(f"{j.name} at {j.site}: {j.state.lower()}, {j.attempts} attempt(s), data id {j.data_id}")
        rows = [
            [
                a.number,
                a.exit_code if a.signal is None else f"sig {a.signal}",
                num(a.wall_seconds, ".2f"),
                num(a.cpu_user, ".2f"),
                num(a.cpu_sys, ".2f"),
                mib(a.peak_rss),
                mib(a.read_bytes),
                mib(a.write_bytes),
                a.host or "",
                a.error or "",
            ]
            for a in d.attempts
        ]
        table(None, ATTEMPT_COLUMNS, rows)


PROFILE_COLUMNS = [
    "site",
    "step",
    "attempts",
    "failed",
    "wall mean s",
    "wall max s",
    "CPU s",
    "CPU/wall",
    "peak RSS max MiB",
    "read MiB",
    "write MiB",
]


def step_profiles(campaign: str, rows: list[Any], as_json: bool) -> None:
    if as_json:
        emit_json([asdict(r) for r in rows])
        return
    body = [
        [
            r.site,
            r.step,
            r.attempts,
            r.failed,
            f"{r.wall_mean_s:.2f}",
            f"{r.wall_max_s:.2f}",
            f"{r.cpu_s:.1f}",
            f"{r.cpu_efficiency:.2f}",
            f"{r.peak_rss_max / 2**20:.0f}",
            f"{r.read_bytes / 2**20:.1f}",
            f"{r.write_bytes / 2**20:.1f}",
        ]
        for r in rows
    ]
    table(f"campaign {campaign}: attempts by site and step", PROFILE_COLUMNS, body)


def job_logs(out: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(out)
        return
    for which in ("stdout", "stderr"):
        if which in out:
            click.echo(f"==> {out[which]['path']} <==")
            click.echo(out[which]["text"].rstrip("\n"))


def nodes(found: Iterable[Any], as_json: bool) -> None:
    """One line per DAG node (a stream: a million-job DAG is never held in memory)."""
    for node in found:
        if as_json:
            click.echo(node.to_json())
        else:
            click.echo(f"{node.name}\t{json.dumps(node.data_id, sort_keys=True)}\t{','.join(node.parents)}")


def run_state(report: Any, as_json: bool) -> None:
    if as_json:
        emit_json(report.to_dict())
    else:
        click.echo(f"{report.backend}: {report.state.value} {report.message}".rstrip())


def run(report: Any, ingested: Any, as_json: bool) -> None:
    if as_json:
        emit_json({"run": report.to_dict(), "ingested": ingested.to_dict()})
    else:
        rows = [[step, st, n] for step, c in report.counts.items() for st, n in c.items()]
        table(
            f"{report.backend} run {report.run_id or '-'}: {report.state.value}",
            ["step", "state", "jobs"],
            rows,
        )
        if report.message:
            click.echo(report.message)
        click.echo(f"ingested {ingested.attempts} new attempt(s)")
        for path in ingested.unreadable:
            click.echo(f"drp: warning: unreadable job report {path}", err=True)


def demo(result: Any, as_json: bool) -> None:
    status = result.status
    if as_json:
        out = asdict(result)
        out["status"] = status.to_dict() if status else None
        emit_json(out)
    else:
        click.echo(f"campaign         demo [{result.state}] in {result.seconds:.0f} s: {result.message}")
        click.echo(f"work directory   {result.workdir}")
        click.echo(f"site catalogue   {result.sites_file}")
        click.echo(f"campaign file    {result.campaign_file}")
        click.echo(f"bookkeeping      {result.db_url}")
        click.echo(
            f"files            {result.files:,} ({result.bytes / 2**20:,.1f} MiB) catalogued; verified at "
            + ", ".join(f"{s} {n:,}" for s, n in result.verified.items())
        )
        click.echo(f"jobs             {result.jobs:,} with {result.attempts:,} profiled attempts")
        click.echo(f"overlap checks   {result.validations_passed}/{result.validations} passed")
        click.echo(f"report           {result.report or '-'}")
        if status:
            replicas_and_jobs(status)
