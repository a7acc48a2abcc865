"""Movers copy files between sites' storage and say whether each copy is verified."""
