"""Atomic writers of the pipeline's formats (FITS, Parquet); see :mod:`common.atomic` for the mechanism."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.atomic import atomic_write, write_bytes_atomic

if TYPE_CHECKING:  # imported by the writers themselves: importers of this module do not pay for them
    import pyarrow as pa
    from astropy.io import fits

__all__ = ["read_provenance", "write_bytes_atomic", "write_fits_atomic", "write_parquet_atomic"]


def write_fits_atomic(path: Path, hdus: Sequence[fits.PrimaryHDU | fits.ImageHDU]) -> None:
    from astropy.io import fits

    atomic_write(path, lambda tmp: fits.HDUList(list(hdus)).writeto(tmp, overwrite=True))


def write_parquet_atomic(path: Path, table: pa.Table, provenance: dict[str, Any]) -> None:
    """Parquet with ``provenance`` (step, version, config hash, inputs) in the schema metadata."""
    import pyarrow.parquet as pq

    meta = dict(table.schema.metadata or {})
    meta[b"satdrp.provenance"] = json.dumps(provenance, sort_keys=True, default=str).encode()
    table = table.replace_schema_metadata(meta)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def read_provenance(path: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    return dict(json.loads(meta.get(b"satdrp.provenance", b"{}")))
