"""`drp db`: create, migrate and inspect the bookkeeping schema."""

from __future__ import annotations

import click

from common.errors import EXIT_SCHEMA

from .context import (
    DrpGroup,
    database,
)
from .render import emit_json


@click.group(cls=DrpGroup)
def db() -> None:
    """Create and migrate the bookkeeping database."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target Alembic revision.")
@click.pass_context
def db_upgrade(ctx: click.Context, revision: str) -> None:
    """Create the schema or migrate it to REVISION (safe to repeat)."""
    bk = database(ctx)
    before = bk.current_revision()
    bk.upgrade(revision)
    after = bk.current_revision()
    click.echo(f"{bk!r}: {before or 'empty'} -> {after}")


@db.command("downgrade")
@click.argument("revision")
@click.option("--yes", is_flag=True, help="Confirm: downgrading drops tables and their data.")
@click.pass_context
def db_downgrade(ctx: click.Context, revision: str, yes: bool) -> None:
    """Migrate the schema down to REVISION ('base' drops everything)."""
    if not yes:
        raise click.UsageError("downgrading drops data; pass --yes to confirm")
    bk = database(ctx)
    bk.downgrade(revision)
    click.echo(f"{bk!r}: now at {bk.current_revision() or 'base'}")


@db.command("current")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def db_current(ctx: click.Context, as_json: bool) -> None:
    """Show the schema revision and whether it is the one this satdrp expects (exit 4 if not)."""
    from bookkeeping.database import expected_head

    bk = database(ctx)
    current, head = bk.current_revision(), expected_head()
    if as_json:
        emit_json(
            {"database": repr(database), "current": current, "expected": head, "up_to_date": current == head}
        )
    else:
        click.echo(
            f"{bk!r}: current {current or 'empty'}, expected {head}"
            + ("" if current == head else " (run `drp db upgrade`)")
        )
    if current != head:
        ctx.exit(EXIT_SCHEMA)
