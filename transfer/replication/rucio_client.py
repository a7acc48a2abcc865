"""The Rucio client as the ``rucio`` back-end uses it: "the server cannot be reached" (connection refused,
timeouts, every retry unanswered) is told apart from "the server refused", and becomes
ServiceUnavailableError, which a campaign tick reports with exit 3 (nothing changed; the next tick
retries) instead of failing the campaign."""

from __future__ import annotations

import types
from collections.abc import Iterator
from typing import Any

from common.errors import ServiceUnavailableError, unreachable


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
