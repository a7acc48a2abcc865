#!/usr/bin/env bash
# A Rucio 41 server (REST API + daemons) in its own virtual environment, for the Rucio contract tests.
# The server and rucio-clients must not share a venv (they own the same files), so the project's venv
# holds only rucio-clients and this one holds the server. Idempotent: a stamp records what was installed.
set -euo pipefail
VENV=${1:-.venv-rucio}
PYTHON=${PYTHON:-python3}
WANT='rucio[postgresql]==41.5.1 gunicorn==23.0.0'
if [[ -f "$VENV/.installed" && "$(cat "$VENV/.installed")" == "$WANT" ]]; then
    exit 0
fi
echo "install-rucio-server: installing $WANT into $VENV (about a minute)" >&2
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
# shellcheck disable=SC2086
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check $WANT
echo "$WANT" > "$VENV/.installed"
