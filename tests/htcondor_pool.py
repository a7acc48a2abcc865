"""A real single-node HTCondor pool on 127.0.0.1 for the tests and `make demo-htcondor`.

The daemons (HTCondor 23.9, Debian trixie ``minicondor``) live in a chroot that
``scripts/install-htcondor.sh`` installs. Jobs and DAGMan run inside it, satdrp submits from the host
with the ``htcondor2`` bindings, so every path a job uses must look the same on both sides: the
checkout (and its venv), the Python the venv was made from, and the work area are bind-mounted at
their own paths. Jobs cannot be owned by root; they run as ``satdrpjob``, whom the host process
authenticates as with an IDTOKEN (the pool signs it). The host side needs no file outside this
module's state directory: the client configuration is ``CONDOR_CONFIG`` for this process only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

CHROOT = Path(os.environ.get("SATDRP_CONDOR_CHROOT", "/srv/satdrp-condor"))
JOB_USER = "satdrpjob"
PORT = 9618

# Per-run settings: intervals shortened so that a DAG of short jobs takes seconds, not minutes
# (defaults: negotiator 60 s, starter updates 300 s, periodic expressions 60 s, DAGMan log scan 5 s).
# Static slots, one per CPU: a partitionable slot's leftovers are claimed by the schedd, which then only
# reuses the dynamic slots it already has, so on a slow machine a DAG ran two jobs at a time on four.
POOL_CONFIG = """\
# written by tests/htcondor_pool.py at start
NUM_CPUS = {cpus}
MEMORY = {memory_mb}
NEGOTIATOR_INTERVAL = 2
NEGOTIATOR_MIN_INTERVAL = 1
NEGOTIATOR_CYCLE_DELAY = 1
SCHEDD_INTERVAL = 2
SCHEDD_MIN_INTERVAL = 1
STARTER_UPDATE_INTERVAL = 1
STARTER_INITIAL_UPDATE_INTERVAL = 1
PERIODIC_EXPR_INTERVAL = 1
SHADOW_QUEUE_UPDATE_INTERVAL = 1
UPDATE_INTERVAL = 2
DAGMAN_USER_LOG_SCAN_INTERVAL = 1
JOB_START_DELAY = 0
JOB_START_COUNT = 10
SLOT_TYPE_1 = cpus=1, memory={slot_memory_mb}
SLOT_TYPE_1_PARTITIONABLE = False
NUM_SLOTS_TYPE_1 = {cpus}
"""

CLIENT_CONFIG = """\
# the submitting side (satdrp on the host): where the pool is and how to authenticate
CONDOR_HOST = 127.0.0.1
SEC_CLIENT_AUTHENTICATION_METHODS = IDTOKENS
SEC_TOKEN_DIRECTORY = {tokens}
"""


def installed() -> bool:
    return (CHROOT / ".satdrp-installed").is_file() and (CHROOT / "usr/sbin/condor_master").exists()


def _in_chroot() -> list[int]:
    """Processes whose root directory is the pool's chroot (daemons, starters, jobs)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "root") == str(CHROOT):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _mounted(path: Path) -> bool:
    return subprocess.run(["mountpoint", "-q", str(path)], check=False).returncode == 0


