"""Replication back-ends and movers (verified transfers between site storages)."""
