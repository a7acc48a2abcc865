"""A real Prometheus and a real Pushgateway on 127.0.0.1 for the monitoring tests (Debian packages;
recipe: ../shared/reference/services/RECIPES.md). Temporary storage, explicit listen addresses."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bookkeeping.pgserver import free_port


def available() -> bool:
    return all(shutil.which(b) for b in ("prometheus", "promtool", "prometheus-pushgateway"))


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s")


@dataclass
class Pushgateway:
    base: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Pushgateway:
        self.port = free_port()
        self.base.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                "prometheus-pushgateway",
                f"--web.listen-address=127.0.0.1:{self.port}",
                f"--persistence.file={self.base / 'pushgateway.data'}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.base / "pushgateway.log", "wb"),
        )
        _wait_http(f"{self.url}/-/ready", self.proc)
        return self

    def stop(self) -> None:
        _stop(self.proc)


@dataclass
class Prometheus:
    base: Path
    targets: dict[str, str]  # job -> host:port
    rule_files: tuple[Path, ...] = ()
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Prometheus:
        self.port = free_port()
        self.base.mkdir(parents=True, exist_ok=True)
        rules = []
        for f in self.rule_files:
            shutil.copy(f, self.base / f.name)
            rules.append(f.name)
        scrape = "".join(
            f"  - job_name: {job}\n    honor_labels: true\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
            for job, target in self.targets.items()
        )
        (self.base / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            + (f"rule_files: {json.dumps(rules)}\n" if rules else "")
            + "scrape_configs:\n"
            + scrape
        )
        self.proc = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={self.base / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.base / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.base / "prometheus.log", "wb"),
        )
        _wait_http(f"{self.url}/-/ready", self.proc)
        return self

    def query(self, expr: str) -> dict[str, Any]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return dict(json.loads(r.read()))
        except urllib.error.HTTPError as err:
            return dict(json.loads(err.read()))

    def wait_for(self, expr: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            res = self.query(expr)
            if res.get("status") == "success" and res["data"]["result"]:
                return list(res["data"]["result"])
            time.sleep(0.25)
        raise AssertionError(f"no data for {expr} after {timeout:.0f} s")

    def stop(self) -> None:
        _stop(self.proc)


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
