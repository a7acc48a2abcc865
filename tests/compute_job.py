"""A stand-in job for the compute contract suite: ``python tests/compute_job.py PLAN JOB``.

It behaves as PLAN (JSON) says for JOB, then writes JOB's outputs, so every back-end runs the same
scenario: ``fail``: {job: [runs, exit code]}, ``signal``: {job: [runs, signal]}, ``memory_mb``:
{job: [runs, MB held for ``hold_s``]} — each for the job's first ``runs`` runs; ``sleep``: {job: s} or
``sleep_all``; ``cpu_s``: {job: s} of busy loop. Each run appends a line to ``STATE/JOB.runs``.
It runs inside the HTCondor pool as an unprivileged user: nothing here may need root.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def main(plan_path: str, job: str) -> int:
    plan = json.loads(Path(plan_path).read_text())
    runs_file = Path(plan["state"]) / f"{job}.runs"
    with open(runs_file, "a") as f:
        f.write(f"{os.getpid()}\n")
    run = len(runs_file.read_text().splitlines())
    time.sleep(plan.get("sleep", {}).get(job, plan.get("sleep_all", 0)))
    busy = plan.get("cpu_s", {}).get(job, 0)
    end = time.process_time() + busy
    while time.process_time() < end:
        pass
    if job in plan.get("memory_mb", {}):
        runs, mb = plan["memory_mb"][job]
        if run <= runs:
            block = bytearray(mb * 2**20)
            for i in range(0, len(block), 4096):  # touch every page: resident, not just reserved
                block[i] = 1
            time.sleep(plan.get("hold_s", 8))
            del block
    if job in plan.get("signal", {}):
        runs, sig = plan["signal"][job]
        if run <= runs:
            os.kill(os.getpid(), sig)
    if job in plan.get("fail", {}):
        runs, code = plan["fail"][job]
        if run <= runs:
            print(f"{job}: failing on purpose (run {run}, exit {code})", file=sys.stderr)
            return int(code)
    for out in plan["outputs"].get(job, []):
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_bytes(job.encode())
    print(f"{job}: done (run {run})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
