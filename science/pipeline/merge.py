"""merge (per tract): one object table from the tract's patch tables, patch-overlap duplicates removed.

Neighbouring patches overlap by their borders, so an object near a patch edge is measured twice;
only the patch whose *inner* box holds it keeps it (``detect_isPatchInner``). Objects in the tract's
overlap with its neighbours are kept and flagged: ``detect_isPrimary`` is true only where this tract
owns the position, so selecting primaries over all tracts counts every object exactly once, while
the overlap rows remain for cross-validation between tracts and sites.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from common.errors import InvalidInputError
from science.files import read_provenance, write_parquet_atomic
from science.pipeline.common import StepConfig, provenance
from science.skymap import Tract

REQUIRED = ("id", "tract", "patch", "ra", "dec", "detect_isPatchInner", "detect_isTractInner")


@dataclass(frozen=True)
class MergeConfig(StepConfig):
    pass


@dataclass(frozen=True)
class MergeResult:
    tract: int
    n_patches: int
    n_objects: int
    n_primary: int
    n_duplicates_dropped: int


def merge(
    object_paths: list[Path], tract: Tract, table_path: Path, config: MergeConfig | None = None
) -> MergeResult:
    cfg = config or MergeConfig()
    if not object_paths:
        raise InvalidInputError(f"merge of tract {tract.id}: no patch object tables")
    tables = []
    schema = None
    dropped = 0
    for path in object_paths:
        try:
            table = pq.read_table(path)
            prov = read_provenance(path)
        except FileNotFoundError as err:
            raise InvalidInputError(f"{path}: input file not found") from err
        except (OSError, pa.ArrowInvalid, ValueError) as err:
            raise InvalidInputError(f"{path}: unreadable Parquet ({err})") from err
        missing = [c for c in REQUIRED if c not in table.column_names]
        if missing:
            raise InvalidInputError(f"{path}: columns {missing} missing (not a measure output)")
        if prov.get("tract") != tract.id:
            raise InvalidInputError(f"{path}: object table of tract {prov.get('tract')}, expected {tract.id}")
        if schema is None:
            schema = table.schema.remove_metadata()
        elif not table.schema.remove_metadata().equals(schema):
            raise InvalidInputError(f"{path}: columns differ from {object_paths[0].name} (different bands?)")
        keep = table["detect_isPatchInner"]
        dropped += table.num_rows - int(pc.sum(keep).as_py() or 0)
        tables.append(table.filter(keep).replace_schema_metadata(None))
    merged = pa.concat_tables(tables)
    merged = merged.take(pc.sort_indices(merged, [("id", "ascending")]))
    primary = np.asarray(merged["detect_isTractInner"]) & np.asarray(merged["detect_isPatchInner"])
    merged = (
        merged.set_column(
            merged.schema.get_field_index("detect_isPrimary"), "detect_isPrimary", pa.array(primary)
        )
        if "detect_isPrimary" in merged.column_names
        else merged.append_column("detect_isPrimary", pa.array(primary))
    )
    prov = provenance("merge", cfg, object_paths, tract=tract.id)
    write_parquet_atomic(table_path, merged, prov)
    return MergeResult(tract.id, len(object_paths), merged.num_rows, int(primary.sum()), dropped)
