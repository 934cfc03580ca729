"""Dataset services for the bot: images accepted by `lab.dataset.ingest` recorded on a
ticket, removed, and summarised for `/dataset status`. One transaction per function."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db import repositories as repo
from db.limits import check_dataset_room
from db.models import ContributionKind, DatasetImage, ImageStatus
from db.refs import TicketKey, ticket_id_in
from db.services import NotFound, get_ticket, require
from db.tickets import Who, actor_in
from lab.buckets import BucketSpec
from lab.dataset.similar import near_duplicate_pairs
from lab.families import FAMILIES
from lab.lifecycle import Action
from lab.settings import LabRules

Factory = sessionmaker[Session]


def check_allowed(
    factory: Factory, who: Who, ticket_id: TicketKey, action: Action, rules: LabRules
) -> None:
    """Ask before doing slow work (downloads): may `who` do `action` on the ticket now?"""
    with factory.begin() as session:
        ticket_id = ticket_id_in(session, ticket_id)
        require(session, get_ticket(session, ticket_id), action, actor_in(session, who), rules)


@dataclass(frozen=True, slots=True)
class TicketBasics:
    family: Any
    trigger_word: str
    class_token: str
    known: dict[str, str]
    """sha256 → original name of the ticket's active images (duplicates are refused)."""


def ticket_basics(
    factory: Factory, ticket_id: TicketKey, who: Who | None = None, rules: LabRules | None = None
) -> TicketBasics:
    """What ingest needs to know; with `who` (and `rules`), first checks they may edit
    the dataset now, so an upload is refused before anything is downloaded."""
    with factory.begin() as session:
        ticket_id = ticket_id_in(session, ticket_id)
        ticket = get_ticket(session, ticket_id)
        if who is not None:
            assert rules is not None, "checking `who` needs the lab's rules"
            require(session, ticket, Action.EDIT_DATASET, actor_in(session, who), rules)
            check_dataset_room(session, ticket, 1, 0)  # a full dataset: refuse before fetching
        rows = session.execute(
            select(DatasetImage.sha256, DatasetImage.original_name).where(
                DatasetImage.ticket_id == ticket_id, DatasetImage.status == ImageStatus.ACTIVE
            )
        )
        return TicketBasics(
            ticket.base_family,
            ticket.trigger_word,
            ticket.class_token,
            {sha: name for sha, name in rows},
        )


@dataclass(frozen=True, slots=True)
class NewImage:
    source: str
    sha256: str
    phash: str
    width: int
    height: int
    size_bytes: int
    storage_key: str
    caption: str | None = None


def add_images(
    factory: Factory, who: Who, ticket_id: TicketKey, images: list[NewImage], rules: LabRules
) -> dict[str, int]:
    """Record accepted images (and their captions) on the ticket; source name → image id.
    An image already in the dataset (same hash) is skipped, so a retry adds nothing twice."""
    with factory.begin() as session:
        ticket_id = ticket_id_in(session, ticket_id)
        ticket = get_ticket(session, ticket_id)
        actor = actor_in(session, who)
        require(session, ticket, Action.EDIT_DATASET, actor, rules)
        assert actor.member_id is not None
        existing = dict(
            session.execute(
                select(DatasetImage.sha256, DatasetImage.id).where(
                    DatasetImage.ticket_id == ticket_id
                )
            ).all()
        )
        new = [image for image in images if image.sha256 not in existing]
        check_dataset_room(session, ticket, len(new), sum(i.size_bytes for i in new))
        added: dict[str, int] = {}
        for image in images:
            row_id = existing.get(image.sha256)
            if row_id is not None:
                row = session.get(DatasetImage, row_id)
                if row is not None and row.status is ImageStatus.REMOVED:
                    row.status = ImageStatus.ACTIVE
                    added[image.source] = row.id
                continue
            row = DatasetImage(
                ticket_id=ticket_id,
                sha256=image.sha256,
                phash=image.phash,
                width=image.width,
                height=image.height,
                size_bytes=image.size_bytes,
                storage_key=image.storage_key,
                original_name=image.source[:300],
                uploader_id=actor.member_id,
            )
            session.add(row)
            session.flush()
            existing[image.sha256] = row.id
            added[image.source] = row.id
            if image.caption:
                repo.add_caption_revision(
                    session, row.id, image.caption, author_id=actor.member_id, source="upload"
                )
        if added:
            repo.record_contribution(
                session, ticket_id, actor.member_id, ContributionKind.CURATE, len(added)
            )
            repo.touch_ticket(session, ticket, f"images:{len(existing)}:{min(added.values())}")
        return added


