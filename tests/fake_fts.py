"""A small, honest FTS3 REST server for tests: the subset the ``fts3`` client uses (``GET /``,
``GET /whoami``, ``POST /jobs``, ``GET /jobs/{id}``, ``GET /jobs/{id}/files``, ``GET /jobs/{id}/dm``,
``DELETE /jobs/{id}``) and the one Rucio's conveyor uses (the bulk ``GET /jobs/{id1},{id2}?files=…``
answer with ``http_status``, ``job_metadata`` and ``files`` per job), that really copies files.

Storage URLs are mapped to local directories (``storage={"davs://ncsa.test/data": Path(...)}``);
``root://`` URLs that are not mapped are copied by ``xrdcp`` (third-party copy between XRootD servers,
the destination's adler32 checked against the requested one by xrdcp itself). Each submitted job is
copied in a background thread: SUBMITTED → ACTIVE → FINISHED or FAILED, with FTS-style reasons. Like
a real FTS it verifies the user checksum (``verify_checksum``), refuses a malformed checksum string or
a job without files (400), an unknown job (404) and a wrong token (403). ``anonymous=True`` accepts
requests without a token: what Rucio sends to an ``http://`` FTS endpoint.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

_CHECKSUM = re.compile(r"^(?i:adler32):[0-9a-fA-F]{8}$")
_TERMINAL = {"FINISHED", "FAILED", "FINISHEDDIRTY", "CANCELED"}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())


class FakeFTS:
    def __init__(
        self, storage: dict[str, Path], token: str, delay_s: float = 0.05, *, anonymous: bool = False
    ) -> None:
        self.storage = storage
        self.token = token
        self.delay_s = delay_s
        self.anonymous = anonymous
        self.jobs: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, Authorization
        self.lock = threading.Lock()
        self.httpd: ThreadingHTTPServer | None = None
        self.port = 0
        self.going = threading.Event()  # cleared: accepted jobs wait, as on a busy FTS
        self.going.set()

    # -- storage -----------------------------------------------------------------------------------
    def local(self, url: str) -> Path | None:
        if url.startswith("file://"):  # a posix storage element: the path itself
            return Path(urlsplit(url).path)
        for prefix, root in self.storage.items():
            if url.startswith(prefix.rstrip("/") + "/"):
                return root / url[len(prefix.rstrip("/")) + 1 :]
        return None

    def _xrdcp(self, f: dict[str, Any], verify: bool) -> str:
        """Copy with xrdcp (a root:// end): returns FTS's reason for a failure, "" when done."""
        src = self.local(f["source_surl"]) or f["source_surl"]
        dst = self.local(f["dest_surl"]) or f["dest_surl"]
        if isinstance(dst, Path):
            dst.parent.mkdir(parents=True, exist_ok=True)
        want = (f.get("checksum") or "").partition(":")[2].lower()
        cmd = ["xrdcp", "--force", "--nopbar", "--tpc", "first"]
        if verify and want:
            cmd += ["--cksum", f"adler32:{want}", "--rm-bad-cksum"]
        proc = subprocess.run(
            [*cmd, str(src), str(dst)], capture_output=True, text=True, check=False, timeout=120
        )
        if proc.returncode == 0:
            return ""
        err = " ".join(proc.stderr.replace("\x00", " ").split())[-300:]  # xrdcp ends messages with NUL
        if "checksum" in err.lower():
            return f"TRANSFER [5] DESTINATION CHECKSUM MISMATCH user defined {want} != destination ({err})"
        if "no such file" in err.lower() or "not found" in err.lower():
            return f"SOURCE [2] {f['source_surl']}: No such file or directory ({err})"
        return f"TRANSFER [{proc.returncode}] {err}"

    def _copy(self, job: dict[str, Any], f: dict[str, Any]) -> None:
        src, dst = self.local(f["source_surl"]), self.local(f["dest_surl"])
        with self.lock:
            f["file_state"], f["start_time"] = "ACTIVE", _now()
            job["job"]["job_state"] = "ACTIVE"
        time.sleep(self.delay_s)
        started = time.monotonic()
        reason = ""
        verify = job["submission"]["params"].get("verify_checksum") not in (None, False, "none")
        xroot = "root:" in (f["source_surl"][:5], f["dest_surl"][:5])
        if xroot and (src is None or dst is None):
            reason = self._xrdcp(f, verify)
            if not reason:
                f["filesize"] = f.get("user_filesize") or 0
        elif src is None or not src.is_file():
            reason = f"SOURCE [2] {f['source_surl']}: No such file or directory"
        elif dst is None:
            reason = f"DESTINATION [22] {f['dest_surl']}: unknown storage"
        else:
            try:
                dst.parent.mkdir(parents=True, exist_ok=True)
                tmp = dst.with_name(dst.name + ".fts-part")
                shutil.copyfile(src, tmp)
            except OSError as err:
                reason = f"DESTINATION [{err.errno}] {f['dest_surl']}: {err.strerror}"
            else:
                got = f"{zlib.adler32(tmp.read_bytes()) & 0xFFFFFFFF:08x}"
                want = (f.get("checksum") or "").partition(":")[2].lower()
                if verify and want != got:
                    tmp.unlink()
                    reason = (
                        f"TRANSFER [5] DESTINATION CHECKSUM MISMATCH user defined {want} != destination {got}"
                    )
                else:
                    tmp.replace(dst)
                    f["filesize"] = dst.stat().st_size
        with self.lock:
            f["file_state"] = "FAILED" if reason else "FINISHED"
            f["reason"], f["finish_time"] = reason, _now()
            f["tx_duration"] = time.monotonic() - started

    def _run(self, job: dict[str, Any]) -> None:
        self.going.wait()
        for f in job["files"]:
            if f["file_state"] == "CANCELED":
                continue
            self._copy(job, f)
        with self.lock:
            states = {f["file_state"] for f in job["files"]}
            if job["job"]["job_state"] != "CANCELED":
                job["job"]["job_state"] = (
                    "FINISHED"
                    if states == {"FINISHED"}
                    else "FAILED"
                    if "FINISHED" not in states
                    else "FINISHEDDIRTY"
                )
                job["job"]["job_finished"] = _now()

    # -- REST --------------------------------------------------------------------------------------
    def handle(
        self, method: str, path: str, auth: str | None, body: bytes, query: dict[str, list[str]] | None = None
    ) -> tuple[int, Any]:
        if path == "/" and method == "GET":
            return 200, {
                "api": {"major": 3, "minor": 14, "patch": 2},
                "schema": {"major": 9, "minor": 0, "patch": 0},
            }
        if auth != f"Bearer {self.token}" and not (self.anonymous and auth is None):
            return 403, {"status": "403 Forbidden", "message": "Invalid or missing token"}
        bulk = re.fullmatch(r"/jobs/([^/]+)", path)
        if method == "GET" and bulk and ("," in bulk.group(1) or "files" in (query or {})):
            return self._bulk_status(bulk.group(1).split(","))
        if path == "/whoami" and method == "GET":
            return 200, {"user_dn": "token:test", "delegation_id": "0", "vos": ["lsst"], "method": "oauth2"}
        if path == "/jobs" and method == "POST":
            try:
                sub = json.loads(body)
            except ValueError:
                return 400, {"status": "400 Bad Request", "message": "Badly formatted JSON request"}
            files = sub.get("files") or []
            if not files:
                return 400, {
                    "status": "400 Bad Request",
                    "message": "No transfers or namespace operations specified",
                }
            for f in files:
                if not f.get("sources") or not f.get("destinations"):
                    return 400, {"status": "400 Bad Request", "message": "Missing sources or destinations"}
                if f.get("checksum") and not _CHECKSUM.match(f["checksum"]):
                    return 400, {
                        "status": "400 Bad Request",
                        "message": f"Invalid checksum {f['checksum']!r}",
                    }
            job_id = str(uuid.uuid1())
            job = {
                "job": {
                    "job_id": job_id,
                    "job_state": "SUBMITTED",
                    "submit_time": _now(),
                    "job_finished": None,
                },
                "submission": sub,
                "files": [
                    {
                        "file_id": 1000 + i,
                        "file_index": i,
                        "job_id": job_id,
                        "file_state": "SUBMITTED",
                        "source_surl": f["sources"][0],
                        "dest_surl": f["destinations"][0],
                        "checksum": f.get("checksum"),
                        "user_filesize": f.get("filesize") or 0,
                        "filesize": 0,
                        "file_metadata": f.get("metadata"),
                        "reason": "",
                        "tx_duration": None,
                    }
                    for i, f in enumerate(files)
                ],
            }
            with self.lock:
                self.jobs[job_id] = job
            threading.Thread(target=self._run, args=(job,), daemon=True).start()
            return 200, {"job_id": job_id}
        m = re.fullmatch(r"/jobs/([^/]+)(/files|/dm)?", path)
        if m:
            found = self.jobs.get(m.group(1))
            if found is None:
                return 404, {
                    "status": "404 Not Found",
                    "message": f'No job with the id "{m.group(1)}" has been found',
                }
            with self.lock:
                if method == "GET" and m.group(2) == "/files":
                    return 200, [dict(f) for f in found["files"]]
                if method == "GET" and m.group(2) == "/dm":
                    return 200, []
                if method == "GET":
                    return 200, dict(found["job"])
                if method == "DELETE" and m.group(2) is None:
                    if found["job"]["job_state"] not in _TERMINAL:
                        found["job"]["job_state"] = "CANCELED"
                        for f in found["files"]:
                            if f["file_state"] not in _TERMINAL:
                                f["file_state"] = "CANCELED"
                    return 200, dict(found["job"])
        return 404, {"status": "404 Not Found", "message": f"no route {method} {path}"}

    def _bulk_status(self, ids: list[str]) -> tuple[int, Any]:
        """What Rucio's poller reads: one object per job id (a list for several), lost jobs as 404s."""
        out: list[dict[str, Any]] = []
        with self.lock:
            for jid in ids:
                job = self.jobs.get(jid)
                if job is None:
                    message = f'No job with the id "{jid}" has been found'
                    out.append({"job_id": jid, "http_status": "404 Not Found", "http_message": message})
                    continue
                files = [
                    {
                        "start_time": None,
                        "finish_time": None,
                        "staging_start": None,
                        "staging_finished": None,
                        **f,
                    }
                    for f in job["files"]
                ]
                metadata = job["submission"].get("params", {}).get("job_metadata", {})
                out.append(
                    {
                        **job["job"],
                        "http_status": "200 Ok",
                        "job_metadata": metadata,
                        "job_type": "N",
                        "files": files,
                    }
                )
        return 200, out[0] if len(out) == 1 else out

    def serve(self, port: int = 0) -> str:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _do(self) -> None:
                parts = urlsplit(self.path)
                path = re.sub(r"/+", "/", parts.path)
                if len(path) > 1:
                    path = path.rstrip("/")
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                auth = self.headers.get("Authorization")
                fake.requests.append((self.command, path, auth))
                status, obj = fake.handle(self.command, path, auth, body, parse_qs(parts.query))
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _do

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.port}"

    def restart(self, down_s: float = 0.0) -> None:
        """Stop, stay down ``down_s`` seconds, come back on the same port having forgotten every job
        (an FTS whose database was lost): their polls get 404 and Rucio marks the requests LOST."""
        port = self.port
        self.stop()
        with self.lock:
            self.jobs.clear()
        time.sleep(down_s)
        self.serve(port)

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None
