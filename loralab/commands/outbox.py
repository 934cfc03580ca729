"""`loralab outbox …`: the Discord messages and Celery sends the relay gave up on.

A dead letter is an outbox row the relay stopped trying: Discord refused it for good
(a deleted channel, a missing permission) or it ran out of attempts. Each keeps its
reason. After fixing the cause (restoring a channel, granting a permission), an
operator re-drives it: the relay delivers it on its next pass.
"""

from __future__ import annotations

import click
from sqlalchemy.orm import Session, sessionmaker

from db.outbox import dead_letters, redrive
from db.session import make_engine, make_session_factory
from lab.settings import CliSettings


def _factory() -> sessionmaker[Session]:
    return make_session_factory(make_engine(CliSettings().resolved_database_url))


@click.group()
def outbox() -> None:
    """Dead letters of the outbox relay: list them, re-drive them."""


@outbox.command()
@click.option("--limit", default=50, show_default=True, help="Newest this many.")
def dead(limit: int) -> None:
    """List dead letters, newest first: id, kind, ticket, attempts, when, reason."""
    letters = dead_letters(_factory(), limit=limit)
    if not letters:
        click.echo("No dead letters.")
        return
    for letter in letters:
        when = letter.dead_at.isoformat(timespec="seconds") if letter.dead_at else "-"
        ticket = f"ticket {letter.ticket_id}" if letter.ticket_id is not None else "no ticket"
        click.echo(
            f"{letter.id}\t{letter.kind}\t{ticket}\t{letter.attempts} attempts\t{when}\t"
            f"{letter.reason}"
        )


@outbox.command(name="redrive")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "everything", is_flag=True, help="Every dead letter.")
def redrive_(ids: tuple[int, ...], everything: bool) -> None:
    """Deliver dead letters IDS again (or --all), with a fresh set of attempts."""
    factory = _factory()
    if everything:
        ids = tuple(letter.id for letter in dead_letters(factory, limit=10_000))
    if not ids:
        raise click.UsageError("Name the dead letters to re-drive (see `loralab outbox dead`).")
    done = redrive(factory, list(ids))
    skipped = sorted(set(ids) - set(done))
    click.echo(f"Re-driven: {', '.join(map(str, done)) or 'none'}.")
    if skipped:
        listed = ", ".join(map(str, skipped))
        raise click.ClickException(
            f"Not dead letters (delivered, still pending or unknown): {listed}."
        )
