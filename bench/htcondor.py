"""DAGMan on the real pool against the local back-end, on the same DAG.

Prints the DAG's submit-to-first-job latency, jobs/s over the whole DAG (submit to last job end) and
the ratio HTCondor/local, and the profiler's figures for the jobs HTCondor ran (wall, CPU, peak RSS).
Every job is the profiled ``/bin/true``, so the figures are the back-ends' own overheads. Needs root
and the pool's chroot (``make htcondor-pool``).

    .venv/bin/python bench/htcondor.py [--runs 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from instrumentation.profiler import JobReport, read_report  # noqa: E402
from science.layout import Layout  # noqa: E402
from science.pipeline.jobs import ReleaseContext  # noqa: E402
from science.synth import ReleaseConfig, plan_manifest  # noqa: E402
from science.workflow import WorkflowSpec, write_workflow  # noqa: E402
from sites.compute import RunState, get_backend  # noqa: E402
from tests.htcondor_pool import CondorPool, installed  # noqa: E402

SLOTS = 4


def _spec(base: Path) -> WorkflowSpec:
    shutil.rmtree(base, ignore_errors=True)
    ctx = ReleaseContext(base / "root", "plan", plan_manifest(ReleaseConfig(name="plan")))
    spec = write_workflow(ctx, "in2p3", [0], base / "wf")
    for n in spec.nodes():  # outputs in place: /bin/true "produces" them
        for o in n.outputs:
            (spec.root / o).parent.mkdir(parents=True, exist_ok=True)
            (spec.root / o).write_bytes(b"x")
    return spec


def _reports(spec: WorkflowSpec) -> list[JobReport]:
    layout = Layout(spec.release)
    steps = {n.step for n in spec.nodes()}
    return [read_report(p) for s in steps for p in (spec.root / layout.job_dir(s)).glob("*.json")]


def run(name: str, settings: dict[str, object], base: Path) -> dict[str, float]:
    spec = _spec(base)
    be = get_backend(name, settings)
    t0 = time.time()
    report = be.submit(spec, wait=True)
    if report.state is not RunState.SUCCEEDED:
        raise SystemExit(f"{name}: {report}")
    reports = _reports(spec)
    n = len(reports)
    first = min(r.started_at for r in reports)
    last = max(r.ended_at for r in reports)
    return {
        "jobs": n,
        "latency_s": first - t0,
        "seconds": last - t0,
        "jobs_per_s": n / (last - t0),
        "wall_median_s": statistics.median(r.wall_seconds for r in reports),
        "cpu_median_s": statistics.median(r.usage.cpu_user + r.usage.cpu_sys for r in reports),
        "rss_median_mib": statistics.median(r.usage.peak_rss_bytes for r in reports) / 2**20,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("/srv/satdrp-condor-work/bench"))
    args = ap.parse_args()
    if os.geteuid() != 0 or not installed():
        print("bench/htcondor.py: needs root and the pool (make htcondor-pool)", file=sys.stderr)
        return 2
    pool = CondorPool(args.work, cpus=SLOTS)
    try:
        pool.start()
        os.environ.update(pool.env())
        import htcondor2

        htcondor2.reload_config()
        condor = {
            "schedd": "127.0.0.1:9618",
            "dagman": "/usr/bin/condor_dagman",
            "job_user": str(pool.uid),
            "poll_interval_s": 0.2,
            "command": ["/bin/true"],
        }
        local = {"max_workers": SLOTS, "preload": False, "command": ["/bin/true"]}
        print(f"load average {os.getloadavg()[0]:.2f}; {SLOTS} slots / workers; profiled /bin/true jobs")
        for i in range(args.runs):
            c = run("htcondor", condor, args.work / f"c{i}")
            loc = run("local", local, args.work / f"l{i}")
            print(
                f"run {i + 1}: {c['jobs']:.0f} jobs  htcondor {c['jobs_per_s']:.2f} jobs/s "
                f"(first job {c['latency_s']:.2f} s after submit, DAG {c['seconds']:.1f} s)  "
                f"local {loc['jobs_per_s']:.1f} jobs/s (first job {loc['latency_s']:.3f} s)  "
                f"ratio={c['jobs_per_s'] / loc['jobs_per_s']:.3f}"
            )
            print(
                f"       profiler, HTCondor jobs: median wall {c['wall_median_s'] * 1000:.1f} ms, "
                f"CPU {c['cpu_median_s'] * 1000:.1f} ms, peak RSS {c['rss_median_mib']:.1f} MiB "
                f"(local: {loc['wall_median_s'] * 1000:.1f} ms, {loc['cpu_median_s'] * 1000:.1f} ms, "
                f"{loc['rss_median_mib']:.1f} MiB)"
            )
    finally:
        pool.stop()
        shutil.rmtree(args.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
