"""Where a catalogued file lives at a site: URLs built from the site's storage root and the file's
logical name, which must stay inside that root (no ``..``, no absolute names)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from bookkeeping.files import check_name
from common.errors import InvalidInputError
from common.temporaries import MARK, transfer_owner


def replica_url(storage: str, name: str) -> str:
    """The URL of logical file ``name`` under a site's ``storage`` URL."""
    check_name(name)
    return f"{storage.rstrip('/')}/{name}"


def file_name(url: str) -> str:
    """The local path of a ``file://`` URL as a string: a copy of 10,000 small files asks 20,000
    times, and ``urlparse`` plus a Path were then most of the mover's own time."""
    if url.startswith("file:///") and "?" not in url and "#" not in url:
        path = url[7:]
        return unquote(path) if "%" in path else path
    return str(file_path(url))


def file_path(url: str) -> Path:
    """The local path of a ``file://`` URL."""
    parsed = urlparse(url)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        raise InvalidInputError(f"not a local file URL: {url!r}")
    return Path(unquote(parsed.path))


def temp_url(url: str, transfer_id: int, attempt: int) -> str:
    """The URL of the temporary copy that attempt ``attempt`` of a transfer writes before ``url``."""
    head, _, base = url.rpartition("/")
    return f"{head}/.{base}{MARK}{transfer_owner(transfer_id, attempt)}"