class CondorPool:
    """Start and stop the pool; ``work`` is a host directory outside /tmp (DAGMan refuses /tmp) that
    jobs can reach. ``binds`` are extra host directories made visible at the same path."""

    def __init__(self, work: Path, *, cpus: int = 4, memory_mb: int = 8192, binds: tuple[Path, ...] = ()):
        self.work = work
        self.state = work / ".condor-client"
        self.cpus = cpus
        self.memory_mb = memory_mb
        checkout = Path(__file__).resolve().parent.parent
        venv = Path(sys.prefix)  # the jobs run this venv's Python: bind it when it lives elsewhere
        own = [checkout, Path(sys.base_prefix)] + ([] if venv.is_relative_to(checkout) else [venv])
        self.binds = tuple(dict.fromkeys([*own, work, *binds]))
        self._mounts: list[Path] = []
        self.uid = 0

    # -- helpers ---------------------------------------------------------------------------------
    def run(self, *argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """A command inside the chroot, as root."""
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
        return subprocess.run(
            ["chroot", str(CHROOT), *argv],
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
            env=env,
        )

    @property
    def client_config(self) -> Path:
        return self.state / "condor_config"

    def env(self) -> dict[str, str]:
        """What the submitting process needs in its environment."""
        return {"CONDOR_CONFIG": str(self.client_config)}

    def master_running(self) -> bool:
        return (
            subprocess.run(["pgrep", "-x", "condor_master"], capture_output=True, check=False).returncode == 0
        )

    def _mount(self, args: list[str], target: Path) -> None:
        if _mounted(target):
            return
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", *args, str(target)], check=True)
        self._mounts.append(target)

    # -- start / stop ----------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> CondorPool:
        if os.geteuid() != 0:
            raise RuntimeError("the HTCondor pool runs in a chroot: start it as root")
        if not installed():
            raise RuntimeError(f"no HTCondor chroot at {CHROOT} (scripts/install-htcondor.sh installs it)")
        clash = [d for d in self.binds if str(d) in ("/", "/usr", "/usr/lib", "/bin", "/lib", "/etc")]
        if clash:
            raise RuntimeError(
                f"{clash[0]} would be bind-mounted over the pool's own system: make the venv from a Python "
                "outside /usr (pyenv, /usr/local, /opt) so that jobs can run it inside the chroot"
            )
        self.work.mkdir(parents=True, exist_ok=True)
        self.state.mkdir(mode=0o700, exist_ok=True)
        self._mount(["-t", "proc", "proc"], CHROOT / "proc")
        self._mount(["--rbind", "/dev"], CHROOT / "dev")
        self._mount(["--rbind", "/sys"], CHROOT / "sys")
        self._mount(["-t", "tmpfs", "tmpfs"], CHROOT / "run")
        for d in self.binds:
            self._mount(["--bind", str(d)], CHROOT / str(d).lstrip("/"))
            p = (CHROOT / str(d).lstrip("/")).parent
            while p != CHROOT and p != p.parent:  # the job user must be able to walk down to it
                p.chmod(p.stat().st_mode | 0o001)
                p = p.parent
        shutil.copy("/etc/hosts", CHROOT / "etc/hosts")
        (CHROOT / "etc/condor/config.d/99-satdrp-tests.conf").write_text(
            POOL_CONFIG.format(
                cpus=self.cpus, memory_mb=self.memory_mb, slot_memory_mb=self.memory_mb // self.cpus
            )
        )
        self.run(
            "sh",
            "-c",
            "mkdir -p /run/lock && install -d -o condor -g condor -m 0775 "
            "/run/condor /run/lock/condor /var/spool/condor /var/log/condor /var/lib/condor/execute",
        )
        if self.master_running():  # a pool left by a killed session: restart it with this config
            self._off()
        self.run("/usr/sbin/condor_master")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.run("condor_status", "-af", "Name", check=False, timeout=10)
            if "slot" in status.stdout:
                break
            time.sleep(0.3)
        else:
            raise RuntimeError(f"HTCondor pool did not come up in {timeout:.0f} s: {self.log_tail()}")
        uid_domain = self.run("condor_config_val", "UID_DOMAIN").stdout.strip()
        token = self.run("condor_token_create", "-identity", f"{JOB_USER}@{uid_domain}").stdout
        tokens = self.state / "tokens.d"
        tokens.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(tokens / JOB_USER, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token)
        self.client_config.write_text(CLIENT_CONFIG.format(tokens=tokens))
        self.uid = int(self.run("id", "-u", JOB_USER).stdout)
        return self

    def _off(self) -> None:
        self.run("condor_off", "-master", check=False, timeout=30)
        deadline = time.monotonic() + 30
        while self.master_running() and time.monotonic() < deadline:
            time.sleep(0.3)
        for pid in _in_chroot():  # what condor_off left (or everything, if it did not answer)
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        if self.master_running():
            self._off()
        # condor_procd and starters may linger a moment; unmount lazily so a busy mount cannot block
        for target in reversed(self._mounts):
            subprocess.run(["umount", "-R", "-l", str(target)], check=False, capture_output=True)
        self._mounts.clear()

    def log_tail(self, name: str = "MasterLog", lines: int = 20) -> str:
        path = CHROOT / "var/log/condor" / name
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return f"(no {path})"

    def queue(self) -> str:
        return self.run("condor_q", "-allusers", "-nobatch", check=False).stdout


def main(argv: list[str]) -> int:
    """``python -m tests.htcondor_pool up|down WORK``: start or stop the pool by hand."""
    if len(argv) != 2 or argv[0] not in ("up", "down"):
        print("usage: python -m tests.htcondor_pool up|down WORK_DIR", file=sys.stderr)
        return 2
    pool = CondorPool(Path(argv[1]).resolve())
    if argv[0] == "up":
        pool.start()
        print(f"pool up; export CONDOR_CONFIG={pool.client_config}")
    else:
        pool.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
