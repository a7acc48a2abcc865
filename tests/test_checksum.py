"""adler32 helpers agree with zlib and write atomically."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

from transfer.checksum import adler32_file, write_atomic


def test_adler32_file_matches_zlib_across_chunk_boundaries(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    p = tmp_path / "f"
    p.write_bytes(data)
    assert adler32_file(p, chunk=1 << 20) == (f"{zlib.adler32(data):08x}", len(data))
    empty = tmp_path / "e"
    empty.write_bytes(b"")
    assert adler32_file(empty) == ("00000001", 0)


def test_write_atomic_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "x.dat"
    checksum = write_atomic(target, b"hello")
    assert target.read_bytes() == b"hello"
    assert checksum == f"{zlib.adler32(b'hello'):08x}"
    assert [p.name for p in target.parent.iterdir()] == ["x.dat"]
