#!/usr/bin/env bash
# The demo campaign with Rucio's conveyor and FTS3 moving the data: installs what `make test` installs
# (PostgreSQL, the Rucio server venv), then starts Rucio, its daemons and the FTS3 fake on 127.0.0.1
# and runs `drp demo --replication …` against them. Extra arguments go to scripts/rucio_demo.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-system-deps.sh
make --no-print-directory .venv/.satdrp-test-installed rucio-server
exec .venv/bin/python scripts/rucio_demo.py "$@"
