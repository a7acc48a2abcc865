#!/usr/bin/env bash
# The demo campaign with the satellite's DAG run by HTCondor's DAGMan: installs the pool's chroot
# (as `make test` does), starts the pool on 127.0.0.1 and runs `drp demo --satellite-compute …` with
# the lead on the local executor. Extra arguments go to scripts/htcondor_demo.py.
set -euo pipefail
cd "$(dirname "$0")/.."
make --no-print-directory .venv/.satdrp-test-installed htcondor-pool
exec .venv/bin/python scripts/htcondor_demo.py "$@"
