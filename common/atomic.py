"""Atomic writes with no heavy imports: a temporary name in the same directory, fsync, then rename.

A reader (or a resumed campaign) therefore sees either the complete previous file, the complete new
file, or nothing; never a half-written one. Temporary names start with '.' and end with '.part-' and
their owner (:mod:`common.temporaries`), so a killed writer's leftovers can be found and removed.
Kept free of numpy/astropy so the job wrapper and the executor can use it cheaply.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.temporaries import temp_path


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: Path, data: bytes, *, durable: bool = True, mode: int = 0o644) -> None:
    """``durable=False`` skips the fsync: after a power cut the file may be empty, which only suits
    files whose readers treat an unreadable file as absent (job reports: the job simply re-runs).
    ``mode`` is the new file's (less the umask; :mod:`common.permissions` for operators' files)."""
    tmp = temp_path(path)
    try:
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:  # no stat of the temporary after a rename that worked (one per job report)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_json_atomic(path: Path, value: Any, *, durable: bool = True) -> None:
    data = (json.dumps(value, indent=1, sort_keys=True, default=str) + "\n").encode()
    write_bytes_atomic(path, data, durable=durable)
