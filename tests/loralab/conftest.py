"""The bot tests' fixtures (a migrated template database, the anyio backend)."""

from tests.bot.conftest import anyio_backend, template_db  # noqa: F401
