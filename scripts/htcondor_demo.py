"""Run the demo campaign with the satellite (in2p3) on an HTCondor pool (used by scripts/demo-htcondor.sh).

Starts the single-node pool of tests/htcondor_pool.py (HTCondor 23.9 in a chroot, jobs as an
unprivileged user), writes a [compute] file for it and runs `drp demo --satellite-compute FILE`; the
lead (ncsa) keeps the local executor. The pool is stopped at the end. The work directory must be
outside /tmp (DAGMan refuses DAGs there) and is bind-mounted into the pool's chroot.

    .venv/bin/python scripts/htcondor_demo.py [--small] [--workdir /srv/satdrp-condor-work/demo]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.htcondor_pool import CondorPool, installed  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="the 2-tract demo release")
    ap.add_argument("--workdir", type=Path, default=Path("/srv/satdrp-condor-work/demo"))
    args = ap.parse_args()
    if os.geteuid() != 0 or not installed():
        print(
            "htcondor_demo: needs root and the pool's chroot: run `make htcondor-pool` as root",
            file=sys.stderr,
        )
        return 2
    workdir = args.workdir.resolve()
    if str(workdir).startswith("/tmp/"):
        print("htcondor_demo: DAGMan refuses DAGs under /tmp: choose another --workdir", file=sys.stderr)
        return 2
    pool_dir = workdir.parent / (workdir.name + "-pool")
    pool = CondorPool(pool_dir, binds=(workdir.parent,))
    try:
        pool.start()
        compute = pool_dir / "htcondor.toml"
        compute.write_text(
            "[compute]\n"
            'backend = "htcondor"\n'
            'schedd = "127.0.0.1:9618"\n'
            "dagman = \"/usr/bin/condor_dagman\"  # on the schedd's host: the pool's chroot\n"
            f'job_user = "{pool.uid}"\n'
            'batch_name = "satdrp-demo-in2p3"\n'
            "poll_interval_s = 1.0\n"
        )
        cmd = [
            sys.executable,
            "-m",
            "cli",
            "demo",
            "--workdir",
            str(workdir),
            "--satellite-compute",
            str(compute),
        ]
        if args.small:
            cmd.append("--small")
        return subprocess.run(cmd, cwd=ROOT, env={**os.environ, **pool.env()}, check=False).returncode
    finally:
        pool.stop()


if __name__ == "__main__":
    sys.exit(main())
