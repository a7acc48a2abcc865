"""The ``xrootd`` mover: ``root://`` copies with the XRootD Python client, third-party by default.

A batch is one ``CopyProcess`` with ``parallel`` jobs. Each job asks the destination to verify
adler32 against the catalogue's value (``checksummode="target"`` with the preset), so a DONE copy was
checksummed by the destination server itself; the destination's size is then checked with ``stat``.
With ``tpc = "first"`` (default) the destination pulls from the source server and the data never
passes through this process; ``"only"`` refuses a client-mediated fallback; ``"none"`` streams
through the client. A copy that fails its checksum is removed from the destination (XRootD 5.5 does
not remove it after a third-party copy). Every TPC costs about 2.5 s whatever its size (XrdCl polls
the destination on a fixed timer), hence the parallel jobs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import Field

from common.probes import TIMEOUT_S, Health, Probe, tcp
from common.temporaries import MARK

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


class XRootDSettings(MoverSettings):
    tpc: Literal["first", "only", "none"] = "first"
    parallel: int = Field(default=8, ge=1, le=128, description="copies at once within a batch")
    connection_retry: int = Field(default=2, ge=1, le=100, description="XRootD ConnectionRetry")
    request_timeout_s: int = Field(default=300, ge=1, description="XRootD RequestTimeout")
    stream_error_window_s: int = Field(
        default=30,
        ge=0,
        description="XRootD StreamErrorWindow: how long a server that failed to connect is failed at once "
        "(XRootD's default, 1800 s, kept a long `campaign run` failing for half an hour after an outage)",
    )


def split_url(url: str) -> tuple[str, str]:
    """``root://host:port//abs/path`` → (``root://host:port``, ``/abs/path``)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("root", "xroot") or not parsed.netloc:
        raise ValueError(f"not an XRootD URL: {url!r}")
    return f"{parsed.scheme}://{parsed.netloc}", "/" + parsed.path.lstrip("/")


def classify(status: Any) -> FailureKind:
    """Map an XRootDStatus to a failure kind (errno values from XProtocol.hh)."""
    message = str(getattr(status, "message", "")).lower()
    errno = int(getattr(status, "errno", 0) or 0)
    if "checksum" in message:
        return FailureKind.CHECKSUM
    if errno == 3011 or "no such file" in message or "not found" in message:
        return FailureKind.SOURCE_MISSING
    if errno in (3010, 3009) or "permission" in message or "not authorized" in message or "space" in message:
        return FailureKind.DESTINATION
    if getattr(status, "code", 0) in (101, 108) or "connection refused" in message:
        return FailureKind.UNREACHABLE  # errInvalidAddr, errConnectionError: no server there, nothing tried
    if getattr(status, "code", 0) in (103, 104, 105, 106, 107, 109, 111, 112, 113, 114, 206):
        return FailureKind.NETWORK
    if any(w in message for w in ("connection", "socket", "timeout", "timed out", "unreachable", "refused")):
        return FailureKind.NETWORK
    return FailureKind.OTHER


