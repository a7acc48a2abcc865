"""One driver per campaign at a time: the lock that makes ``drp campaign tick`` safe under cron.

An exclusive ``flock`` on ``WORKDIR/locks/CAMPAIGN.lock``: the kernel releases it when the holder exits,
however it exits (``kill -9`` included), so a crashed tick never blocks the next one. The file holds
the holder's pid, host and start time, for the message the second tick prints. (On NFS, Linux maps
``flock`` to POSIX byte-range locks, which NFSv4 supports.)
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from common.errors import EXIT_OK, DrpError, InvalidInputError
from common.permissions import PRIVATE, Modes, make_dir
from drp.campaign_config import NAME_PATTERN


class CampaignBusy(DrpError):
    """Another process drives this campaign; exiting quietly is the right thing for cron."""

    exit_code = EXIT_OK


@contextmanager
def campaign_lock(workdir: Path, campaign: str, *, modes: Modes = PRIVATE) -> Iterator[Path]:
    """Hold the campaign's lock for the ``with`` block, or raise :class:`CampaignBusy` at once."""
    if not re.fullmatch(NAME_PATTERN, campaign):
        raise InvalidInputError(f"campaign name {campaign!r} is not valid")
    path = workdir / "locks" / f"{campaign}.lock"
    make_dir(path.parent, modes)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, modes.file)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CampaignBusy(f"campaign {campaign}: {_holder(fd)} is running it; nothing done") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["since"])))
        return f"pid {info['pid']} on {info['host']} (since {since})"
    except (ValueError, KeyError, TypeError):
        return "another process"
