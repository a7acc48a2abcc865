"""`drp jobs`: run one pipeline job, list jobs, their attempts, profiles and logs."""

from __future__ import annotations

from pathlib import Path

import click

from bookkeeping.states import JobState

from . import render
from .context import (
    STEP,
    DrpGroup,
    campaign_opt,
    checked_db,
    json_opt,
    release_name_opt,
    site_root_opt,
)


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
    from science.pipeline.jobs import run_named_job

    if (job_name is None) == (step is None or data_id is None):
        raise click.UsageError("give either STEP with --data-id, or --job NAME")
    result = run_named_job(root, release_name, job_name, step, data_id)
    render.job_run(result.step, result, as_json)


@jobs.command("ls")
@campaign_opt
@click.option("--site", default=None, help="Only this site.")
@click.option("--step", type=STEP, default=None, help="Only this step.")
@click.option("--state", type=click.Choice([s.name.lower() for s in JobState]), default=None)
@click.option("--limit", type=int, default=1000, show_default=True)
@json_opt
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
    from drp.jobs import list_jobs

    chosen = JobState[state.upper()] if state else None
    rows = list_jobs(checked_db(ctx), campaign, site=site, step=step, state=chosen, limit=limit)
    render.job_list(rows, as_json)


@jobs.command("show")
@campaign_opt
@click.argument("name")
@click.option("--site", default=None, help="Only this site.")
@json_opt
@click.pass_context
def jobs_show(ctx: click.Context, campaign: str, name: str, site: str | None, as_json: bool) -> None:
    """One job and every attempt: exit status, CPU, memory, I/O, host, error."""
    from drp.jobs import job_detail

    render.job_details(job_detail(checked_db(ctx), campaign, name, site=site), as_json)


@jobs.command("profile")
@campaign_opt
@click.option("--site", default=None, help="Only this site.")
@json_opt
@click.pass_context
def jobs_profile(ctx: click.Context, campaign: str, site: str | None, as_json: bool) -> None:
    """Resource use per site and step: wall time, CPU, efficiency, peak memory, I/O."""
    from drp.jobs import step_profiles

    render.step_profiles(campaign, step_profiles(checked_db(ctx), campaign, site=site), as_json)


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
    from drp.jobs import job_logs

    out = job_logs(checked_db(ctx), campaign, name, site=site, attempt=attempt, stream=stream)
    render.job_logs(out, as_json)
