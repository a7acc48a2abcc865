"""satdrp release domain: sky map, split, pipeline steps, workflow, campaign and validation.

Kept import-light on purpose: every other package imports :mod:`drp.errors` from here.
"""

__version__ = "0.1.0"
