"""Alembic environment: the URL comes from the lab's settings unless the caller set
one; batch mode lets ALTERs work on SQLite."""

from __future__ import annotations

from alembic import context

import db.models  # noqa: F401  (registers every table on the metadata)
from db.base import Base, UTCDateTime
from db.session import make_engine
from lab.settings import CliSettings

config = context.config


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or CliSettings().resolved_database_url


def _render_item(type_: str, obj: object, autogen_context: object) -> str | bool:
    """Write our portable types as plain SQLAlchemy types, so a migration never
    imports application code that may change after it was written."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=Base.metadata,
        render_as_batch=True,
        compare_type=True,
        render_item=_render_item,
        **kwargs,
    )


def run_offline() -> None:
    _configure(url=_url(), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(_url())
    with engine.connect() as conn:
        _configure(connection=conn)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
