"""Replication back-ends: datasets, rules and replicas with Rucio's semantics (embedded or Rucio)."""
