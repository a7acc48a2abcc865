"""A TCP proxy in front of a real service that a test can take away and bring back.

Down, the port is closed (clients get "connection refused", as from a stopped server) and every open
connection is cut; up again, the same port forwards to the service. Used to stop Rucio, FTS3 or any
HTTP service mid-campaign without stopping the session's shared server.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self.connections = 0  # accepted while up, for tests that check the service was (not) called
        self._trap: tuple[re.Pattern[bytes], int] | None = None
        self._mute = False

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def is_up(self) -> bool:
        return self._listener is not None

    def up(self) -> FaultProxy:
        if self._listener is not None:
            return self
        self._mute = False
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.1)
        self._listener = listener
        self._acceptor = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._acceptor.start()
        return self

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is None:
            return
        if self._acceptor is not None:
            self._acceptor.join()
        listener.close()
        with self._lock:
            conns, self._open = set(self._open), set()
        for conn in conns:
            _close(conn)

    def down_after(self, request: bytes, count: int = 1) -> None:
        """Go down once the ``count``-th request whose first line matches ``request`` (a regex) has
        reached the service, before its answer is back: the worst moment for the client, which cannot
        know whether the call took effect."""
        self._trap = (re.compile(request), count)

    def _check_trap(self, chunk: bytes) -> bool:
        if self._trap is None:
            return False
        pattern, left = self._trap
        left -= sum(1 for line in chunk.split(b"\r\n") if pattern.match(line))
        self._trap = (pattern, left) if left > 0 else None
        return left <= 0

    @contextmanager
    def away(self) -> Iterator[None]:
        self.down()
        try:
            yield
        finally:
            self.up()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                _close(client)
                continue
            client.settimeout(None)
            server.settimeout(None)
            with self._lock:
                self._open.update((client, server))
                self.connections += 1
            for a, b, upstream in ((client, server, True), (server, client, False)):
                threading.Thread(target=self._pump, args=(a, b, upstream), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while chunk := src.recv(65536):
                if not upstream and self._mute:
                    continue  # the answer to the trapped request is lost
                if upstream and self._check_trap(chunk):
                    self._mute = True
                    dst.sendall(chunk)
                    time.sleep(0.5)  # the service acts on the request
                    threading.Thread(target=self.down, daemon=True).start()
                    return
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with self._lock:
                    self._open.discard(s)
                _close(s)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()


class ProcessProxy:
    """The same proxy in a process of its own, started and killed: for clients whose calls hold the
    GIL while they wait (the HTCondor bindings), which would starve a proxy thread in their process."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def is_up(self) -> bool:
        return self._proc is not None

    def up(self) -> ProcessProxy:
        if self._proc is not None:
            return self
        host, port = self.upstream
        args = [sys.executable, "-m", "tests.fault_proxy", host, str(port), str(self.port)]
        self._proc = subprocess.Popen(args)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"proxy on port {self.port} did not start")

    def down(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait()


def main(argv: list[str]) -> int:
    """``python -m tests.fault_proxy UPSTREAM_HOST UPSTREAM_PORT PORT``: forward until killed."""
    proxy = FaultProxy(argv[0], int(argv[1]))
    proxy.port = int(argv[2])
    proxy.up()
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
