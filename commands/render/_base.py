"""The basics every renderer uses: JSON for scripts, rich tables for people, number formats."""

from __future__ import annotations

import json
from typing import Any

import click


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Table(title=title)
    for col in columns:
        out.add_column(
            col, justify="right" if col in ("share", "files", "bytes", "jobs", "transfers") else "left"
        )
    for row in rows:
        out.add_row(*(f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v) for v in row))
    Console(soft_wrap=True).print(out)


def ranges(values: list[int]) -> str:
    """1,2,3,7 -> '1-3,7' (tract lists can be long)."""
    out: list[str] = []
    for v in values:
        if out and "-" not in out[-1].split(",")[-1] and int(out[-1].split(",")[-1]) == v - 1:
            out[-1] += f"-{v}"
        elif out and "-" in out[-1] and int(out[-1].rsplit("-", 1)[1]) == v - 1:
            out[-1] = out[-1].rsplit("-", 1)[0] + f"-{v}"
        else:
            out.append(str(v))
    return ",".join(out)


def num(v: float | None, fmt: str) -> str:
    return "" if v is None else format(v, fmt)


def mib(v: float | None, fmt: str = ".1f") -> str:
    return num(v and v / 2**20, fmt)
