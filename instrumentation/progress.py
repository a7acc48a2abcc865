"""Progress reporting that core code can call without knowing where it is shown.

Core functions take a :class:`ProgressFactory`; the CLI passes :func:`terminal_progress`, which draws a
bar on a terminal and writes a plain log line every few seconds otherwise (cron, CI, pipes).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

log = logging.getLogger("drp.progress")

Advance = Callable[[int], None]


class ProgressFactory(Protocol):
    def __call__(self, description: str, total: int | None) -> AbstractContextManager[Advance]: ...


@contextmanager
def no_progress(description: str, total: int | None) -> Iterator[Advance]:
    yield lambda n: None


@contextmanager
def terminal_progress(description: str, total: int | None) -> Iterator[Advance]:
    if sys.stderr.isatty():
        from rich.progress import Progress

        with Progress(transient=False) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n: bar.advance(task, n)
        return
    done = 0
    last = time.monotonic()
    start = last

    def advance(n: int) -> None:
        nonlocal done, last
        done += n
        now = time.monotonic()
        if now - last >= 5.0:
            last = now
            log.info("%s: %d%s", description, done, f"/{total}" if total else "")

    yield advance
    log.info("%s: %d done in %.1f s", description, done, time.monotonic() - start)


class EngineProgress:
    """The transfer engine's progress: a rich bar on a terminal, a log line every 5 s otherwise (cron)."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.task: Any = None
        self.last = 0.0

    def __call__(self, r: Any) -> None:
        total = r.done + r.failed + r.pending
        if sys.stderr.isatty():
            if self.bar is None:
                from rich.progress import Progress

                self.bar = Progress(transient=False)
                self.bar.start()
                self.task = self.bar.add_task("transfers", total=total)
            self.bar.update(self.task, completed=r.done + r.failed, total=total)
        elif time.monotonic() - self.last >= 5:
            self.last = time.monotonic()
            log.info("transfers: %d done, %d failed, %d pending", r.done, r.failed, r.pending)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
