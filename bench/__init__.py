"""Benchmarks: plain scripts run from the venv; each prints one line per figure, or JSON with --json."""
