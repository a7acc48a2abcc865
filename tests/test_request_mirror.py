"""RequestMirror against a stand-in for Rucio's request API whose history order changes whenever rows
are added (Rucio's history query has no ORDER BY): no request is lost, none duplicated."""

from __future__ import annotations

import random
from typing import Any

from sqlalchemy import text

from bookkeeping import rules as ruledb
from bookkeeping.database import Database
from bookkeeping.files import FileRow
from bookkeeping.states import TransferState
from sites.catalogue import parse_catalogue
from transfer.replication.conveyor import RequestMirror
from transfer.replication.embedded import EmbeddedBackend, ensure_sites


class ShuffledHistory:
    def __init__(self) -> None:
        self.live: list[dict[str, Any]] = []
        self.history: list[dict[str, Any]] = []

    def list_requests(self, src: str, dst: str, states: str) -> list[dict[str, Any]]:
        return [r for r in self.live if (r["source_rse"], r["dest_rse"]) == (src, dst)]

    def list_requests_history(self, src: str, dst: str, states: str, offset: int, limit: int) -> list[Any]:
        mine = [r for r in self.history if (r["source_rse"], r["dest_rse"]) == (src, dst)]
        random.Random(len(self.history)).shuffle(mine)  # an order that changes when rows are added
        return mine[offset : offset + limit]


def _request(i: int, rule: str, state: str) -> dict[str, Any]:
    return {
        "id": f"req{i:03d}",
        "rule_id": rule,
        "scope": "s",
        "name": f"d/f{i:03d}",
        "source_rse": "A",
        "dest_rse": "B",
        "state": state,
        "bytes": 10,
        "retry_count": 0,
        "external_id": f"fts-{i}",
    }


def test_unordered_history_loses_no_request(db: Database, tmp_path: Any) -> None:
    cat = parse_catalogue(
        {
            "site": [
                {"name": "a", "role": "lead", "share": 0.5, "storage": f"file://{tmp_path}/a"},
                {"name": "b", "role": "satellite", "share": 0.5, "storage": f"file://{tmp_path}/b"},
            ]
        },
        "test",
    )
    backend = EmbeddedBackend(EmbeddedBackend.Settings(), cat)
    with db.session() as s:
        backend.register(s, "s:d", [FileRow(f"s/d/f{i:03d}", 10, "00000001") for i in range(40)], "a")
        rule = backend.add_rule(s, "s:d", "site=b")
        ruledb.set_external_id(s, rule.id, "R1")
        ids = ensure_sites(s, backend)
    client = ShuffledHistory()
    mirror = RequestMirror(client, {"A": ids["a"], "B": ids["b"]})
    client.history = [_request(i, "R1", "DONE") for i in range(20)]
    client.live = [_request(i, "R1", "SUBMITTED") for i in range(20, 40)]
    with db.session() as s:
        mirror.mirror(s)
    # the live ones finish and are archived; the history comes back in another order each call, and
    # the mirror's offset (20) now points into the middle of it
    client.history += [_request(i, "R1", "DONE") for i in range(20, 40)]
    client.live = []
    mirror_pages = 7
    import transfer.replication.conveyor as conveyor

    conveyor.HISTORY_PAGE, saved = mirror_pages, conveyor.HISTORY_PAGE
    try:
        with db.session() as s:
            mirror.mirror(s)
    finally:
        conveyor.HISTORY_PAGE = saved
    with db.session() as s:
        rows = s.execute(
            text("SELECT request_id, state FROM transfers WHERE mover = 'rucio' ORDER BY request_id")
        ).all()
    assert [r for r, _ in rows] == [f"req{i:03d}" for i in range(40)]
    assert {TransferState(st) for _, st in rows} == {TransferState.DONE}
