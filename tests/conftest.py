"""Shared fixtures: a real Postgres database created for this run, and SQLite.

Postgres comes from ``LORALAB_TEST_POSTGRES_URL`` (default: the local server with
trust auth). When it is unreachable the Postgres-bound tests are *skipped with a
message that says so*; set ``LORALAB_REQUIRE_POSTGRES=1`` (CI does) to make that a
failure instead.
"""

from __future__ import annotations

import os

# The tiny models gain nothing from threads, and with the suite on every core (xdist) the
# OpenMP threads of each test process would wait on each other's: a step gets up to 50x
# slower. One thread per process, for the processes the tests start too.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

ADMIN_URL = os.environ.get(
    "LORALAB_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """Create an empty Postgres database, yield its URL, drop it afterwards.

    Skips (or fails, with LORALAB_REQUIRE_POSTGRES=1) when no server answers."""
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"loralab_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        message = f"Postgres not reachable at {make_url(ADMIN_URL)!r}: {exc.orig}"
        if os.environ.get("LORALAB_REQUIRE_POSTGRES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, empty Postgres database for this test run."""
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("sqlite") / "lab.db"
    return f"sqlite:///{path}"


@pytest.fixture(
    scope="session", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def database_url(request: pytest.FixtureRequest) -> str:
    """An empty database URL of each backend (tests using it run once per backend)."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture(scope="session")
def migrated_engine(database_url: str) -> Iterator[Engine]:
    """An engine on a database migrated to head with the real Alembic migrations."""
    from db import migrate
    from db.session import make_engine

    migrate.upgrade(database_url)
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A brand-new empty database of each backend, for this test alone."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    with fresh_postgres_database() as url:
        yield url
