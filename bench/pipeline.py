"""Pipeline benchmark: CPU seconds and peak memory per megapixel for each step on the demo release.

Generates the default demo release (``ReleaseConfig()``) in a temporary directory, then runs every
job of every step in a forked child of this process (modules already imported, as a pre-loaded
worker runs them); the child reports its CPU time and the peak memory the job added. Megapixels
are the image pixels a job processes: raw pixels for calibrate, output patch pixels for warp, input
warp pixels for coadd, coadd pixels for measure (merge reads tables; it is reported per 1,000 objects).

Baseline (same process): reading each step's FITS inputs with astropy and nothing else; ``ratio=``
is the step's CPU over that read time, i.e. how much work a step does beyond its I/O floor. Also
prints the CPU a fresh ``drp jobs run`` process spends before any work (interpreter and imports):
the cost per job when a back-end runs each job in its own process.

Target (issue 3): the whole demo release in under 3 minutes of CPU on this 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import pyarrow.parquet as pq
from astropy.io import fits

from science.pipeline.jobs import STEPS, Job, ReleaseContext, run_job
from science.synth import ReleaseConfig, generate_release


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _run_measured(ctx: ReleaseContext, job: Job) -> tuple[float, float, float]:
    """(cpu seconds, wall seconds, peak extra MiB) of one job run in a forked child of this process.

    The child measures itself: CPU from ``getrusage`` around the job, and its resident-memory high-water
    mark at the end minus its resident size at the start (in-process figures would be wrong: freed
    heap stays resident and is reused by the next job).
    """
    r, w = os.pipe()
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child: run, report, exit without returning into the parent's stack
        code = 0
        try:
            os.close(r)
            base = _status_kb("VmRSS")
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            run_job(ctx, job)
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
            os.write(w, json.dumps([cpu, (_status_kb("VmHWM") - base) / 1024]).encode())
        except BaseException as err:
            print(f"job {job.name} failed: {err}", file=sys.stderr)
            code = 1
        os._exit(code)
    os.close(w)
    _, status, _ = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    with os.fdopen(r) as f:
        report = f.read()
    if status != 0 or not report:
        raise SystemExit(f"job {job.name} failed")
    cpu, peak = json.loads(report)
    return float(cpu), wall, float(peak)


def _fork_cpu() -> float:
    """CPU a forked child of this process spends to start and exit doing nothing."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    _, _, usage = os.wait4(pid, 0)
    return usage.ru_utime + usage.ru_stime


def _pixels(ctx: ReleaseContext, job: Job) -> float:
    """Megapixels (or thousands of objects for merge) a job processes."""
    ins, outs = ctx.io(job)
    if job.step == "merge":
        return sum(pq.read_metadata(ctx.root / p).num_rows for p in ins) / 1000
    files = outs[:1] if job.step == "warp" else ins[:1] if job.step == "calibrate" else ins
    total = 0
    for p in files:
        with fits.open(ctx.root / p) as hdul:
            h = hdul["IMAGE"].header if "IMAGE" in hdul else hdul[0].header
            total += int(h["NAXIS1"]) * int(h["NAXIS2"])
    return total / 1e6


def _read_inputs(ctx: ReleaseContext, job: Job) -> float:
    start = time.process_time()
    for p in ctx.io(job)[0]:
        if p.suffix == ".fits":
            with fits.open(ctx.root / p, memmap=False) as hdul:
                for h in hdul:
                    if h.data is not None:
                        np.asarray(h.data).sum()
        else:
            pq.read_table(ctx.root / p)
    return time.process_time() - start


def _job_process_overhead(root: Path) -> float:
    """CPU of `drp jobs run --help`-equivalent start-up: the interpreter plus the step imports."""
    code = (
        "import cli, science.pipeline.jobs, science.pipeline.calibrate, science.pipeline.warp, "
        "science.pipeline.coadd, science.pipeline.measure, science.pipeline.merge"
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=None, help="Keep the release here (default: a temp dir).")
    ap.add_argument("--json", action="store_true", help="Print one JSON document instead of lines.")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="drp-bench-") as tmp:
        root = args.workdir or Path(tmp)
        cfg = ReleaseConfig()
        t0 = time.process_time()
        generate_release(cfg, root)
        gen_cpu = time.process_time() - t0
        ctx = ReleaseContext(root, cfg.name)
        results: dict[str, Any] = {"release": cfg.name, "generate_cpu_s": round(gen_cpu, 2), "steps": {}}
        total_cpu = 0.0
        n_jobs = 0
        for step in STEPS:
            jobs = list(ctx.jobs(steps=(step,)))
            cpu = wall = peak = read = units = peak_per_unit = 0.0
            for job in jobs:
                read += _read_inputs(ctx, job)
                c, wl, pk = _run_measured(ctx, job)
                u = _pixels(ctx, job)
                cpu, wall, peak, units = cpu + c, wall + wl, max(peak, pk), units + u
                peak_per_unit = max(peak_per_unit, pk / u) if u else peak_per_unit
            total_cpu += cpu
            n_jobs += len(jobs)
            unit = "kobj" if step == "merge" else "Mpx"
            results["steps"][step] = {
                "jobs": len(jobs),
                "cpu_s": round(cpu, 3),
                "wall_s": round(wall, 3),
                unit: round(units, 3),
                f"cpu_s_per_{unit}": round(cpu / units, 4) if units else None,
                "peak_extra_mib_max": round(peak, 1),
                f"peak_mib_per_{unit}_max": round(peak_per_unit, 1),
                "baseline_read_s": round(read, 3),
                "ratio": round(cpu / read, 2) if read else None,
            }
        overhead = _job_process_overhead(root)
        fork = _fork_cpu()
        results.update(
            {
                "fork_cpu_s": round(fork, 4),
                "jobs": n_jobs,
                "pipeline_cpu_s": round(total_cpu, 2),
                "job_process_startup_cpu_s": round(overhead, 3),
                "pipeline_cpu_s_one_process_per_job": round(total_cpu + n_jobs * overhead, 1),
                "target_cpu_s": 180,
            }
        )
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"demo release {cfg.name}: generated in {gen_cpu:.1f} s CPU; {n_jobs} jobs")
    for step, r in results["steps"].items():
        unit = "kobj" if step == "merge" else "Mpx"
        print(
            f"{step:9s} jobs={r['jobs']:4d} cpu={r['cpu_s']:7.2f}s {unit}={r[unit]:8.2f} "
            f"cpu/{unit}={r[f'cpu_s_per_{unit}']:.4f}s peak/{unit}={r[f'peak_mib_per_{unit}_max']:.1f}MiB "
            f"peak_job_max={r['peak_extra_mib_max']:.1f}MiB baseline_read={r['baseline_read_s']:.2f}s "
            f"ratio={r['ratio']}"
        )
    print(
        f"pipeline cpu={total_cpu:.1f}s (target < 180 s); job process start-up {overhead:.2f}s CPU each -> "
        f"{results['pipeline_cpu_s_one_process_per_job']:.0f}s if every job is its own process; "
        f"fork of a preloaded worker {fork * 1000:.0f} ms CPU"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