def remove_image(
    factory: Factory, who: Who, ticket_id: TicketKey, image_id: int, rules: LabRules
) -> str:
    """Take an image out of the dataset (kept in storage; re-uploading restores it)."""
    with factory.begin() as session:
        ticket_id = ticket_id_in(session, ticket_id)
        ticket = get_ticket(session, ticket_id)
        require(session, ticket, Action.EDIT_DATASET, actor_in(session, who), rules)
        image = session.get(DatasetImage, image_id)
        if image is None or image.ticket_id != ticket_id or image.status is ImageStatus.REMOVED:
            raise NotFound(f"Image {image_id} is not in this ticket's dataset.", code="no_image")
        image.status = ImageStatus.REMOVED
        repo.touch_ticket(session, ticket, f"removed:{image_id}")
        return image.original_name


@dataclass(frozen=True, slots=True)
class DatasetStatus:
    count: int
    captioned: int
    shapes: dict[str, int]
    buckets: dict[str, int]
    """Training bucket (``WxH``, the trainer's own `BucketSpec`) → images in it."""
    resolutions: dict[str, int]
    near_duplicates: list[tuple[int, int]]
    warnings: list[str]
    images: list[tuple[int, str, int, int]]
    """(id, original name, width, height), oldest first."""


def _shape(width: int, height: int) -> str:
    ratio = width / height
    if ratio > 1.2:
        return "landscape"
    if ratio < 1 / 1.2:
        return "portrait"
    return "square"


def dataset_status(
    factory: Factory, ticket_id: TicketKey, rules: LabRules, phash_distance: int = 6
) -> DatasetStatus:
    with factory() as session:
        ticket_id = ticket_id_in(session, ticket_id)
        ticket = get_ticket(session, ticket_id)
        images = session.scalars(
            select(DatasetImage)
            .where(DatasetImage.ticket_id == ticket_id, DatasetImage.status == ImageStatus.ACTIVE)
            .order_by(DatasetImage.id)
        ).all()
        captions = repo.current_captions(session, ticket_id)
        family = FAMILIES[ticket.base_family]
    shapes = Counter(_shape(i.width, i.height) for i in images)
    spec = BucketSpec.square(family.resolution, max_bucket_reso=max(1024, 2 * family.resolution))
    buckets = Counter("{}x{}".format(*spec.assign(i.width, i.height).bucket) for i in images)
    sizes = Counter(
        f"<{family.resolution}"
        if min(i.width, i.height) < family.resolution
        else f"≥{family.resolution}"
        for i in images
    )
    pairs = [
        (images[a].id, images[b].id)
        for a, b, _ in near_duplicate_pairs([i.phash for i in images], phash_distance)
    ]
    warnings = []
    need = rules.min_images[family.family]  # the lab's minimum: the one the gate enforces
    if len(images) < need:
        warnings.append(
            f"{need - len(images)} more images needed (minimum {need} for {family.family.value})."
        )
    elif len(images) < family.comfortable_images:
        warnings.append(
            f"Works, but {family.comfortable_images}+ varied images give better results."
        )
    if pairs:
        warnings.append(
            f"{len(pairs)} pairs of near-identical images; consider removing one of each."
        )
    small = sizes.get(f"<{family.resolution}", 0)
    if small:
        warnings.append(
            f"{small} images are smaller than the {family.resolution}px training "
            "resolution and will be upscaled."
        )
    return DatasetStatus(
        count=len(images),
        captioned=sum(1 for i in images if captions.get(i.id, "").strip()),
        shapes=dict(shapes),
        buckets=dict(buckets.most_common()),
        resolutions=dict(sizes),
        near_duplicates=pairs,
        warnings=warnings,
        images=[(i.id, i.original_name, i.width, i.height) for i in images],
    )
