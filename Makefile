# satdrp — two commands on a fresh machine: `make demo` (the main job) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.satdrp-installed
TEST_STAMP := $(VENV)/.satdrp-test-installed
BENCH_STAMP := $(VENV)/.satdrp-bench-installed
PIP := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: demo test lint dist system-deps rucio-server htcondor-pool bench bench-scale bench-pipeline bench-workflow bench-transfer bench-metrics bench-dr bench-startup bench-rucio bench-rucio-register bench-htcondor demo-rucio demo-htcondor clean

# The base install takes wheels only: no compiler, swig or OpenSSL headers on a bare machine.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { \
	    echo "make: '$(PYTHON) -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv" >&2; exit 1; }
	$(PIP) --only-binary=:all: -e .
	@touch $@

$(TEST_STAMP): $(STAMP)
	$(PIP) -e ".[test]"
	@touch $@

$(BENCH_STAMP): $(STAMP)
	$(PIP) --only-binary=:all: -e ".[bench]"
	@touch $@

## demo: create .venv if missing, install satdrp, run the demo campaign on embedded defaults
demo: $(STAMP)
	$(VENV)/bin/drp demo

## test: install system packages the tests need (when root), test dependencies, the Rucio server venv
## and the HTCondor chroot (the tests start both on 127.0.0.1), run pytest
test: system-deps $(TEST_STAMP) rucio-server htcondor-pool
	$(PY) -m pytest

rucio-server:
	@bash scripts/install-rucio-server.sh .venv-rucio

## htcondor-pool: the HTCondor pool the tests start (Debian trixie minicondor in a chroot; root, once)
htcondor-pool:
	@bash scripts/install-htcondor.sh

## lint: ruff, the layers contract (import-linter) and mypy, as CI runs them
lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy common bookkeeping instrumentation science sites transfer drp commands cli.py bench

system-deps:
	@bash scripts/install-system-deps.sh

## dist: wheel and sdist in dist/ (`pipx install dist/satdrp-*.whl` gives a working `drp`)
dist: $(TEST_STAMP)
	rm -rf dist build
	$(PY) -m build --outdir dist .

## bench: bookkeeping benchmark at the issue's default size (prints ratio= lines)
bench: $(STAMP)
	$(PY) bench/bookkeeping.py

## bench-scale: 25,400,000 files with two replicas each registered on SQLite and PostgreSQL (time, peak
## RSS, ratio to the raw driver), then status and scrape cost from 10,000 to 10,000,000 attempts (minutes)
bench-scale: system-deps $(TEST_STAMP)
	$(PY) bench/bookkeeping.py --files 25400000 --dataset-size 100000
	$(PY) bench/scale.py

## bench-pipeline: CPU and peak memory per megapixel per step on the default demo release
bench-pipeline: $(STAMP)
	$(PY) bench/pipeline.py

## bench-workflow: 1,000,000-job DAG generation, local executor throughput, profiler overhead
bench-workflow: $(BENCH_STAMP)
	$(PY) bench/workflow.py

## bench-transfer: local mover vs cp on 1 GiB, 10,000 small files end to end, adler32 vs zlib
bench-transfer: $(STAMP)
	$(PY) bench/transfer.py

## bench-metrics: exporter scrape time on a 1,000,000-file bookkeeping database
bench-metrics: $(STAMP)
	$(PY) bench/metrics.py

## bench-dr: audit with checksums vs cat (page cache and cold), audit of 100,000 files without
bench-dr: $(STAMP)
	$(PY) bench/dr.py

## bench-startup: `drp --help`, `campaign status --json` and `campaign tick` on a finished campaign vs `python -c pass`
bench-startup: $(STAMP)
	$(PY) bench/startup.py

## bench-rucio: N files through rule → judge → conveyor → FTS3 → rule OK vs satdrp's direct mover
bench-rucio: system-deps $(TEST_STAMP) rucio-server
	$(PY) bench/rucio_path.py

## bench-rucio-register: registration in Rucio, raw add_replicas one call at a time vs the back-end's
## batches with several calls in flight (and the sweep that chose the defaults)
bench-rucio-register: system-deps $(TEST_STAMP) rucio-server
	$(PY) bench/rucio_register.py
	$(PY) bench/rucio_register.py --files 20000 --batches 5000 --in-flight 8

## demo-rucio: the demo campaign with Rucio's conveyor and FTS3 moving the data (services on 127.0.0.1)
demo-rucio:
	@bash scripts/demo-rucio.sh --small

clean:
	rm -rf $(VENV) .venv-rucio drp-work drp-work-rucio dist build .pytest_cache .mypy_cache .ruff_cache

## demo-htcondor: the demo campaign with the satellite's DAG run by DAGMan on an HTCondor pool (root)
demo-htcondor:
	@bash scripts/demo-htcondor.sh --small

## bench-htcondor: DAG submit-to-first-job latency and jobs/s through DAGMan vs the local back-end (root)
bench-htcondor: $(TEST_STAMP) htcondor-pool
	$(PY) bench/htcondor.py
