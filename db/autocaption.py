"""Auto-captioning services: a member asks for a first pass (`request_autocaption`, from
``/caption auto``), the worker reads what to caption (`caption_job`) and records the
result as caption revisions with source ``auto`` and no author
(`record_auto_captions`), which captioners then review.

A request is keyed by ticket and request id (the Discord interaction id): its task row
and its completion notice share the key ``autocaption:<ticket>:<request>``-style
idempotency keys, so a repeated delivery finds the notice and records nothing twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db import repositories as repo
from db.captions import CaptionError
from db.limits import CAPTIONS_REQUESTED, check_and_record_task
from db.models import DatasetImage, ImageStatus, OutboxMessage, Ticket
from db.outbox import enqueue_task
from db.refs import TicketKey, ticket_id_in
from db.services import get_ticket, require
from db.tickets import Who, actor_in
from lab.autocaption import CaptionerKind, style_for_base
from lab.lifecycle import Action, TicketState
from lab.settings import LabRules
from lab.tasks import CaptionPayload, OutboxKind, TaskName, task_id

log = logging.getLogger(__name__)
Factory = sessionmaker[Session]
AUTO_SOURCE = "auto"


def done_key(ticket_id: int, request_id: int) -> str:
    """The idempotency key of a request's final notice (its "already recorded" mark)."""
    return f"autocaption:{ticket_id}:{request_id}"


def _is_done(session: Session, ticket_id: int, request_id: int) -> bool:
    return _has_row(session, done_key(ticket_id, request_id))


def _has_row(session: Session, key: str) -> bool:
    found = session.scalar(select(OutboxMessage.id).where(OutboxMessage.idempotency_key == key))
    return found is not None


def _targets(session: Session, ticket_id: int, overwrite: bool) -> list[DatasetImage]:
    images = session.scalars(
        select(DatasetImage)
        .where(DatasetImage.ticket_id == ticket_id, DatasetImage.status == ImageStatus.ACTIVE)
        .order_by(DatasetImage.id)
    ).all()
    if overwrite:
        return list(images)
    captions = repo.current_captions(session, ticket_id)
    return [image for image in images if not captions.get(image.id, "").strip()]


@dataclass(frozen=True, slots=True)
class AutoCaptionRequest:
    images: int
    """How many images the worker will caption."""
    kind: CaptionerKind
    repeated: bool = False
    """The same request was already queued (a retried interaction)."""


def request_autocaption(
    factory: Factory,
    who: Who,
    ticket_id: TicketKey,
    rules: LabRules,
    *,
    request_id: int,
    kind: CaptionerKind | None = None,
    model: str | None = None,
    overwrite: bool = False,
) -> AutoCaptionRequest:
    """Queue auto-captioning of the ticket's images (all with `overwrite`, else those
    without a caption); the kind defaults to the style of the ticket's base model."""
    with factory.begin() as session:
        ticket_id = ticket_id_in(session, ticket_id)
        ticket = get_ticket(session, ticket_id)
        actor = actor_in(session, who)
        require(session, ticket, Action.EDIT_CAPTIONS, actor, rules)
        chosen = kind or style_for_base(ticket.base_model).kind
        key = task_id(TaskName.CAPTION, ticket_id, request_id)
        count = len(_targets(session, ticket_id, overwrite))
        if _has_row(session, key):
            return AutoCaptionRequest(count, chosen, repeated=True)
        if count == 0:
            raise CaptionError(
                "Every image already has a caption. Run it with overwrite to caption them "
                "all again (each gets a new revision; the old text stays in the history)."
            )
        assert actor.member_id is not None
        check_and_record_task(session, ticket, actor.member_id, CAPTIONS_REQUESTED)
        payload = CaptionPayload(ticket_id=ticket_id, request_id=request_id,
                                 kind=chosen.value, model=model, overwrite=overwrite)  # fmt: skip
        enqueue_task(session, TaskName.CAPTION, payload.model_dump(), ticket_id, request_id)
        return AutoCaptionRequest(count, chosen)


