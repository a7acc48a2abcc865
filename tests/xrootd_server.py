"""Throwaway XRootD servers on 127.0.0.1, one per "site", with adler32 and native third-party copy
(recipe: ../shared/reference/services/RECIPES.md). xrootd refuses to run as root: it drops to user
``xrootd`` (``-R``), which then owns the data directory. XRootD 5.5 has no bind-address directive and
listens on every interface; tests only ever connect to 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bookkeeping.pgserver import free_port

CONFIG = """\
xrd.port {port}
all.role server
all.export /
oss.localroot {root}/data
all.adminpath {root}/admin
all.pidpath {root}/admin
xrootd.chksum adler32
ofs.tpc pgm /usr/bin/xrdcp --server -f
"""


@dataclass
class XRootDServer:
    name: str
    root: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Storage URL of this site: its ``/store`` directory."""
        return f"root://127.0.0.1:{self.port}//store"

    @property
    def data(self) -> Path:
        """Where ``/store`` lives on local disk (for tests that plant or damage files)."""
        return self.root / "data" / "store"

    def start(self, timeout: float = 10.0) -> XRootDServer:
        for d in ("data/store", "admin", "log"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        cfg = self.root / "xrootd.cfg"
        cfg.write_text(CONFIG.format(port=self.port, root=self.root))
        cmd = ["xrootd", "-c", str(cfg), "-n", self.name, "-l", str(self.root / "log" / "xrootd.log")]
        if os.geteuid() == 0:
            cmd[1:1] = ["-R", "xrootd"]
            self.chown()
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"xrootd {self.name} exited with {self.proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"xrootd {self.name} did not open port {self.port}")

    def chown(self) -> None:
        """Give the server's user what tests wrote as root."""
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "xrootd:xrootd", str(self.root)], check=True)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def xrootd_available() -> bool:
    return shutil.which("xrootd") is not None and shutil.which("xrdcp") is not None