class XRootDMover(Mover):
    name = "xrootd"
    Settings = XRootDSettings
    settings: XRootDSettings

    def __init__(self, settings: XRootDSettings) -> None:
        super().__init__(settings)
        from XRootD import client

        client.EnvPutInt("ConnectionRetry", settings.connection_retry)
        client.EnvPutInt("RequestTimeout", settings.request_timeout_s)
        client.EnvPutInt("StreamErrorWindow", settings.stream_error_window_s)
        self._client = client

    def _fs(self, url: str) -> tuple[Any, str]:
        host, path = split_url(url)
        return self._client.FileSystem(host), path

    def submit(self, requests: Sequence[TransferRequest]) -> list[Submitted]:
        if not requests:
            return []
        started = time.monotonic()
        process = self._client.CopyProcess()
        for req in requests:
            job: dict[str, Any] = {
                "force": True,
                "checksummode": "target",
                "checksumtype": "adler32",
                "checksumpreset": req.adler32,
                "rmBadCksum": True,
                "parallelchunks": 4,
            }
            if self.settings.tpc != "none":
                job["thirdparty"] = self.settings.tpc
            process.add_job(req.source, req.dest, **job)
        process.parallel(self.settings.parallel)
        prepared = process.prepare()
        if not prepared.ok:
            return [
                Submitted(
                    r.transfer_id,
                    result=TransferResult(
                        r.transfer_id, Outcome.FAILED, classify(prepared), str(prepared.message)
                    ),
                )
                for r in requests
            ]
        _status, results = process.run()
        seconds = time.monotonic() - started
        out = []
        for req, res in zip(requests, results or [{}] * len(requests), strict=True):
            status = res.get("status")
            if status is not None and status.ok:
                stat = self.stat(req.dest, checksum=False)
                if stat is not None and stat.size == req.size:
                    result = TransferResult(req.transfer_id, Outcome.DONE, None, "", req.size, seconds)
                else:
                    got = "absent" if stat is None else f"{stat.size} bytes"
                    result = TransferResult(
                        req.transfer_id,
                        Outcome.FAILED,
                        FailureKind.CHECKSUM,
                        f"{req.dest}: {got} after the copy, catalogue says {req.size}; "
                        + self._remove(req.dest),
                        0,
                        seconds,
                    )
            else:
                kind = classify(status) if status is not None else FailureKind.OTHER
                message = str(getattr(status, "message", "no status returned")).strip()
                if kind is FailureKind.CHECKSUM:
                    removed = self._remove(req.dest)
                    message += f" (destination adler32 differs from the catalogue's {req.adler32}; {removed})"
                result = TransferResult(
                    req.transfer_id, Outcome.FAILED, kind, f"{req.source} → {req.dest}: {message}", 0, seconds
                )
            out.append(Submitted(req.transfer_id, result=result))
        return out

    def _remove(self, url: str) -> str:
        """Remove a bad copy; one that cannot be removed is reported, not raised (the batch goes on)."""
        try:
            self.delete(url)
        except OSError as err:
            return f"could not remove the bad copy: {err}"
        return "bad copy removed"

    def poll(self, external_ids: Mapping[int, str]) -> list[TransferResult]:
        return [
            TransferResult(
                t, Outcome.FAILED, FailureKind.OTHER, "copy interrupted (the mover process stopped)"
            )
            for t in external_ids
        ]

    def cancel(self, external_ids: Mapping[int, str]) -> None:
        return None

    def probe(self, roots: Sequence[str]) -> list[Probe]:
        out = []
        for root in roots:
            if not root.startswith(("root:", "xroot:")):
                continue
            check, url = "storage", urlparse(root)
            reach = tcp(check, url.hostname or "localhost", url.port or 1094)
            if reach.health is not Health.OK:  # a closed port: no need to wait for the client's retries
                out.append(reach)
                continue
            host, _ = split_url(root)
            status, _ = self._client.FileSystem(host).ping(timeout=int(TIMEOUT_S))
            health = Health.OK if status.ok else Health.UNREACHABLE
            out.append(
                Probe(check, health, f"{host} answers ping" if status.ok else f"{host}: {status.message}")
            )
        return out

    def stat(self, url: str, *, checksum: bool = True) -> FileStat | None:
        from XRootD.client.flags import QueryCode

        fs, path = self._fs(url)
        status, info = fs.stat(path)
        if not status.ok:
            if classify(status) is FailureKind.SOURCE_MISSING:
                return None
            raise OSError(f"stat {url}: {status.message}")
        adler = None
        if checksum:
            status, answer = fs.query(QueryCode.CHECKSUM, path)
            if not status.ok:
                raise OSError(f"checksum of {url}: {status.message}")
            kind, _, value = answer.decode().strip("\x00 \n").partition(" ")
            if kind.lower() != "adler32":
                raise OSError(f"checksum of {url}: server answered {kind!r}, not adler32")
            adler = value.strip().lower().rjust(8, "0")
        return FileStat(int(info.size), adler)

    def _files(self, url: str) -> Iterator[tuple[str, Any]]:
        """(relative path, stat info) of every file under a directory URL, hidden ones included."""
        from XRootD.client.flags import DirListFlags, StatInfoFlags

        fs, base = self._fs(url)
        stack = [""]
        while stack:
            rel = stack.pop()
            status, listing = fs.dirlist(f"{base.rstrip('/')}/{rel}" if rel else base, DirListFlags.STAT)
            if not status.ok:
                if classify(status) is FailureKind.SOURCE_MISSING:
                    continue
                raise OSError(f"dirlist {url}/{rel}: {status.message}")
            for entry in listing:
                name = f"{rel}/{entry.name}" if rel else entry.name
                if not entry.statinfo.flags & StatInfoFlags.IS_DIR:
                    yield name, entry.statinfo
                elif not entry.name.startswith("."):
                    stack.append(name)

    def walk(self, url: str) -> Iterator[tuple[str, int]]:
        for name, info in self._files(url):
            if not name.rpartition("/")[2].startswith("."):
                yield name, int(info.size)

    def temporaries(self, url: str) -> Iterator[tuple[str, int, float]]:
        for name, info in self._files(url):
            base = name.rpartition("/")[2]
            if base.startswith(".") and MARK in base:
                yield name, int(info.size), float(info.modtime)

    def delete(self, url: str) -> None:
        fs, path = self._fs(url)
        status, _ = fs.rm(path)
        if not status.ok and classify(status) is not FailureKind.SOURCE_MISSING:
            raise OSError(f"rm {url}: {status.message}")
