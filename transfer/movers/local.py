"""The ``local`` mover: posix copies between ``file://`` storage roots, verified in the same pass.

Each copy streams the source in large chunks, computes adler32 of exactly the bytes it writes, writes
them to a temporary name beside the destination, fsyncs, and renames only if size and adler32 match
the catalogue; a mismatch removes the temporary file and fails with :attr:`FailureKind.CHECKSUM`. The
directories of a batch's finished copies are fsynced once, before the batch reports DONE, so a DONE
copy survives a crash (``fsync = false`` trades that for ``cp``'s speed: the kernel writes back
later). Copies of a batch run on ``threads`` threads (file I/O and zlib release the GIL).
"""

from __future__ import annotations

import errno
import os
import threading
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydantic import Field

from common.probes import Probe, posix_root
from common.temporaries import walk_temporaries
from transfer.checksum import adler32_file, adler32_hex
from transfer.storage import file_path, temp_url

from .base import (
    FailureKind,
    FileStat,
    Mover,
    MoverSettings,
    Outcome,
    Submitted,
    TransferRequest,
    TransferResult,
)

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


class LocalSettings(MoverSettings):
    threads: int = Field(default=3, ge=1, le=64, description="copies at once within a batch")
    chunk_mib: int = Field(default=2, ge=1, le=256, description="read/write size (fits the CPU caches)")
    fsync: bool = Field(
        default=True,
        description="make each copy durable before it is DONE; false leaves write-back to the kernel, like "
        "cp (a power cut may then lose a copy marked AVAILABLE, which `drp dr audit` finds)",
    )


def _fail(req: TransferRequest, kind: FailureKind, message: str, started: float) -> TransferResult:
    return TransferResult(req.transfer_id, Outcome.FAILED, kind, message, 0, time.monotonic() - started)


def copy_verified(req: TransferRequest, chunk: int, fsync: bool = True) -> TransferResult:
    """One verified copy (see the module docstring)."""
    started = time.monotonic()
    src, dst = file_path(req.source), file_path(req.dest)
    try:
        fin = open(src, "rb", buffering=0)
    except FileNotFoundError:
        return _fail(req, FailureKind.SOURCE_MISSING, f"source missing: {src}", started)
    except OSError as err:
        return _fail(req, FailureKind.SOURCE_MISSING, f"source unreadable: {src}: {err.strerror}", started)
    tmp = file_path(temp_url(req.dest, req.transfer_id, req.attempt))
    try:
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as err:
            return _fail(req, FailureKind.DESTINATION, f"cannot write {dst.parent}: {err.strerror}", started)
        value, total = 1, 0
        buf = bytearray(chunk)
        view = memoryview(buf)
        try:
            while n := fin.readinto(buf):
                part = view[:n]
                value = zlib.adler32(part, value)
                while part:
                    part = part[os.write(fd, part) :]
                total += n
            if fsync:
                os.fsync(fd)
        except OSError as err:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            kind = FailureKind.DESTINATION if err.errno in _NO_SPACE else FailureKind.OTHER
            return _fail(req, kind, f"copy to {dst} failed: {err.strerror}", started)
        os.close(fd)
        got = adler32_hex(value)
        if total != req.size or got != req.adler32:
            tmp.unlink(missing_ok=True)
            return _fail(
                req,
                FailureKind.CHECKSUM,
                f"copy of {src} does not match the catalogue: adler32 {got} size {total}, "
                f"expected {req.adler32} size {req.size}; bad copy removed",
                started,
            )
        os.replace(tmp, dst)
    finally:
        fin.close()
    return TransferResult(req.transfer_id, Outcome.DONE, None, "", total, time.monotonic() - started)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalMover(Mover):
    name = "local"
    Settings = LocalSettings
    settings: LocalSettings

    def __init__(self, settings: LocalSettings) -> None:
        super().__init__(settings)
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def submit(self, requests: Sequence[TransferRequest]) -> list[Submitted]:
        chunk = self.settings.chunk_mib << 20
        if len(requests) <= 1 or self.settings.threads == 1:
            results = [copy_verified(r, chunk, self.settings.fsync) for r in requests]
        else:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.settings.threads, thread_name_prefix="drp-copy")
            results = list(self._pool.map(lambda r: copy_verified(r, chunk, self.settings.fsync), requests))
        done_dirs = {
            file_path(r.dest).parent
            for r, res in zip(requests, results, strict=True)
            if res.outcome is Outcome.DONE
        }
        if self.settings.fsync:
            for d in done_dirs:
                _fsync_dir(d)
        return [Submitted(r.transfer_id, result=r) for r in results]

    def poll(self, external_ids: Mapping[int, str]) -> list[TransferResult]:
        # Copies finish inside submit(); an id left from a process that died is not running anywhere.
        return [
            TransferResult(
                t, Outcome.FAILED, FailureKind.OTHER, "copy interrupted (the mover process stopped)"
            )
            for t in external_ids
        ]

    def cancel(self, external_ids: Mapping[int, str]) -> None:
        return None

    def probe(self, roots: Sequence[str]) -> list[Probe]:
        return [posix_root("storage", file_path(r)) for r in roots if r.startswith("file:")]

    def stat(self, url: str, *, checksum: bool = True) -> FileStat | None:
        path = file_path(url)
        try:
            if not checksum:
                return FileStat(path.stat().st_size, None)
            adler, size = adler32_file(path)
        except FileNotFoundError:
            return None
        return FileStat(size, adler)

    def delete(self, url: str) -> None:
        file_path(url).unlink(missing_ok=True)

    def walk(self, url: str) -> Iterator[tuple[str, int]]:
        base = file_path(url)
        stack = [""]
        while stack:
            rel = stack.pop()
            try:
                entries = list(os.scandir(base / rel if rel else base))
            except FileNotFoundError:
                continue
            for e in entries:
                if e.name.startswith("."):
                    continue
                name = f"{rel}/{e.name}" if rel else e.name
                if e.is_dir(follow_symlinks=False):
                    stack.append(name)
                elif e.is_file(follow_symlinks=False):
                    yield name, e.stat(follow_symlinks=False).st_size

    def temporaries(self, url: str) -> Iterator[tuple[str, int, float]]:
        return walk_temporaries(file_path(url))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
