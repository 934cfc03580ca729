"""Caption services for the bot: show, edit, bulk changes, uploads matched by file
stem, tag frequency. Every change is a new caption revision (history is kept)."""

from __future__ import annotations

from pathlib import PurePosixPath

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db import repositories as repo
from db.models import ContributionKind, DatasetImage, ImageStatus
from db.refs import TicketKey, ticket_id_in
from db.services import NotFound, get_ticket, require
from db.tickets import Who, actor_in
from lab.captions import join_tags, normalise_caption, split_tags, tag_frequency
from lab.errors import LabError
from lab.lifecycle import Action
from lab.settings import LabRules

Factory = sessionmaker[Session]


class CaptionError(LabError):
    code = "caption_error"


def _image(session: Session, ticket_id: int, image_id: int) -> DatasetImage:
    image = session.get(DatasetImage, image_id)
    if image is None or image.ticket_id != ticket_id or image.status is ImageStatus.REMOVED:
        raise NotFound(f"Image {image_id} is not in this ticket's dataset.", code="no_image")
    return image


def show_caption(
    factory: Factory,
    ticket_id: TicketKey,
    image_id: int,
    who: Who | None = None,
    rules: LabRules | None = None,
) -> tuple[str, str]:
    """(original file name, current caption) of an image; with `who` (and `rules`),
    first checks they may edit captions now (the edit modal asks before it opens)."""
    with factory.begin() as session:
        ticket_id = ticket_id_in(session, ticket_id)
        if who is not None:
            ticket = get_ticket(session, ticket_id)
            assert rules is not None, "checking `who` needs the lab's rules"
            require(session, ticket, Action.EDIT_CAPTIONS, actor_in(session, who), rules)
        image = _image(session, ticket_id, image_id)
        return image.original_name, repo.current_captions(session, ticket_id).get(image_id, "")


def _write(session: Session, image_id: int, text: str, author_id: int | None) -> None:
    repo.add_caption_revision(session, image_id, normalise_caption(text), author_id=author_id)


def edit_caption(
    factory: Factory, who: Who, ticket_id: TicketKey, image_id: int, text: str, rules: LabRules
) -> str:
    """Replace an image's caption; returns the normalised text stored."""
    with factory.begin() as session:
        ticket_id = ticket_id_in(session, ticket_id)
        ticket = get_ticket(session, ticket_id)
        actor = actor_in(session, who)
        require(session, ticket, Action.EDIT_CAPTIONS, actor, rules)
        _image(session, ticket_id, image_id)
        _write(session, image_id, text, actor.member_id)
        assert actor.member_id is not None
        repo.record_contribution(session, ticket_id, actor.member_id, ContributionKind.CAPTION)
        repo.touch_ticket(session, ticket, f"caption:{image_id}:{len(text)}")
        return normalise_caption(text)


def bulk_edit(
    factory: Factory,
    who: Who,
    ticket_id: TicketKey,
    operation: str,
    tag: str,
    rules: LabRules,
    *,
    replacement: str = "",
) -> int:
    """``add`` (as the first tag when it is the trigger word, else last), ``remove`` or
    ``replace`` one tag in every caption; returns how many captions changed."""
    tag = tag.strip()
    if not tag or "," in tag:
        raise CaptionError("Give one tag, without commas.")
    if operation == "replace" and (not replacement.strip() or "," in replacement):
        raise CaptionError("Give the replacement tag (one tag, without commas).")
    with factory.begin() as session:
        ticket_id = ticket_id_in(session, ticket_id)
        ticket = get_ticket(session, ticket_id)
        actor = actor_in(session, who)
        require(session, ticket, Action.EDIT_CAPTIONS, actor, rules)
        captions = repo.current_captions(session, ticket_id)
        images = session.scalars(
            select(DatasetImage.id).where(
                DatasetImage.ticket_id == ticket_id, DatasetImage.status == ImageStatus.ACTIVE
            )
        ).all()
        changed = 0
        for image_id in images:
            tags = split_tags(captions.get(image_id, ""))
            new = _apply(tags, operation, tag, replacement.strip(), ticket.trigger_word)
            if new != tags:
                _write(session, image_id, join_tags(new), actor.member_id)
                changed += 1
        if changed:
            assert actor.member_id is not None
            repo.record_contribution(
                session, ticket_id, actor.member_id, ContributionKind.CAPTION, changed
            )
            repo.touch_ticket(session, ticket, f"bulk:{operation}:{tag}:{changed}")
        return changed


def _apply(tags: list[str], operation: str, tag: str, replacement: str, trigger: str) -> list[str]:
    folded = [t.casefold() for t in tags]
    if operation == "add":
        if tag.casefold() in folded:
            return tags
        return [tag, *tags] if tag == trigger else [*tags, tag]
    if operation == "remove":
        return [t for t in tags if t.casefold() != tag.casefold()]
    if operation == "replace":
        return [replacement if t.casefold() == tag.casefold() else t for t in tags]
    raise CaptionError(f"Unknown operation {operation!r}: use add, remove or replace.")


def upload_captions(
    factory: Factory, who: Who, ticket_id: TicketKey, texts: dict[str, str], rules: LabRules
) -> tuple[list[str], list[str]]:
    """Captions from .txt files matched to images by file stem; (matched, unmatched)."""
    with factory.begin() as session:
        ticket_id = ticket_id_in(session, ticket_id)
        ticket = get_ticket(session, ticket_id)
        actor = actor_in(session, who)
        require(session, ticket, Action.EDIT_CAPTIONS, actor, rules)
        by_stem = {
            PurePosixPath(name).stem.casefold(): image_id
            for image_id, name in session.execute(
                select(DatasetImage.id, DatasetImage.original_name).where(
                    DatasetImage.ticket_id == ticket_id, DatasetImage.status == ImageStatus.ACTIVE
                )
            )
        }
        matched, unmatched = [], []
        for name, text in texts.items():
            image_id = by_stem.get(PurePosixPath(name).stem.casefold())
            if image_id is None:
                unmatched.append(name)
                continue
            _write(session, image_id, text, actor.member_id)
            matched.append(name)
        if matched:
            assert actor.member_id is not None
            repo.record_contribution(
                session, ticket_id, actor.member_id, ContributionKind.CAPTION, len(matched)
            )
            repo.touch_ticket(session, ticket, f"upload:{len(matched)}:{sorted(matched)[0]}")
        return matched, unmatched


def tag_counts(factory: Factory, ticket_id: TicketKey) -> tuple[int, dict[str, int]]:
    """(captioned images, tag → how many captions use it, most used first)."""
    with factory() as session:
        ticket_id = ticket_id_in(session, ticket_id)
        captions = repo.current_captions(session, ticket_id)
    lists = [split_tags(text) for text in captions.values() if text.strip()]
    return len(lists), tag_frequency(lists)
