"""Shared basics every layer may import: the error tree, atomic writes, config-file loading, the
plugin loader, health probes and the campaign lock. Imports nothing else of satdrp."""

__version__ = "0.1.0"
