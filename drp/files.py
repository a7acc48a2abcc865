"""Atomic output writers: a temporary name in the same directory, fsync, then rename.

A reader (or a resumed campaign) therefore sees either the complete previous file, the complete new
file, or nothing; never a half-written one. Temporary names start with '.' and contain '.part-'.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from astropy.io import fits


def _atomic(path: Path, write: Callable[[Path], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    _atomic(path, lambda tmp: tmp.write_bytes(data))


def write_fits_atomic(path: Path, hdus: Sequence[fits.PrimaryHDU | fits.ImageHDU]) -> None:
    _atomic(path, lambda tmp: fits.HDUList(list(hdus)).writeto(tmp, overwrite=True))


def write_parquet_atomic(path: Path, table: pa.Table, provenance: dict[str, Any]) -> None:
    """Parquet with ``provenance`` (step, version, config hash, inputs) in the schema metadata."""
    meta = dict(table.schema.metadata or {})
    meta[b"satdrp.provenance"] = json.dumps(provenance, sort_keys=True, default=str).encode()
    table = table.replace_schema_metadata(meta)
    _atomic(path, lambda tmp: pq.write_table(table, tmp))


def read_provenance(path: Path) -> dict[str, Any]:
    meta = pq.read_schema(path).metadata or {}
    return dict(json.loads(meta.get(b"satdrp.provenance", b"{}")))
