"""Who may read what satdrp writes for its operators: the bookkeeping database, campaign reports, the
metrics textfile and lock files are private to the account running `drp` (0600 files, 0700 directories)
unless a site asks for group-readable ones (0640/0750: `drp --group-readable` or DRP_GROUP_READABLE=1,
e.g. when node_exporter or a monitoring account in the group reads the textfile). Data on site storage
is not concerned: its services (XRootD, the compute back-end's job account) must read it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Modes:
    file: int
    dir: int


PRIVATE = Modes(0o600, 0o700)
GROUP = Modes(0o640, 0o750)


def modes_for(group_readable: bool) -> Modes:
    return GROUP if group_readable else PRIVATE


def make_dir(path: Path, modes: Modes) -> Path:
    """``mkdir -p``; ``path`` itself, if it is created, gets ``modes.dir``; missing parents get the
    umask's mode: they may be shared (a campaign's work directory holds the workflow directories that
    the compute back-end's job account must read). Existing directories are left alone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(path, modes.dir)
    except FileExistsError:
        return path
    os.chmod(path, modes.dir)  # exact, whatever the umask
    return path


def create_file(path: Path, modes: Modes) -> bool:
    """Create an empty file with ``modes.file`` if none exists (so a later writer keeps that mode);
    True if it was created."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, modes.file)
    except FileExistsError:
        return False
    os.fchmod(fd, modes.file)
    os.close(fd)
    return True
