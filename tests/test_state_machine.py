"""The campaign state machine: random sequences of tick / kill / retry / cancel / failover never reach a
state the transitions table does not allow, and every move leaves exactly one event saying from and to.

The phases' work is replaced by outcomes hypothesis draws (advance, wait, fail, bad input, crash), so
thousands of sequences run against the real driver and the real bookkeeping (SQLite) in seconds.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bookkeeping import campaigns
from bookkeeping.campaigns import ACTIVE, TRANSITIONS, TransitionError, transition
from bookkeeping.database import Database
from bookkeeping.states import CampaignState
from common.errors import InvalidInputError
from drp.campaign import CampaignDriver
from drp.campaign_config import load_campaign
from drp.failover import _campaign_back
from sites.catalogue import load_catalogue

FORWARD = dict(zip(ACTIVE, (*ACTIVE[1:], CampaignState.DONE), strict=True))
OUTCOMES = ("advance", "wait", "fail", "bad-input", "crash")
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("tick"), st.sampled_from(OUTCOMES)),
        st.tuples(st.sampled_from(("retry", "cancel", "failover")), st.just("")),
    ),
    max_size=40,
)


class Crash(Exception):
    """A process killed in the middle of a phase: nothing of the tick is committed."""


class ScriptedDriver(CampaignDriver):
    """The real driver (lock, transition, events) with each phase's work replaced by a drawn outcome."""

    outcome = "wait"

    def _handlers(self) -> dict[CampaignState, Callable[[], tuple[CampaignState, str]]]:
        return dict.fromkeys(ACTIVE, self._scripted)

    def _scripted(self) -> tuple[CampaignState, str]:
        state = self.campaign().state
        if self.outcome == "crash":
            raise Crash
        if self.outcome == "bad-input":
            raise InvalidInputError("a drawn bad input")
        if self.outcome == "fail":
            return CampaignState.FAILED, "drawn failure"
        if self.outcome == "advance":
            return FORWARD[state], "drawn advance"
        return state, "drawn wait"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Database, Path]]:
    tmp = tmp_path_factory.mktemp("state-machine")
    (tmp / "sites.toml").write_text(
        f'[[site]]\nname = "a"\nrole = "lead"\nshare = 0.5\nstorage = "file://{tmp}/a"\n'
        f'[[site]]\nname = "b"\nrole = "satellite"\nshare = 0.5\nstorage = "file://{tmp}/b"\n'
    )
    db = Database(f"sqlite:///{tmp / 'bk.sqlite'}")
    db.upgrade()
    yield db, tmp
    db.dispose()


_names = itertools.count()


def _driver(db: Database, tmp: Path) -> ScriptedDriver:
    name = f"c{next(_names)}"
    path = tmp / f"{name}.toml"
    path.write_text(f'[campaign]\nname = "{name}"\nrelease = "r"\n')
    cfg = load_campaign(path)
    driver = ScriptedDriver(db, cfg, load_catalogue(tmp / "sites.toml"))
    driver.create()
    return driver


def _apply(driver: ScriptedDriver, op: str, arg: str) -> None:
    if op == "tick":
        driver.outcome = arg
        try:
            driver.tick()
        except Crash:
            pass
    elif op == "retry":
        try:
            driver.retry()
        except InvalidInputError:
            pass  # not FAILED: refused, nothing changes
    elif op == "cancel":
        driver.cancel()
    else:
        with driver.db.session() as session:
            camp = campaigns.get(session, driver.name)
            if camp.state not in (CampaignState.DONE, CampaignState.CANCELLED):  # as failover() refuses
                _campaign_back(session, camp, "drawn failover")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPERATIONS)
def test_random_operations_stay_inside_the_table(
    world: tuple[Database, Path], ops: list[tuple[str, str]]
) -> None:
    db, tmp = world
    driver = _driver(db, tmp)
    seen = [CampaignState.CREATED]
    for op, arg in ops:
        before = driver.campaign().state
        _apply(driver, op, arg)
        after = driver.campaign().state
        assert after is before or after in TRANSITIONS[before], f"{op} {arg}: {before.name} → {after.name}"
        if op == "tick" and arg == "crash":
            assert after is before  # a killed tick commits nothing
        if after is not before:
            seen.append(after)
    with db.session() as session:
        moves = campaigns.moves(session, driver.campaign().id)
    assert moves == [(a.name, b.name) for a, b in itertools.pairwise(seen)]  # one event per move, in order
    assert all(CampaignState[b] in TRANSITIONS[CampaignState[a]] for a, b in moves)


def test_transition_refuses_a_move_outside_the_table(world: tuple[Database, Path]) -> None:
    db, tmp = world
    driver = _driver(db, tmp)
    with db.session() as session:
        camp = campaigns.get(session, driver.name)
        with pytest.raises(TransitionError, match="CREATED cannot go to DONE"):
            transition(session, camp.id, CampaignState.DONE, "skip everything")
    driver.cancel()
    with db.session() as session, pytest.raises(TransitionError, match="CANCELLED cannot go to PLANNED"):
        transition(session, campaigns.get(session, driver.name).id, CampaignState.PLANNED, "revive")
    with db.session() as session:
        assert campaigns.moves(session, campaigns.get(session, driver.name).id) == [("CREATED", "CANCELLED")]


def test_retry_goes_back_to_the_phase_that_failed(world: tuple[Database, Path]) -> None:
    db, tmp = world
    driver = _driver(db, tmp)
    for outcome in ("advance", "advance", "advance", "fail"):  # CREATED → … → REPLICATING → FAILED
        driver.outcome = outcome
        driver.tick()
    assert driver.campaign().state is CampaignState.FAILED
    assert "back to REPLICATING" in driver.retry()
    assert driver.campaign().state is CampaignState.REPLICATING
