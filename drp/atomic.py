"""Atomic writes with no heavy imports: a temporary name in the same directory, fsync, then rename.

A reader (or a resumed campaign) therefore sees either the complete previous file, the complete new
file, or nothing; never a half-written one. Temporary names start with '.' and contain '.part-'.
Kept free of numpy/astropy so the job wrapper and the executor can use it cheaply.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
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
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_json_atomic(path: Path, value: Any) -> None:
    write_bytes_atomic(path, (json.dumps(value, indent=1, sort_keys=True, default=str) + "\n").encode())
