"""`drp jobs`: run one pipeline job, list jobs, their attempts, profiles and logs."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from bookkeeping.states import JobState

from .context import (
    STEP,
    DrpGroup,
    campaign_opt,
    checked_db,
    release_name_opt,
    site_root_opt,
)
from .render import emit_json, table


@click.group(cls=DrpGroup)
def jobs() -> None:
    """Pipeline jobs: run one (what every back-end runs), list them, show their profiles and logs."""


@jobs.command("run")
@click.argument("step", type=STEP, required=False)
@click.option("--data-id", "data_id", metavar="JSON", help="With STEP, e.g. '{\"visit\": 1000}'.")
@click.option("--job", "job_name", metavar="NAME", help="Instead of STEP and --data-id: a job name.")
@site_root_opt
@release_name_opt
@click.option("--json", "as_json", is_flag=True, help="Print the job result as JSON.")
def jobs_run(
    step: str | None,
    data_id: str | None,
    job_name: str | None,
    root: Path,
    release_name: str | None,
    as_json: bool,
) -> None:
    """Run one pipeline job. Exit 0 on success; 2 with one line naming the file on bad input."""
    from science.pipeline.jobs import Job, ReleaseContext, parse_data_id, run_job

    if (job_name is None) == (step is None or data_id is None):
        raise click.UsageError("give either STEP with --data-id, or --job NAME")
    job = Job.from_name(job_name) if job_name else Job(str(step), parse_data_id(str(data_id)))
    ctx = ReleaseContext.discover(root, release_name)
    result = run_job(ctx, ctx.check(job.step, job.data_id))
    if as_json:
        emit_json(result.to_dict())
    else:
        click.echo(
            f"{job.step} {json.dumps(result.data_id)}: done in {result.seconds:.2f} s "
            f"-> {', '.join(result.outputs)}"
        )


@jobs.command("ls")
@campaign_opt
@click.option("--site", default=None, help="Only this site.")
@click.option("--step", type=STEP, default=None, help="Only this step.")
@click.option("--state", type=click.Choice([s.name.lower() for s in JobState]), default=None)
@click.option("--limit", type=int, default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def jobs_ls(
    ctx: click.Context,
    campaign: str,
    site: str | None,
    step: str | None,
    state: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List a campaign's jobs from bookkeeping with state and attempts."""
    from bookkeeping.jobs import list_jobs
    from science.pipeline.jobs import job_name

    with checked_db(ctx).session() as session:
        rows = list_jobs(
            session,
            campaign,
            site=site,
            step=step,
            state=JobState[state.upper()] if state else None,
            limit=limit,
            name_of=job_name,
        )
    if as_json:
        emit_json([asdict(r) for r in rows])
        return
    table(
        None,
        ["job", "site", "state", "attempts", "memory MB"],
        [[r.name, r.site, r.state.lower(), r.attempts, r.request_memory_mb or ""] for r in rows],
    )


@jobs.command("show")
@campaign_opt
@click.argument("name")
@click.option("--site", default=None, help="Only this site.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def jobs_show(ctx: click.Context, campaign: str, name: str, site: str | None, as_json: bool) -> None:
    """One job and every attempt: exit status, CPU, memory, I/O, host, error."""
    from bookkeeping.jobs import job_detail
    from science.pipeline.jobs import Job, job_name

    job = Job.from_name(name)
    with checked_db(ctx).session() as session:
        details = job_detail(session, campaign, job.step, job.data_id, site=site, name_of=job_name)
    if as_json:
        emit_json([d.to_dict() for d in details])
        return
    for d in details:
        j = d.job
        click.echo(f"{j.name} at {j.site}: {j.state.lower()}, {j.attempts} attempt(s), data id {j.data_id}")
        table(
            None,
            [
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
            ],
            [
                [
                    a.number,
                    a.exit_code if a.signal is None else f"sig {a.signal}",
                    _num(a.wall_seconds, ".2f"),
                    _num(a.cpu_user, ".2f"),
                    _num(a.cpu_sys, ".2f"),
                    _num(a.peak_rss and a.peak_rss / 2**20, ".1f"),
                    _num(a.read_bytes and a.read_bytes / 2**20, ".1f"),
                    _num(a.write_bytes and a.write_bytes / 2**20, ".1f"),
                    a.host or "",
                    a.error or "",
                ]
                for a in d.attempts
            ],
        )


def _num(v: float | None, fmt: str) -> str:
    return "" if v is None else format(v, fmt)


@jobs.command("profile")
@campaign_opt
@click.option("--site", default=None, help="Only this site.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def jobs_profile(ctx: click.Context, campaign: str, site: str | None, as_json: bool) -> None:
    """Resource use per site and step: wall time, CPU, efficiency, peak memory, I/O."""
    from bookkeeping.jobs import step_profiles

    with checked_db(ctx).session() as session:
        rows = step_profiles(session, campaign, site=site)
    if as_json:
        emit_json([asdict(r) for r in rows])
        return
    table(
        f"campaign {campaign}: attempts by site and step",
        [
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
        ],
        [
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
        ],
    )


@jobs.command("logs")
@campaign_opt
@click.argument("name")
@click.option("--site", default=None, help="Site (needed when the job runs at several).")
@click.option("--attempt", type=int, default=None, help="Attempt number (default: the latest).")
@click.option("--stream", type=click.Choice(["stderr", "stdout", "both"]), default="both", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (paths and contents).")
@click.pass_context
def jobs_logs(
    ctx: click.Context,
    campaign: str,
    name: str,
    site: str | None,
    attempt: int | None,
    stream: str,
    as_json: bool,
) -> None:
    """Print the stdout/stderr of a job's attempt (from the paths in its job report)."""
    from bookkeeping.jobs import job_detail
    from instrumentation.profiler import read_report
    from science.pipeline.jobs import Job, job_name

    job = Job.from_name(name)
    with checked_db(ctx).session() as session:
        details = job_detail(session, campaign, job.step, job.data_id, site=site, name_of=job_name)
    if len(details) > 1:
        raise click.UsageError(f"{name} runs at {', '.join(d.job.site for d in details)}: pass --site")
    attempts = details[0].attempts
    chosen = [a for a in attempts if attempt is None or a.number == attempt]
    if not chosen or chosen[-1].report_path is None:
        raise click.UsageError(f"{name}: no recorded attempt {attempt or ''}".rstrip())
    report = read_report(Path(str(chosen[-1].report_path)))
    out: dict[str, Any] = {"job": name, "attempt": report.attempt}
    for which, path in (("stdout", report.stdout_path), ("stderr", report.stderr_path)):
        if stream in (which, "both"):
            try:
                text = Path(path).read_text(errors="replace")
            except OSError as err:
                text = f"(log not readable: {err.strerror}; tail from the report follows)\n" + getattr(
                    report, f"{which}_tail"
                )
            out[which] = {"path": path, "text": text}
    if as_json:
        emit_json(out)
        return
    for which in ("stdout", "stderr"):
        if which in out:
            click.echo(f"==> {out[which]['path']} <==")
            click.echo(out[which]["text"].rstrip("\n"))
