"""adler32 the way storage systems print it (8 lower-case hex digits), computed while streaming."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

from common.temporaries import temp_path

CHUNK = 4 * 1024 * 1024


def adler32_hex(value: int) -> str:
    return f"{value & 0xFFFFFFFF:08x}"


def adler32_file(path: str | os.PathLike[str], chunk: int = CHUNK) -> tuple[str, int]:
    """(adler32, size) of a file, read once in large chunks."""
    value = 1
    size = 0
    buf = bytearray(chunk)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            value = zlib.adler32(view[:n], value)
            size += n
    return adler32_hex(value), size


def write_atomic(path: Path, data: bytes) -> str:
    """Write ``data`` to ``path`` via a temporary name, fsync, rename; returns its adler32."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return adler32_hex(zlib.adler32(data))
