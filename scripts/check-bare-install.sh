#!/usr/bin/env bash
# The README's first command must work on a bare machine: the base install takes wheels only (no
# compiler, swig or OpenSSL headers needed), then the small demo runs and writes its report.
# Run by .ci/run before `make test` (which installs system packages and the production extras).
# Usage: scripts/check-bare-install.sh [PYTHON]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
python=${1:-python3}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/satdrp-bare.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# a clean copy: the files git tracks (or would track), nothing built or ignored
mkdir "$tmp/src"
(cd "$top" && git ls-files -z --cached --others --exclude-standard | xargs -0 -I{} cp --parents {} "$tmp/src")

"$python" -m venv "$tmp/venv"
echo "check-bare-install: pip install --only-binary=:all: (wheels only)" >&2
"$tmp/venv/bin/python" -m pip install --quiet --disable-pip-version-check --only-binary=:all: "$tmp/src"
for client in rucio fts3 XRootD htcondor2 Pegasus psycopg; do
    if "$tmp/venv/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$client') is None)"; then
        echo "check-bare-install: production client $client is in the base install; make it an extra" >&2
        exit 1
    fi
done

echo "check-bare-install: drp demo --small" >&2
cd "$tmp"  # not the source tree: the installed package must carry everything it needs
"$tmp/venv/bin/drp" --log-level warning demo --small --workdir "$tmp/work" --json >"$tmp/demo.json"
"$tmp/venv/bin/python" - "$tmp/demo.json" <<'PY'
import json, pathlib, sys
result = json.load(open(sys.argv[1]))
report = pathlib.Path(result["report"])
problems = []
if result["state"] != "DONE":
    problems.append(f"campaign state {result['state']}")
if result["mismatches"]:
    problems.append(f"{len(result['mismatches'])} files differ between sites")
if not report.is_file() or "<html" not in report.read_text()[:200].lower():
    problems.append(f"no HTML report at {report}")
if not list(report.parent.glob("*.png")):
    problems.append("the report has no plots")
if problems:
    sys.exit("check-bare-install: demo: " + "; ".join(problems))
print(f"check-bare-install: demo DONE, {result['files']} files at every site, report {report.name}", file=sys.stderr)
PY
