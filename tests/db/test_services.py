"""Services on real databases (SQLite and Postgres): tickets, transitions, audit, outbox."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db import repositories as repo
from db.models import (
    Artifact,
    ArtifactKind,
    AuditEntry,
    DatasetImage,
    OutboxMessage,
    Ticket,
    TrainingJob,
)
from db.services import TransitionRefused, open_ticket, transition
from lab.lifecycle import Action, Actor, LabRole, RefusalCode, TicketState
from lab.settings import LabRules
from tests.db.conftest import sample_ticket

RULES = LabRules()


def add_images(session: Session, ticket_id: int, uploader_id: int, n: int, caption: str | None):
    for i in range(n):
        image = DatasetImage(
            ticket_id=ticket_id,
            sha256=f"{ticket_id:x}{i:060x}"[:64],
            phash="0" * 16,
            width=768,
            height=768,
            size_bytes=1000,
            storage_key=f"images/{i}.png",
            original_name=f"{i}.png",
            uploader_id=uploader_id,
        )
        session.add(image)
        session.flush()
        if caption is not None:
            repo.add_caption_revision(session, image.id, caption, author_id=uploader_id)
    session.commit()


def test_ticket_numbers_are_sequential_per_guild(session, guild_id, make_member):
    alice = make_member("alice")
    numbers = [open_ticket(session, guild_id, alice, sample_ticket()).number for _ in range(3)]
    other_guild = repo.get_or_create_guild(session, guild_id + 1, "Other Lab")
    bob = repo.get_or_create_member(session, other_guild.id, 42, "bob")
    other = open_ticket(session, other_guild.id, bob, sample_ticket())
    assert numbers == [1, 2, 3]
    assert other.number == 1


def test_opening_a_ticket_records_audit_contribution_and_forum_post(session, guild_id, make_member):
    alice = make_member("alice")
    ticket = open_ticket(session, guild_id, alice, sample_ticket(base_model="Pony"))
    session.commit()
    assert ticket.status is TicketState.DATASET
    assert ticket.base_family.value == "sdxl"  # Pony trains as an SDXL variant
    outbox = session.scalars(select(OutboxMessage.idempotency_key)).all()
    assert f"ticket-post:{ticket.id}" in outbox
    audit = session.scalars(select(AuditEntry).where(AuditEntry.ticket_id == ticket.id)).all()
    assert [(a.action, a.actor_id) for a in audit] == [("open", alice.id)]


def test_unknown_base_model_is_refused_with_the_choices(session, guild_id, make_member):
    from db.services import DbError

    alice = make_member("alice")
    with pytest.raises(DbError, match=r"Unknown base model 'sd3'\. Use sd15, sdxl"):
        open_ticket(session, guild_id, alice, sample_ticket(base_model="sd3"))


def test_refused_transition_changes_nothing(factory, session, make_member, open_sample_ticket):
    alice = make_member("alice")
    ticket_id = open_sample_ticket(alice)
    add_images(session, ticket_id, alice.id, 3, caption=None)
    audit_before = session.scalar(select(func.count()).select_from(AuditEntry))
    outbox_before = session.scalar(select(func.count()).select_from(OutboxMessage))

    with pytest.raises(TransitionRefused) as refused:
        transition(factory, ticket_id, Action.FINISH_DATASET, make_member.actor(alice), RULES)

    assert refused.value.refusal.code is RefusalCode.TOO_FEW_IMAGES
    assert "needs at least 15 images; this ticket has 3. Upload 12 more" in str(refused.value)
    session.expire_all()
    assert session.get(Ticket, ticket_id).status is TicketState.DATASET
    assert session.scalar(select(func.count()).select_from(AuditEntry)) == audit_before
    assert session.scalar(select(func.count()).select_from(OutboxMessage)) == outbox_before


def test_whole_lifecycle_with_audit_trail(factory, session, make_member, open_sample_ticket):
    alice = make_member("alice")
    admin = make_member("root", LabRole.ADMIN)
    trainer = make_member("tina", LabRole.TRAINER)
    ticket_id = open_sample_ticket(alice)
    add_images(session, ticket_id, alice.id, 15, caption="ar1a, woman, smiling")

    def do(action: Action, who, **kw) -> None:
        transition(factory, ticket_id, action, make_member.actor(who), RULES, **kw)

    do(Action.FINISH_DATASET, alice)
    do(Action.FINISH_CAPTIONS, alice)
    do(Action.REQUEST_CAPTION_CHANGES, alice, reason="add the outfit tags")
    do(Action.FINISH_CAPTIONS, alice)
    do(Action.APPROVE, alice)
    do(Action.CLAIM, trainer)
    session.add(TrainingJob(ticket_id=ticket_id, config={"network_dim": 16}))
    session.commit()
    do(Action.START_TRAINING, trainer)
    transition(factory, ticket_id, Action.TRAINING_SUCCEEDED, Actor.system(), RULES)
    job = repo.latest_job(session, ticket_id)
    session.add(  # the run saved epoch 4 (a release needs the file)
        Artifact(job_id=job.id, kind=ArtifactKind.LORA, epoch=4, storage_key="jobs/x/e4",
                 sha256="0" * 64, size_bytes=1)
    )  # fmt: skip
    session.execute(Ticket.__table__.update().where(Ticket.id == ticket_id).values(chosen_epoch=4))
    session.commit()
    with pytest.raises(TransitionRefused, match="a release needs at least 3"):
        do(Action.RELEASE, alice)
    do(Action.RELEASE, admin, admin_override=True)

    session.expire_all()
    ticket = session.get(Ticket, ticket_id)
    assert ticket.status is TicketState.RELEASED
    trail = session.execute(
        select(AuditEntry.action, AuditEntry.from_status, AuditEntry.to_status, AuditEntry.reason)
        .where(AuditEntry.ticket_id == ticket_id)
        .order_by(AuditEntry.id)
    ).all()
    assert [row.action for row in trail] == [
        "open",
        "finish_dataset",
        "finish_captions",
        "request_caption_changes",
        "finish_captions",
        "approve",
        "claim",
        "start_training",
        "training_succeeded",
        "release",
    ]
    assert trail[3].reason == "add the outfit tags"
    assert trail[3].to_status is TicketState.CAPTIONING
    # each transition queued exactly one card refresh, keyed by the new revision
    cards = session.scalars(
        select(OutboxMessage.idempotency_key).where(
            OutboxMessage.idempotency_key.startswith(f"ticket-card:{ticket_id}:")
        )
    ).all()
    assert len(cards) == len(trail) - 1 == len(set(cards))


def test_captions_without_trigger_word_block_review(
    factory, session, make_member, open_sample_ticket
):
    alice = make_member("alice")
    ticket_id = open_sample_ticket(alice)
    add_images(session, ticket_id, alice.id, 15, caption="woman, ar1a")
    transition(factory, ticket_id, Action.FINISH_DATASET, make_member.actor(alice), RULES)
    with pytest.raises(TransitionRefused) as refused:
        transition(factory, ticket_id, Action.FINISH_CAPTIONS, make_member.actor(alice), RULES)
    assert refused.value.refusal.code is RefusalCode.TRIGGER_NOT_FIRST
    assert "15 captions do not start with the trigger word 'ar1a'" in str(refused.value)


def test_caption_revisions_keep_history_and_newest_wins(session, make_member, open_sample_ticket):
    alice = make_member("alice")
    ticket_id = open_sample_ticket(alice)
    add_images(session, ticket_id, alice.id, 1, caption="first")
    image_id = session.scalar(select(DatasetImage.id).where(DatasetImage.ticket_id == ticket_id))
    repo.add_caption_revision(session, image_id, "ar1a, second", author_id=alice.id)
    assert repo.current_captions(session, ticket_id) == {image_id: "ar1a, second"}
    from db.models import Caption

    history = session.scalars(
        select(Caption.text).where(Caption.image_id == image_id).order_by(Caption.revision)
    ).all()
    assert history == ["first", "ar1a, second"]


def _keys(session: Session, ticket_id: int, kind: str) -> list[str]:
    return session.scalars(
        select(OutboxMessage.idempotency_key)
        .where(
            OutboxMessage.kind == kind, OutboxMessage.payload["ticket_id"].as_integer() == ticket_id
        )
        .order_by(OutboxMessage.id)
    ).all()


def test_consequences_come_with_the_transition_whoever_calls_it(
    factory, session, make_member, open_sample_ticket
):
    """No bot service involved: approve creates the job and offers it on the board, claim
    and the lab's own unclaim update the board, and the unclaim says why in the thread."""
    alice = make_member("alice")
    trainer = make_member("tina", LabRole.TRAINER)
    ticket_id = open_sample_ticket(alice)
    add_images(session, ticket_id, alice.id, 15, caption="ar1a, woman")

    def do(action: Action, actor: Actor, **kw) -> int:
        return transition(factory, ticket_id, action, actor, RULES, **kw).revision

    for action in (Action.FINISH_DATASET, Action.FINISH_CAPTIONS):
        do(action, make_member.actor(alice))
    approved = do(Action.APPROVE, make_member.actor(alice))
    assert repo.latest_job(session, ticket_id) is not None
    claimed = do(Action.CLAIM, make_member.actor(trainer))
    unclaimed = do(Action.UNCLAIM, Actor.system())
    assert _keys(session, ticket_id, "discord.job_board") == [
        f"job-board:{ticket_id}:{r}" for r in (approved, claimed, unclaimed)
    ]
    notices = session.scalars(
        select(OutboxMessage.payload).where(
            OutboxMessage.idempotency_key == f"auto-unclaim:{ticket_id}:{unclaimed}"
        )
    ).all()
    assert [n["text"][:20] for n in notices] == ["⏰ tina had no activi"]
