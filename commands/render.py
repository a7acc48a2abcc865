"""Output, in one place: JSON for scripts, tables and lines for people."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import click


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Table(title=title)
    for col in columns:
        out.add_column(
            col, justify="right" if col in ("share", "files", "bytes", "jobs", "transfers") else "left"
        )
    for row in rows:
        out.add_row(*(f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v) for v in row))
    Console(soft_wrap=True).print(out)


def ranges(values: list[int]) -> str:
    """1,2,3,7 -> '1-3,7' (tract lists can be long)."""
    out: list[str] = []
    for v in values:
        if out and "-" not in out[-1].split(",")[-1] and int(out[-1].split(",")[-1]) == v - 1:
            out[-1] += f"-{v}"
        elif out and "-" in out[-1] and int(out[-1].rsplit("-", 1)[1]) == v - 1:
            out[-1] = out[-1].rsplit("-", 1)[0] + f"-{v}"
        else:
            out.append(str(v))
    return ",".join(out)


def num(v: float | None, fmt: str) -> str:
    return "" if v is None else format(v, fmt)


def mib(v: float | None, fmt: str = ".1f") -> str:
    return num(v and v / 2**20, fmt)


# --- jobs ------------------------------------------------------------------------------------------------
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


# --- campaigns -------------------------------------------------------------------------------------------
def tick(result: Any, as_json: bool) -> None:
    if as_json:
        emit_json(result.to_dict())
    elif result.before == result.after:
        click.echo(f"{result.campaign} [{result.after}] {result.message}")
    else:
        click.echo(f"{result.campaign} {result.before} → {result.after}: {result.message}")


def report(result: Any, as_json: bool) -> None:
    if as_json:
        emit_json({**result.data, "html": str(result.html)})
    else:
        click.echo(str(result.html))


def when(ts: float | None) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def campaign_status(status: Any, as_json: bool) -> None:
    if as_json:
        emit_json(status.to_dict())
        return
    title = f"campaign {status.campaign} [{status.state}]"
    if status.message:
        click.echo(f"{title}: {status.message}")
    if status.phases:
        table(
            "phases",
            ["phase", "started", "seconds", "ticks", "failures", "last message"],
            [
                [
                    p.phase,
                    when(p.started_at),
                    f"{p.seconds:.1f}",
                    p.ticks,
                    p.failures,
                    (p.message or "")[:80],
                ]
                for p in status.phases
            ],
        )
    if status.steps:
        table(
            "attempts by site and step",
            ["site", "step", "attempts", "failed", "first start", "seconds"],
            [
                [
                    st.site,
                    st.step,
                    st.attempts,
                    st.failed_attempts,
                    when(st.started_at),
                    f"{st.seconds:.1f}" if st.seconds is not None else "-",
                ]
                for st in status.steps
            ],
        )
    if status.validations:
        table(
            "overlap validation",
            ["tract", "sites", "checks", "failed"],
            [[v.tract, v.sites, v.checks, v.failed] for v in status.validations],
        )
    table(
        f"{title}: files by site and replica state",
        ["site", "state", "files", "bytes"],
        [[r.site, r.state, r.files, r.bytes] for r in status.replicas],
    )
    if status.jobs:
        table(
            "jobs by site, step and state",
            ["site", "step", "state", "jobs"],
            [[j.site, j.step, j.state, j.jobs] for j in status.jobs],
        )
    if status.transfers:
        table(
            "transfers by link and state",
            ["source", "dest", "state", "transfers", "bytes"],
            [[t.source, t.dest, t.state, t.transfers, t.bytes] for t in status.transfers],
        )


# --- data, rules, transfers ------------------------------------------------------------------------------
def registered(dataset: str, site: str, result: Any, as_json: bool) -> None:
    if as_json:
        emit_json(asdict(result))
    else:
        click.echo(f"{dataset}: {result.n_files:,} files ({result.n_bytes:,} bytes) registered at {site}")


def datasets(rows: list[Any], as_json: bool) -> None:
    if as_json:
        emit_json([asdict(r) for r in rows])
        return

    def other(r: Any) -> str:
        return "; ".join(f"{s} " + ", ".join(f"{k} {v}" for k, v in st.items()) for s, st in r.other.items())

    available = [", ".join(f"{s} {n}" for s, n in sorted(r.available.items())) for r in rows]
    table(
        None,
        ["dataset", "files", "bytes", "available at", "other"],
        [
            [r.dataset, r.files, r.bytes, a or "-", other(r) or "-"]
            for r, a in zip(rows, available, strict=True)
        ],
    )


REPLICA_COLUMNS = ["file", "site", "state", "bytes", "adler32"]


def replicas(rows: list[Any], as_json: bool) -> None:
    if as_json:
        emit_json([dict(zip(REPLICA_COLUMNS, r, strict=True)) for r in rows])
    else:
        table(None, REPLICA_COLUMNS, [list(r) for r in rows])


def rule_dict(r: Any) -> dict[str, Any]:
    return {**asdict(r), "state": r.state.name}


def rule_added(info: Any, as_json: bool) -> None:
    if as_json:
        emit_json(rule_dict(info))
    else:
        click.echo(f"rule {info.id}: {info.dataset} → {', '.join(info.sites) or '-'} [{info.state.name}]")


def rules(rows: list[Any], as_json: bool) -> None:
    if as_json:
        emit_json([rule_dict(r) for r in rows])
        return
    columns = ["id", "dataset", "expression", "sites", "state", "ok", "replicating", "stuck", "reason"]
    body = [
        [
            r.id,
            r.dataset,
            r.expression,
            ",".join(r.sites),
            r.state.name,
            r.locks_ok,
            r.locks_replicating,
            r.locks_stuck,
            r.stuck_reason or "",
        ]
        for r in rows
    ]
    table(None, columns, body)


def rule_detail(info: Any, pending: list[Any], as_json: bool) -> None:
    if as_json:
        emit_json({**rule_dict(info), "transfers_not_done": [asdict(t) for t in pending]})
        return
    click.echo(f"rule {info.id}: {info.dataset} → {info.expression} ×{info.copies}")
    click.echo(f"  state     {info.state.name}")
    click.echo(f"  sites     {', '.join(info.sites) or '-'}")
    click.echo(
        f"  locks     {info.locks_ok} ok, {info.locks_replicating} replicating, {info.locks_stuck} stuck"
    )
    if info.stuck_reason:
        click.echo(f"  reason    {info.stuck_reason}")
    for t in pending[:20]:
        click.echo(f"  transfer {t.id} {t.file} {t.source}→{t.dest} {t.state} ×{t.attempts} {t.error or ''}")
    if len(pending) > 20:
        click.echo(f"  … and {len(pending) - 20} more transfers not done (--json lists all)")


def engine_report(report: Any, as_json: bool) -> None:
    if as_json:
        emit_json(asdict(report))
        return
    click.echo(
        f"{report.done:,} copied ({report.bytes_done / 2**20:,.1f} MiB), {report.retried:,} retried, "
        f"{report.failed:,} given up, {report.pending:,} pending"
    )
    for e in report.errors[:5]:
        click.echo(f"  error: {e}", err=True)


def transfers(rows: list[Any], as_json: bool) -> None:
    if as_json:
        emit_json([asdict(r) for r in rows])
        return
    columns = ["id", "file", "link", "state", "attempts", "bytes", "seconds", "error"]
    body = [
        [
            r.id,
            r.file,
            f"{r.source}→{r.dest}",
            r.state,
            r.attempts,
            r.bytes,
            f"{r.seconds:.2f}" if r.seconds is not None else "",
            r.error or "",
        ]
        for r in rows
    ]
    table(None, columns, body)
