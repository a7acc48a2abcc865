"""Profiler, job reports, progress display and metrics."""
