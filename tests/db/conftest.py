"""Database fixtures: each test runs inside an outer transaction that is rolled back
(SQLAlchemy docs, "Joining a Session into an External Transaction")."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from db import repositories as repo
from db.models import Member, SubjectKind
from db.services import NewTicket, open_ticket
from lab.lifecycle import Actor, LabRole

_ids = itertools.count(1_000_000_000_000)


def new_snowflake() -> int:
    """A Discord-like id unique within the test run (tests share one database)."""
    return next(_ids)


@pytest.fixture
def factory(migrated_engine: Engine) -> Iterator[sessionmaker[Session]]:
    """A session factory whose transactions are savepoints inside one outer
    transaction that is rolled back after the test: nothing a test writes survives."""
    conn = migrated_engine.connect()
    outer = conn.begin()
    yield sessionmaker(bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False)
    outer.rollback()
    conn.close()


@pytest.fixture
def session(factory: sessionmaker[Session]) -> Iterator[Session]:
    with factory() as s:
        yield s


class Members:
    """Makes members of the test guild. Their lab roles are kept here, as production
    keeps them in Discord (the bot reads a member's roles on each interaction)."""

    def __init__(self, session: Session, guild_id: int) -> None:
        self.session, self.guild_id = session, guild_id
        self.roles: dict[int, frozenset[LabRole]] = {}

    def __call__(self, name: str, *roles: LabRole) -> Member:
        member = repo.get_or_create_member(self.session, self.guild_id, new_snowflake(), name)
        self.session.commit()
        self.roles[member.id] = frozenset(roles)
        return member

    def actor(self, member: Member) -> Actor:
        """The policy's actor for `member`, with the roles they were made with."""
        return Actor(member.id, self.roles.get(member.id, frozenset()), False, member.display_name)


@pytest.fixture
def guild_id(session: Session) -> int:
    gid = new_snowflake()
    repo.get_or_create_guild(session, gid, "Test Lab")
    session.commit()
    return gid


@pytest.fixture
def make_member(session: Session, guild_id: int) -> Members:
    return Members(session, guild_id)


def sample_ticket(**overrides: object) -> NewTicket:
    values: dict[str, object] = {
        "name": "Aria",
        "kind": SubjectKind.CHARACTER,
        "base_model": "sd15",
        "trigger_word": "ar1a",
        "class_token": "woman",
    }
    values.update(overrides)
    return NewTicket(**values)  # type: ignore[arg-type]


@pytest.fixture
def open_sample_ticket(session: Session, guild_id: int) -> Callable[[Member], int]:
    def make(requester: Member) -> int:
        ticket = open_ticket(session, guild_id, requester, sample_ticket())
        session.commit()
        return ticket.id

    return make
