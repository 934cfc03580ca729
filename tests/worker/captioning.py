"""Fixtures for the auto-captioning tests: tiny models built in code, and a ticket in
CAPTIONING whose images are in storage (one already captioned by hand)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from db import repositories as repo
from db.models import DatasetImage, SubjectKind
from db.services import NewTicket, open_ticket
from db.session import make_engine, make_session_factory
from db.tickets import Who
from lab.lifecycle import LabRole, TicketState
from lab.settings import WorkerSettings
from lab.storage import LocalStorage
from tests.db.conftest import new_snowflake

# Square pictures: red ones make the tiny tagger say "red theme" (through BGR input).
COLOURS = [(230, 20, 20), (20, 20, 230), (20, 200, 20), (240, 30, 30), (120, 120, 120)]
HAND_CAPTION = "sks, dog, sitting, hand written"


def caption_settings(
    home: Path, database_url: str, models: dict, **rules: object
) -> WorkerSettings:
    captioning = {"models": models, "blacklist": ["simple_background"], "max_tags": 5, **rules}
    return WorkerSettings(home=home, database_url=database_url, captioning=captioning)


@dataclass
class SeededCaptions:
    ticket_id: int
    image_ids: list[int]
    hand_captioned: int
    who: Who
    outsider: Who


def seed_captioning_ticket(settings: WorkerSettings, *, base_model: str = "pony") -> SeededCaptions:
    """A ticket in CAPTIONING (trigger ``sks``, class ``dog``) with five images in
    storage; the first already has a caption written by hand."""
    engine = make_engine(settings.resolved_database_url)
    factory = make_session_factory(engine)
    storage = LocalStorage(settings.storage_root)
    guild_id = new_snowflake()
    with factory.begin() as session:
        guild = repo.get_or_create_guild(session, guild_id, "Caption Lab")
        owner = repo.get_or_create_member(session, guild.id, new_snowflake(), "rita")
        ticket = open_ticket(session, guild.id, owner, NewTicket(
            name="Rex", kind=SubjectKind.CHARACTER, base_model=base_model, trigger_word="sks",
            class_token="dog"))  # fmt: skip
        session.flush()
        image_ids = []
        for i, colour in enumerate(COLOURS):
            path = settings.home / "src" / f"img{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (96, 96), colour).save(path)
            stored = storage.put_file(f"datasets/{ticket.id}/{i}.png", path)
            image = DatasetImage(
                ticket_id=ticket.id, sha256=stored.sha256, phash="0" * 16, width=96, height=96,
                size_bytes=stored.size, storage_key=stored.key, original_name=path.name,
                uploader_id=owner.id,
            )  # fmt: skip
            session.add(image)
            session.flush()
            image_ids.append(image.id)
        repo.add_caption_revision(session, image_ids[0], HAND_CAPTION, author_id=owner.id)
        ticket.status = TicketState.CAPTIONING
        ticket_id = ticket.id
    engine.dispose()
    who = Who(guild_id, new_snowflake(), "cara", frozenset({LabRole.CAPTIONER}))
    outsider = Who(guild_id, new_snowflake(), "olly", frozenset())
    return SeededCaptions(ticket_id, image_ids, image_ids[0], who, outsider)
