"""The bot's database services on SQLite and Postgres (the rolled-back fixtures), and
the Claim race through the bot's own service on real connections (a database of its
own, so the committed claim leaks into no other test)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db import migrate
from db import repositories as repo
from db.base import utcnow
from db.captions import bulk_edit, edit_caption, tag_counts, upload_captions
from db.dataset import NewImage, add_images, dataset_status, remove_image
from db.models import OutboxMessage, SubjectKind, Ticket
from db.outbox import RelayPolicy, due_rows, mark_failed, mark_sent
from db.services import NewTicket, TransitionRefused
from db.session import make_engine, make_session_factory
from db.stats import leaderboard
from db.tickets import Who, act, list_tickets, request_ticket, ticket_card
from db.training import configure, unclaim_idle
from db.voting import cast_vote
from lab.families import BaseFamily
from lab.lifecycle import Action, LabRole, TicketState
from lab.settings import LabRules
from lab.tasks import OutboxKind
from tests.db.conftest import new_snowflake

RULES = LabRules()
NEW = NewTicket("Aria", SubjectKind.CHARACTER, "sd15", "ar1a", "woman")


def who(guild: int, name: str, *roles: LabRole) -> Who:
    return Who(guild, abs(hash((guild, name))) % 10**12, name, frozenset(roles), "Lab")


def images(n: int, start: int = 0, caption: str | None = "ar1a, woman") -> list[NewImage]:
    return [
        NewImage(
            f"img{i}.png", f"{i:064x}", f"{i * 7919:016x}", 512, 640, 10, f"images/{i}.png", caption
        )
        for i in range(start, start + n)
    ]


def test_request_upload_and_card_counts(factory):
    guild = new_snowflake()
    rita, cora = who(guild, "rita"), who(guild, "cora", LabRole.CURATOR)
    ticket_id, number = request_ticket(factory, rita, NEW)
    assert number == 1
    added = add_images(factory, cora, ticket_id, images(3) + images(1), RULES)
    assert len(added) == 3  # the repeated image is recorded once
    assert add_images(factory, cora, ticket_id, images(3), RULES) == {}
    card = ticket_card(factory, ticket_id)
    assert (card.image_count, card.captioned_count, card.status) == (3, 3, TicketState.DATASET)
    assert card.people == {"request": ["rita"], "curate": ["cora"]}
    name = remove_image(factory, cora, ticket_id, added["img1.png"], RULES)
    assert name == "img1.png" and dataset_status(factory, ticket_id, RULES).count == 2
    assert list_tickets(factory, guild, requester_user_id=rita.user_id)[0].number == 1
    with pytest.raises(TransitionRefused, match="Only a Lab Admin, the requester or a Dataset"):
        add_images(factory, who(guild, "nobody"), ticket_id, images(1, 50), RULES)


def test_captions_bulk_upload_and_tags(factory):
    guild = new_snowflake()
    rita, cap = who(guild, "rita"), who(guild, "cap", LabRole.CAPTIONER)
    ticket_id, _ = request_ticket(factory, rita, NEW)
    ids = add_images(factory, rita, ticket_id, images(14) + images(2, 14, caption=None), RULES)
    act(factory, rita, ticket_id, Action.FINISH_DATASET, RULES)
    assert edit_caption(factory, cap, ticket_id, ids["img14.png"], "woman,  smiling ,", RULES) == (
        "woman, smiling"
    )
    assert upload_captions(
        factory, cap, ticket_id, {"x/IMG15.txt": "woman", "nope.txt": "a"}, RULES
    ) == (["x/IMG15.txt"], ["nope.txt"])
    assert bulk_edit(factory, cap, ticket_id, "add", "ar1a", RULES) == 2
    assert bulk_edit(factory, cap, ticket_id, "replace", "woman", RULES, replacement="girl") == 16
    assert bulk_edit(factory, cap, ticket_id, "remove", "smiling", RULES) == 1
    captioned, counts = tag_counts(factory, ticket_id)
    assert captioned == 16 and counts == {"ar1a": 16, "girl": 16}
    act(factory, cap, ticket_id, Action.FINISH_CAPTIONS, RULES)


def _ready(factory, guild: int) -> tuple[int, Who]:
    rita = who(guild, "rita")
    ticket_id, _ = request_ticket(factory, rita, NEW)
    add_images(factory, rita, ticket_id, images(15), RULES)
    for action in (Action.FINISH_DATASET, Action.FINISH_CAPTIONS, Action.APPROVE):
        act(factory, rita, ticket_id, action, RULES)
    return ticket_id, rita


def test_approve_offers_a_job_and_votes_change_not_add(factory):
    guild = new_snowflake()
    ticket_id, _ = _ready(factory, guild)
    card = ticket_card(factory, ticket_id)
    assert card.status is TicketState.READY and card.job_id is not None
    with factory() as session:
        kinds = session.scalars(
            select(OutboxMessage.kind).where(
                OutboxMessage.payload["ticket_id"].as_integer() == ticket_id
            )
        ).all()
    assert OutboxKind.JOB_BOARD.value in kinds
    tara = who(guild, "tara", LabRole.TRAINER)
    act(factory, tara, ticket_id, Action.CLAIM, RULES)
    with pytest.raises(TransitionRefused, match="Only a Lab Admin or the trainer who claimed"):
        configure(
            factory,
            who(guild, "tom", LabRole.TRAINER),
            ticket_id,
            RULES,
            preset="sd15-character",
            config={"preset": "sd15-character"},
        )
    job = configure(
        factory,
        tara,
        ticket_id,
        RULES,
        preset="sd15-character",
        config={"preset": "sd15-character", "max_train_epochs": 2},
    )
    assert job.config["max_train_epochs"] == 2


def test_unclaim_idle_uses_the_given_clock(factory):
    guild = new_snowflake()
    ticket_id, _ = _ready(factory, guild)
    act(factory, who(guild, "tara", LabRole.TRAINER), ticket_id, Action.CLAIM, RULES)
    assert unclaim_idle(factory, RULES, now=utcnow()) == []
    later = utcnow() + timedelta(hours=RULES.claim_inactivity_hours + 1)
    assert unclaim_idle(factory, RULES, now=later) == [(ticket_id, "tara")]
    assert ticket_card(factory, ticket_id).status is TicketState.READY


def test_votes_and_leaderboard(factory):
    from db.models import SampleSet

    guild = new_snowflake()
    ticket_id, _ = _ready(factory, guild)
    with factory.begin() as session:
        ticket = session.get(Ticket, ticket_id)
        ticket.status = TicketState.TESTING
        sample = SampleSet(ticket_id=ticket_id, prompts=["ar1a"])
        session.add(sample)
        session.flush()
        sample_id = sample.id
    tess = who(guild, "tess", LabRole.TESTER)
    assert cast_vote(factory, tess, sample_id, 1, RULES).changed is False
    again = cast_vote(factory, tess, sample_id, -1, RULES)
    assert (again.changed, again.up, again.down) == (True, 0, 1)
    with pytest.raises(TransitionRefused, match="Only a Lab Admin or a Tester may vote"):
        cast_vote(factory, who(guild, "nobody"), sample_id, 1, RULES)
    board = leaderboard(factory, guild)
    assert board[0].name == "rita" and board[0].by_kind["curate"] == 15
    assert {line.name for line in board} == {"rita", "tess"}


def test_relay_steps_follow_the_given_clock(factory):
    guild = new_snowflake()
    request_ticket(factory, who(guild, "rita"), NEW)
    policy = RelayPolicy(max_attempts=2)
    rows = [r for r in due_rows(factory, "discord.", policy) if r.kind == "discord.ticket_post"]
    assert rows
    mark_failed(factory, rows[-1].id, attempts=1, error="500", wait=60)
    assert rows[-1].id not in [r.id for r in due_rows(factory, "discord.", policy)]
    later = utcnow() + timedelta(seconds=61)
    assert rows[-1].id in [r.id for r in due_rows(factory, "discord.", policy, now=later)]
    mark_sent(factory, rows[-1].id)
    assert rows[-1].id not in [r.id for r in due_rows(factory, "discord.", policy, now=later)]


def test_two_trainers_claim_through_the_bot_service_one_wins(empty_database_url):
    """Real commits on two connections, both threads released together."""
    migrate.upgrade(empty_database_url)
    engine = make_engine(empty_database_url)
    try:
        _race(make_session_factory(engine))
    finally:
        engine.dispose()


def _race(factory_: sessionmaker[Session]) -> None:
    guild = new_snowflake()
    ticket_id, _ = _ready(factory_, guild)
    trainers = [who(guild, name, LabRole.TRAINER) for name in ("tina", "theo")]
    start = threading.Barrier(2, timeout=20)

    def claim(member: Who) -> str:
        start.wait()
        try:
            act(factory_, member, ticket_id, Action.CLAIM, RULES)
            return "won"
        except TransitionRefused as refused:
            return str(refused)

    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(claim, trainers))
    assert sorted(outcomes)[-1] == "won" and outcomes.count("won") == 1
    winner = trainers[outcomes.index("won")]
    loser_text = next(o for o in outcomes if o != "won")
    assert loser_text in (
        f"This job was already claimed by {winner.name}.",
        "You can't claim this job while the ticket is CLAIMED.",
    )
    assert ticket_card(factory_, ticket_id).claimer == winner.name
    with factory_() as session:
        claims = session.scalars(
            select(repo.AuditEntry.actor_id).where(
                repo.AuditEntry.ticket_id == ticket_id, repo.AuditEntry.action == "claim"
            )
        ).all()
    assert len(claims) == 1


@pytest.mark.parametrize("minimum", [5, 20])
def test_dataset_status_warns_at_the_minimum_the_gate_enforces(factory, minimum):
    """A lab whose admin set sd15's minimum to 5 (or 20): with 10 images the status
    warning and the FINISH_DATASET gate give the same answer and the same number."""
    rules = LabRules(min_images={BaseFamily.SD15: minimum, BaseFamily.SDXL: 12})
    guild = new_snowflake()
    rita, cora = who(guild, "rita"), who(guild, "cora", LabRole.CURATOR)
    ticket_id, _ = request_ticket(factory, rita, NEW)
    add_images(factory, cora, ticket_id, images(10), rules)
    short = [w for w in dataset_status(factory, ticket_id, rules).warnings if "needed" in w]
    if minimum <= 10:
        assert short == []
        assert act(factory, rita, ticket_id, Action.FINISH_DATASET, rules) is (
            TicketState.CAPTIONING
        )
    else:
        assert short == [f"{minimum - 10} more images needed (minimum {minimum} for sd15)."]
        with pytest.raises(TransitionRefused, match=f"at least {minimum} images"):
            act(factory, rita, ticket_id, Action.FINISH_DATASET, rules)