@dataclass(frozen=True, slots=True)
class CaptionTarget:
    image_id: int
    storage_key: str


@dataclass(frozen=True, slots=True)
class CaptionJob:
    """What a worker needs to caption one request; it knows no Discord."""

    ticket_id: int
    request_id: int
    base_model: str
    trigger_word: str
    class_token: str
    images: list[CaptionTarget]


def caption_job(factory: Factory, payload: CaptionPayload) -> CaptionJob | None:
    """The request's images, or ``None`` when it was already recorded (a repeat delivery)."""
    with factory() as session:
        if _is_done(session, payload.ticket_id, payload.request_id):
            return None
        ticket = get_ticket(session, payload.ticket_id)
        targets = _targets(session, ticket.id, payload.overwrite)
        return CaptionJob(
            ticket_id=ticket.id,
            request_id=payload.request_id,
            base_model=ticket.base_model,
            trigger_word=ticket.trigger_word,
            class_token=ticket.class_token,
            images=[CaptionTarget(i.id, i.storage_key) for i in targets],
        )


def _finish(session: Session, ticket: Ticket, request_id: int, text: str) -> None:
    """The request's final notice; its unique key makes a concurrent repeat roll back."""
    repo.add_outbox(
        session,
        repo.OutboxItem(
            OutboxKind.NOTICE.value,
            {"ticket_id": ticket.id, "text": text},
            done_key(ticket.id, request_id),
        ),
    )
    session.flush()


def record_auto_captions(
    factory: Factory,
    ticket_id: int,
    request_id: int,
    captions: dict[int, str],
    *,
    overwrite: bool,
    model_name: str,
) -> int | None:
    """Write each image's auto caption as a new revision (source ``auto``, no author);
    the number written, or ``None`` when this request was already recorded.

    Without `overwrite` an image that got a caption meanwhile keeps it (the person
    wins); a ticket that left CAPTIONING meanwhile gets nothing (its dataset is under
    review), and the notice says so."""
    with factory.begin() as session:
        if _is_done(session, ticket_id, request_id):
            return None
        ticket = get_ticket(session, ticket_id)
        if ticket.status is not TicketState.CAPTIONING:
            _finish(session, ticket, request_id, (
                f"Auto-captions by {model_name} were not saved: the ticket is "
                f"{ticket.status.value} now, no longer in captioning."))  # fmt: skip
            return 0
        current = repo.current_captions(session, ticket_id)
        active = {image.id for image in _targets(session, ticket_id, overwrite=True)}
        written = 0
        for image_id, text in captions.items():
            old = current.get(image_id, "")
            if image_id not in active or (old.strip() and not overwrite) or old == text:
                continue
            repo.add_caption_revision(session, image_id, text, author_id=None, source=AUTO_SOURCE)
            written += 1
        skipped = len(captions) - written
        _finish(session, ticket, request_id, (
            f"Auto-captions are ready: {written} image(s) captioned by {model_name}"
            + (f" ({skipped} skipped: captioned meanwhile or removed)" if skipped else "")
            + ". They are first drafts: check them with /caption show and /caption tags, "
            "fix them with /caption edit or /caption bulk."))  # fmt: skip
        if written:
            repo.touch_ticket(session, ticket, f"autocaption:{request_id}")
        log.info("ticket %s request %s: %d auto captions recorded", ticket_id, request_id, written)
        return written


def record_autocaption_failure(
    factory: Factory, ticket_id: int, request_id: int, message: str
) -> bool:
    """Tell the ticket's thread that the request failed; False if it was already recorded."""
    with factory.begin() as session:
        if _is_done(session, ticket_id, request_id):
            return False
        ticket = get_ticket(session, ticket_id)
        _finish(session, ticket, request_id, f"Auto-captioning failed: {message}")
        return True
