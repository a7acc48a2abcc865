"""Health probes for `drp doctor`: typed results and the two network checks every back-end uses.

Back-ends answer ``probe()`` with a list of :class:`Probe`; the doctor never names a concrete
back-end. Probes are bounded by short time-outs, never raise for an unreachable service, and never
put a credential in a detail (they say whether one is present, not what it is).
"""

from __future__ import annotations

import os
import socket
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlparse

from common.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE

TIMEOUT_S = 5.0


class Health(StrEnum):
    OK = "ok"
    UNREACHABLE = "unreachable"  # a service does not answer, or storage cannot be used
    NO_CREDENTIALS = "no-credentials"  # none configured, a file missing, or refused by the service
    OUTDATED = "outdated"  # the bookkeeping schema is behind this satdrp
    MISSING = "missing"  # the back-end's client module is not installed
    CONFIG = "config"  # the configuration itself is wrong

    @property
    def exit_code(self) -> int:
        if self is Health.OK:
            return EXIT_OK
        return EXIT_USAGE if self in (Health.MISSING, Health.CONFIG) else EXIT_FAILED


@dataclass(frozen=True)
class Probe:
    check: str
    health: Health
    detail: str = ""


def tcp(check: str, host: str, port: int, timeout: float = TIMEOUT_S) -> Probe:
    """Whether something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return Probe(check, Health.OK, f"{host}:{port} accepts connections")
    except OSError as err:
        return Probe(check, Health.UNREACHABLE, f"{host}:{port}: {err.strerror or err}")


def http(check: str, url: str, *, verify: bool = True, timeout: float = TIMEOUT_S) -> Probe:
    """Whether an HTTP(S) service answers at ``url`` (any HTTP status counts: it is up)."""
    context = None
    if url.startswith("https://"):
        context = ssl.create_default_context()
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:
            return Probe(check, Health.OK, f"{_origin(url)} answers (HTTP {resp.status})")
    except urllib.error.HTTPError as err:
        return Probe(check, Health.OK, f"{_origin(url)} answers (HTTP {err.code})")
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        return Probe(check, Health.UNREACHABLE, f"{_origin(url)}: {reason}")


def _origin(url: str) -> str:
    """The URL without user information, path or query: safe to print."""
    p = urlparse(url)
    host = p.hostname or ""
    return f"{p.scheme}://{host}{f':{p.port}' if p.port else ''}"


def posix_root(check: str, root: Path) -> Probe:
    """A posix storage root: writable, or absent under a writable directory (created on first use)."""
    if root.is_dir():
        if _writable(root):
            return Probe(check, Health.OK, f"{root} is writable")
        return Probe(check, Health.UNREACHABLE, f"{root} is not writable by this user")
    if root.exists():
        return Probe(check, Health.UNREACHABLE, f"{root} exists and is not a directory")
    parent = next((p for p in root.parents if p.exists()), None)
    if parent is not None and parent.is_dir() and _writable(parent):
        return Probe(check, Health.OK, f"{root} does not exist yet; created on first use")
    return Probe(check, Health.UNREACHABLE, f"{root} does not exist and cannot be created")


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK | os.X_OK)


def credential_file(check: str, path: str | None, what: str) -> Probe:
    """A credential file (certificate, key, proxy) is present and readable; its content is not read."""
    if not path:
        return Probe(check, Health.NO_CREDENTIALS, f"no {what} configured")
    if not os.access(path, os.R_OK):
        return Probe(check, Health.NO_CREDENTIALS, f"{what} {path} is missing or unreadable")
    return Probe(check, Health.OK, f"{what} {path} is readable")
