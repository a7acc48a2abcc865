"""The structure holds: layers without back-arrows, SQL only in bookkeeping/, campaign state written only
by ``bookkeeping.campaigns.transition``, no oversized modules."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "bookkeeping", "instrumentation", "science", "sites", "transfer", "drp", "commands")
SQL = re.compile(
    r"(?<![\w.])(?<!def )(text|select|update|delete|insert)\("
    r"|\bimport sqlalchemy\b|from sqlalchemy(\.\w+)* import"
)


def _sources(*packages: str) -> list[Path]:
    out = [p for pkg in packages for p in (ROOT / pkg).rglob("*.py")]
    return sorted(out + ([ROOT / "cli.py"] if "cli" in packages else []))


def test_import_layers_contract() -> None:
    """import-linter's contracts (pyproject.toml): each layer imports only from the ones below."""
    from importlinter.cli import lint_imports

    assert lint_imports(config_filename=str(ROOT / "pyproject.toml")) == 0


@pytest.mark.parametrize("path", _sources(*(p for p in PACKAGES if p != "bookkeeping"), "cli"), ids=str)
def test_no_sql_outside_bookkeeping(path: Path) -> None:
    """Outside bookkeeping/, SQLAlchemy appears only as the ``Session`` type that repositories take."""
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip() == "from sqlalchemy.orm import Session":
            continue
        assert not SQL.search(line), f"{path.relative_to(ROOT)}:{n}: SQL outside bookkeeping/: {line.strip()}"
        assert "bookkeeping.models" not in line, (
            f"{path.relative_to(ROOT)}:{n}: ORM models outside bookkeeping/"
        )


def _assigns_state(node: ast.AST) -> bool:
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        for t in node.targets:
            targets.extend(t.elts if isinstance(t, ast.Tuple) else [t])
    elif isinstance(node, ast.AugAssign | ast.AnnAssign):
        targets.append(node.target)
    return any(isinstance(t, ast.Attribute) and t.attr == "state" for t in targets)


def _updates_campaign_state(node: ast.AST) -> bool:
    """``update(Campaign)…values(state=…)``, or a ``values`` without keywords (it could set anything)."""
    if not (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "values"
    ):
        return False
    on_campaign = any(
        isinstance(n, ast.Call)
        and isinstance(n.func, ast.Name)
        and n.func.id == "update"
        and n.args
        and isinstance(n.args[0], ast.Name)
        and n.args[0].id == "Campaign"
        for n in ast.walk(node.func)
    )
    keys = {k.arg for k in node.keywords}
    return on_campaign and (None in keys or not keys or bool(keys & {"state", "message", "updated_at"}))


def test_campaign_state_written_only_by_transition() -> None:
    """Campaign rows are created in CREATED by create_campaign; only transition() changes their state."""
    for path in _sources("bookkeeping"):
        tree = ast.parse(path.read_text())
        for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
            writes_campaign = any(_updates_campaign_state(n) for n in ast.walk(fn))
            assert not writes_campaign, f"{path.name}:{fn.name} updates campaigns behind transition()"
            if path.name == "campaigns.py" and any(_assigns_state(n) for n in ast.walk(fn)):
                assert fn.name == "transition", f"campaigns.py:{fn.name} writes a state"
    others = [p for p in _sources(*PACKAGES) if p.name != "campaigns.py" or p.parent.name != "bookkeeping"]
    for path in others:
        assert "CampaignPhase" not in path.read_text() or path.name in ("models.py", "queries.py"), path


@pytest.mark.parametrize("path", _sources(*PACKAGES, "cli"), ids=str)
def test_no_module_over_600_lines(path: Path) -> None:
    n = len(path.read_text().splitlines())
    assert n <= 600, f"{path.relative_to(ROOT)} has {n} lines: split it"
