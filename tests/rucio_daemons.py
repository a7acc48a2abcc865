"""Rucio's own daemons for the conveyor tests: judge-evaluator, conveyor-submitter, -poller and
-finisher and the necromancer (bad replicas), each once per cycle with no partition wait, cycle after
cycle until SIGTERM. With ``--gate FILE`` a cycle runs only while FILE exists (the tests open the gate
for the conveyor cases only, so the other back-ends' cases sharing the server see no daemon): a cycle
stops between two daemons when the gate closes, and holds an exclusive lock on FILE.busy while it
runs, so that closing the gate can wait until no daemon is at work (the necromancer acts on every bad
replica of the server, and once repaired one declared by the next, non-conveyor, test).

Runs with the Rucio *server* venv's Python (it imports rucio.daemons, which the client venv lacks) and
RUCIO_CONFIG pointing at the test server's configuration; imports nothing of satdrp. Each cycle's
timings go to stdout, one line per cycle, for the benchmark and for debugging.

    RUCIO_CONFIG=… .venv-rucio/bin/python tests/rucio_daemons.py [--pause 0.2] [--cycles N]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

stopping = False


def _stop(*_: Any) -> None:
    global stopping
    stopping = True


def necromancer_pass(bulk: int) -> None:
    """One necromancer pass: the stock entry point hard-wires a 10 s partition wait, which would make
    every cycle 10 s long; the same run_once through run_daemon without it."""
    import functools

    from rucio.daemons.badreplicas import necromancer
    from rucio.daemons.common import run_daemon

    run_daemon(
        once=True,
        graceful_stop=necromancer.graceful_stop,
        executable=necromancer.DAEMON_NAME,
        partition_wait_time=0,
        sleep_time=60,
        run_once_fnc=functools.partial(necromancer.run_once, bulk=bulk),
    )


def cycle(pause: float, group_bulk: int = 1, gate: Path | None = None) -> dict[str, float]:
    from rucio.daemons.conveyor.finisher import finisher
    from rucio.daemons.conveyor.poller import poller
    from rucio.daemons.conveyor.submitter import submitter
    from rucio.daemons.judge.evaluator import re_evaluator

    took: dict[str, float] = {}
    steps = (
        ("judge", lambda: re_evaluator(once=True, did_limit=10000)),
        (
            "submitter",
            lambda: submitter(
                once=True, partition_wait_time=0, transfertools=["fts3"], bulk=10000, group_bulk=group_bulk
            ),
        ),
        ("pause", lambda: time.sleep(pause)),  # FTS copies asynchronously
        (
            "poller",
            lambda: poller(once=True, partition_wait_time=0, older_than=0, db_bulk=10000, fts_bulk=100),
        ),
        ("finisher", lambda: finisher(once=True, partition_wait_time=0, db_bulk=10000, bulk=10000)),
        ("necromancer", lambda: necromancer_pass(10000)),
    )
    for name, step in steps:
        if gate is not None and not gate.exists():
            break
        started = time.monotonic()
        step()
        took[name] = round(time.monotonic() - started, 3)
    return took


@contextmanager
def busy(gate: Path | None) -> Iterator[None]:
    """An exclusive lock on GATE.busy for the length of a cycle (see the module's docstring)."""
    if gate is None:
        yield
        return
    with open(gate.with_name(gate.name + ".busy"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pause", type=float, default=0.2, help="seconds between submitting and polling")
    ap.add_argument("--cycles", type=int, default=0, help="stop after N cycles (0: until SIGTERM)")
    ap.add_argument("--gate", type=Path, default=None, help="run cycles only while this file exists")
    ap.add_argument("--group-bulk", type=int, default=1, help="files per FTS job (Rucio's default: 1)")
    args = ap.parse_args()
    logging.getLogger().setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, _stop)
    n = 0
    while not stopping and (args.cycles == 0 or n < args.cycles):
        if args.gate is not None and not args.gate.exists():
            time.sleep(0.1)
            continue
        try:
            with busy(args.gate):
                took = cycle(args.pause, args.group_bulk, args.gate)
        except Exception as err:  # a daemon pass failing (database busy…) must not end the loop
            print(json.dumps({"cycle": n, "error": f"{type(err).__name__}: {err}"}), flush=True)
            time.sleep(1.0)
            continue
        print(json.dumps({"cycle": n, **took}), flush=True)
        n += 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
