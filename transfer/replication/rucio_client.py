"""The Rucio client as the ``rucio`` back-end uses it: "the server cannot be reached" (connection refused,
timeouts, every retry unanswered) is told apart from "the server refused", and becomes
ServiceUnavailableError, which a campaign tick reports with exit 3 (nothing changed; the next tick
retries) instead of failing the campaign. Also how clients are made (:func:`connect`) and how calls are
sent several at once, one client per call in flight (:func:`in_flight`)."""

from __future__ import annotations

import os
import queue
import types
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from common.errors import ConfigError, DrpError, ServiceUnavailableError, unreachable

from .rucio_settings import RucioSettings

T = TypeVar("T")


def chunks(items: Sequence[T], n: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def in_flight(clients: Sequence[Any], calls: Sequence[T], send: Callable[[Any, T], None]) -> None:
    """``send(client, call)`` for every call, as many at once as there are clients, each client used by
    one call at a time (a client is one HTTP session: not shared between threads); in order, on the
    caller's thread, with one client. On the first failure the calls not sent yet are dropped, those
    in flight end, and the failure is raised."""
    if len(clients) <= 1 or len(calls) <= 1:
        for call in calls:
            send(clients[0], call)
        return
    free: queue.SimpleQueue[Any] = queue.SimpleQueue()
    for c in clients:
        free.put(c)

    def one(call: T) -> None:
        client = free.get()
        try:
            send(client, call)
        finally:
            free.put(client)

    pool = ThreadPoolExecutor(len(clients), thread_name_prefix="rucio-call")
    try:
        for _ in pool.map(one, calls):
            pass
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class RucioError(DrpError):
    """The Rucio server refused or could not be reached."""


def password(s: RucioSettings) -> str | None:
    if s.password_env:
        return os.environ.get(s.password_env)
    return s.password.get_secret_value() if s.password else None


def connect(s: RucioSettings) -> Guarded:
    """A new authenticated client (its own HTTP session), Guarded."""
    from rucio.client import Client

    creds: dict[str, str] = {}
    if s.auth_type == "userpass":
        secret = password(s)
        if s.password_env and secret is None:
            raise ConfigError("site catalogue", "replication.password_env", f"${s.password_env} is not set")
        if not s.username or secret is None:
            raise ConfigError("site catalogue", "replication", "userpass needs username and password(_env)")
        creds = {"username": s.username, "password": secret}
    elif s.auth_type in ("x509", "x509_proxy") and s.client_cert:
        creds = {"client_cert": s.client_cert, "client_key": s.client_key or s.client_cert}
    try:
        raw = Client(
            rucio_host=s.host,
            auth_host=s.auth_host or s.host,
            account=s.account,
            auth_type=s.auth_type,
            creds=creds,
            ca_cert=s.ca_cert,
            timeout=s.timeout_s,
        )
    except Exception as err:  # rucio raises its own tree; say which server, never the password
        if unreachable(err):
            raise ServiceUnavailableError(
                f"Rucio at {s.host} cannot be reached ({type(err).__name__})"
            ) from err
        raise RucioError(
            f"cannot connect to Rucio at {s.host} as {s.account}: {type(err).__name__}: {err}"
        ) from err
    return Guarded(raw, s.host)


class Guarded:
    """The Rucio client, with "cannot reach the server" turned into ServiceUnavailableError (exit 3 for
    a tick: nothing changed, the next tick retries) for calls and for the generators they return."""

    def __init__(self, client: Any, host: str) -> None:
        self._client = client
        self._host = host

    def _down(self, err: BaseException) -> ServiceUnavailableError:
        return ServiceUnavailableError(f"Rucio at {self._host} cannot be reached ({type(err).__name__})")

    def _iterate(self, items: Iterator[Any]) -> Iterator[Any]:
        try:
            yield from items
        except Exception as err:
            if unreachable(err):
                raise self._down(err) from err
            raise

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                out = attr(*args, **kwargs)
            except Exception as err:
                if unreachable(err):
                    raise self._down(err) from err
                raise
            return self._iterate(out) if isinstance(out, types.GeneratorType) else out

        return call
