"""Rendering of data, rules, transfers and disaster recovery."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import click

from ._base import emit_json, ranges, table


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


def pct(n: int, total: int) -> str:
    return f"{n:,} ({100 * n / total:.1f}%)" if total else "-"


def dr_status(st: Any, as_json: bool) -> None:
    if as_json:
        emit_json(st.to_dict())
    else:
        sites = sorted(st.sites)
        table(
            "verified replicas (AVAILABLE) per site",
            ["release", "type", "files", "GiB", *sites],
            [
                [t.scope, t.type, f"{t.files:,}", f"{t.bytes / 2**30:,.2f}"]
                + [pct(t.available.get(x, 0), t.files) for x in sites]
                for t in st.types
            ],
        )
        down = [x for x, ok in st.sites.items() if not ok]
        if down:
            click.echo(f"failed over (unavailable): {', '.join(down)}")
        click.echo(
            f"{st.files:,} files: {st.single_copy:,} with a single verified copy "
            f"({', '.join(f'{k} {v:,}' for k, v in st.single_copy_at.items()) or 'none'}), "
            f"{st.no_copy:,} with none"
        )
        for name, where in st.examples:
            click.echo(f"  {name}: {where}")
        if st.unrecoverable:
            click.echo(
                f"{len(st.unrecoverable):,} unrecoverable (no verified copy anywhere; the damaged replicas "
                "are kept on disk until an operator acts):"
            )
            for name, where in st.unrecoverable:
                click.echo(f"  {name}: {where}")


def audit(report: Any, as_json: bool) -> None:
    if as_json:
        emit_json(report.to_dict())
    else:
        counts = report.to_dict()["counts"]
        rate = report.bytes_read / 2**20 / report.seconds if report.seconds else 0.0
        click.echo(
            f"audit {report.audit_id or '(dry run)'} of {report.site}: {report.checked:,} of "
            f"{report.catalogued:,} catalogued replicas checked"
            + (
                f", {report.bytes_read / 2**20:,.1f} MiB checksummed ({rate:,.0f} MiB/s)"
                if report.checksums
                else ""
            )
            + f" in {report.seconds:.1f} s: {counts['LOST']} lost, {counts['CORRUPT']} corrupt, "
            f"{counts['DARK']} dark, {counts['TEMP']} temporar{'y' if counts['TEMP'] == 1 else 'ies'}"
        )
        if report.findings:
            table(
                None,
                ["kind", "file", "reason", "action"],
                [[f.kind.value, f.name, f.reason, f.action or ""] for f in report.findings[:200]],
            )
        if len(report.findings) > 200:
            click.echo(f"  … {len(report.findings) - 200} more (--json lists all)")
        if report.outside:
            click.echo(
                "not judged (no catalogued files of these types here): "
                + ", ".join(f"{k} ({v:,})" for k, v in report.outside.items())
            )


def recovery(report: Any, as_json: bool) -> None:
    if as_json:
        emit_json(report.to_dict())
    else:
        verb = "would re-copy" if report.dry_run else "recovered"
        done = report.to_recover if report.dry_run else report.recovered
        click.echo(
            f"{report.site}: {verb} {done:,} of {report.to_recover:,} replicas"
            + ("" if report.dry_run else f" ({report.bytes / 2**20:,.1f} MiB), {report.pending:,} pending")
            + f"; {len(report.unrecoverable):,} unrecoverable, {len(report.failed):,} failed"
        )
        for name, why in report.unrecoverable[:50]:
            click.echo(f"  UNRECOVERABLE {name}: {why}")
        for name, why in report.failed[:50]:
            click.echo(f"  FAILED {name}: {why}")


def replication(report: Any, as_json: bool) -> None:
    if as_json:
        emit_json(report.to_dict())
    else:
        click.echo(
            f"{report.site}: {report.missing_files:,} files ({report.missing_bytes / 2**30:,.2f} GiB) of "
            f"{report.datasets:,} datasets were missing"
            + (
                ""
                if report.dry_run
                else f"; {report.rules_added:,} rules added, {report.copied:,} copied, "
                f"{report.failed:,} given up, {report.pending:,} still missing"
            )
        )
        for line in report.unreachable[:20]:
            click.echo(f"  STUCK {line}")


def failover(report: Any, as_json: bool) -> None:
    if as_json:
        emit_json(report.to_dict())
        return
    prefix = "(dry run) " if report.dry_run else ""
    click.echo(
        f"{prefix}{report.action} {report.from_site} → {report.to_site}: "
        f"{len(report.tracts_moved)} tract(s) move ({ranges(report.tracts_moved) or 'none'}), "
        f"{len(report.tracts_kept)} stay ({ranges(report.tracts_kept) or 'none'})"
    )
    if not report.dry_run:
        click.echo(
            f"  split plan v{report.plan_version}; {len(report.rules_replaced)} rule(s) replaced, "
            f"{report.transfers_cancelled} queued copies and {report.jobs_cancelled} jobs cancelled; "
            f"campaign {report.state_before} → {report.state_after}"
        )
