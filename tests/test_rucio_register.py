"""Registration in a real Rucio: files go in batches, several calls in flight (issue 22), each call adding
the replicas at the RSE and attaching the files to the dataset; a registration cut short is sent again
whole and ends with every file once; Rucio's refusal names the dataset and the RSE."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from bookkeeping import files as filedb
from bookkeeping.database import Database
from bookkeeping.files import FileRow
from common.errors import ServiceUnavailableError
from tests.contracts.test_replication import _catalogue
from tests.rucio_server import replication_settings
from transfer.replication.registry import get_replication
from transfer.replication.rucio import RucioBackend, RucioError


class _Flaky:
    """A client whose Nth registration call (counted over every client of the back-end) fails as a
    dropped connection does."""

    calls = 0
    fail_at: int | None = None
    lock = threading.Lock()

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def attach_dids_to_dids(self, *args: Any, **kwargs: Any) -> Any:
        with _Flaky.lock:
            _Flaky.calls += 1
            failing = _Flaky.calls == _Flaky.fail_at
        if failing:
            raise ServiceUnavailableError("Rucio at test cannot be reached (ConnectionError)")
        return self._client.attach_dids_to_dids(*args, **kwargs)


def _backend(tmp_path: Path, server: Any, monkeypatch: pytest.MonkeyPatch) -> RucioBackend:
    tag = uuid.uuid4().hex[:8].upper()
    settings = {**replication_settings(server, f"_G{tag}"), "register_batch": 2, "register_in_flight": 3}
    cat, _ = _catalogue(tmp_path, settings)
    backend = get_replication(cat)
    assert isinstance(backend, RucioBackend)
    connect = backend._connect
    monkeypatch.setattr(backend, "_connect", lambda: _Flaky(connect()))
    _Flaky.calls, _Flaky.fail_at = 0, None
    return backend


def _in_rucio(backend: RucioBackend, dataset: str) -> tuple[list[str], dict[str, int]]:
    """Names attached to the dataset (with repeats, if any), and replicas per RSE."""
    scope, name = dataset.split(":")
    content = sorted(c["name"] for c in backend.client.list_content(scope, name))
    per_rse: dict[str, int] = {}
    for rep in backend.client.list_replicas([{"scope": scope, "name": name}], all_states=True):
        for rse in rep["states"]:
            per_rse[rse] = per_rse.get(rse, 0) + 1
    return content, per_rse


def test_registration_cut_short_is_sent_again_whole(
    db: Database, tmp_path: Path, rucio_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = _backend(tmp_path, rucio_server, monkeypatch)
    scope = f"g{uuid.uuid4().hex[:8]}"
    dataset = f"{scope}:raw"
    rows = [FileRow(f"{scope}/raw/f{i:03d}.fits", 100 + i, f"{i + 1:08x}") for i in range(11)]
    _Flaky.fail_at = 4  # 6 calls of 2 files, 3 at once: some land, one fails, the rest may not be sent
    with pytest.raises(ServiceUnavailableError), db.session() as s:
        backend.register(s, dataset, rows, "ncsa")
    content, _ = _in_rucio(backend, dataset)
    assert 0 < len(content) < len(rows)
    with db.session() as s:
        assert filedb.dataset(s, scope, "raw") is None, "the books rolled back with the failed call"

    _Flaky.fail_at = None
    with db.session() as s:
        result = backend.register(s, dataset, rows, "ncsa")
    assert result.n_files == len(rows)
    content, per_rse = _in_rucio(backend, dataset)
    assert content == sorted(r.name.split("/", 1)[1] for r in rows)
    assert per_rse == {backend.rse("ncsa"): len(rows)}


def test_a_file_registered_with_other_bytes_is_refused(
    db: Database, tmp_path: Path, rucio_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = _backend(tmp_path, rucio_server, monkeypatch)
    scope = f"g{uuid.uuid4().hex[:8]}"
    rows = [FileRow(f"{scope}/raw/f{i:03d}.fits", 100 + i, f"{i + 1:08x}") for i in range(5)]
    with db.session() as s:
        backend.register(s, f"{scope}:raw", rows, "ncsa")
    other = Database(f"sqlite:///{tmp_path / 'other.sqlite'}")  # a second catalogue that disagrees
    other.upgrade()
    wrong = [FileRow(rows[3].name, 999, rows[3].adler32)]
    with pytest.raises(RucioError, match=r"(?s)refused .* bytes mismatch"), other.session() as s:
        backend.register(s, f"{scope}:raw", wrong, "in2p3")
    other.dispose()
