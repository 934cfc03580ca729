"""Alembic migrations (date-prefixed revisions under versions/)."""
