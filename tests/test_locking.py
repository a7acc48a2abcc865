"""The campaign lock: a second holder is refused with the first one's pid; kill -9 frees it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.errors import EXIT_OK, InvalidInputError
from drp.locking import CampaignBusy, campaign_lock

HOLD = """
import sys, time
from pathlib import Path
from drp.locking import campaign_lock
with campaign_lock(Path(sys.argv[1]), "dr1"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_second_holder_is_refused_and_kill_9_releases(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(CampaignBusy, match=f"pid {proc.pid} on ") as info:
            with campaign_lock(tmp_path, "dr1"):
                pass
        assert info.value.exit_code == EXIT_OK
        with campaign_lock(tmp_path, "other-campaign"):  # locks are per campaign
            pass
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 5
    while True:
        try:
            with campaign_lock(tmp_path, "dr1") as path:
                assert str(os.getpid()) in path.read_text()
            break
        except CampaignBusy:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_names_cannot_escape_the_workdir(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError):
        with campaign_lock(tmp_path, "../x"):
            pass
