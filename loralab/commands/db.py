"""`loralab db …`: schema migrations for the lab's database."""

from __future__ import annotations

import click

from db import migrate
from lab.settings import CliSettings, redact_password


def _url() -> str:
    settings = CliSettings()
    url = settings.resolved_database_url
    if url.startswith("sqlite:///"):
        settings.home.mkdir(parents=True, exist_ok=True)
    return url


@click.group()
def db() -> None:
    """Create and migrate the lab's database (DATABASE_URL, default: the embedded SQLite)."""


@db.command()
@click.argument("revision", default="head")
def upgrade(revision: str) -> None:
    """Migrate the schema up to REVISION (default: the newest)."""
    url = _url()
    click.echo(f"Upgrading {redact_password(url)} to {revision}", err=True)
    migrate.upgrade(url, revision)


@db.command()
@click.argument("revision", default="base")
@click.confirmation_option(prompt="This drops lab tables and their data. Continue?")
def downgrade(revision: str) -> None:
    """Migrate the schema down to REVISION (default: base, an empty database)."""
    url = _url()
    click.echo(f"Downgrading {redact_password(url)} to {revision}", err=True)
    migrate.downgrade(url, revision)


@db.command()
def current() -> None:
    """Show the revision the database is at."""
    migrate.current(_url())


@db.command()
def check() -> None:
    """Fail if the models and the migrations differ (autogenerate finds changes)."""
    migrate.check(_url())
    click.echo("The database schema matches the models.")
