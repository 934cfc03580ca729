"""Worker fixtures: a tiny base model, a migrated database, local storage, and a ticket
whose claimer just pressed /train start (its task row waits in the outbox)."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

from dataclasses import dataclass
from pathlib import Path

import pytest

from db import migrate
from db import repositories as repo
from db.models import DatasetImage, Member, SubjectKind, Ticket, TrainingJob
from db.services import NewTicket, open_ticket, transition
from lab.families import BaseFamily
from lab.lifecycle import Action, Actor, LabRole, TicketState
from lab.settings import WorkerSettings
from lab.storage import storage_from_settings
from tests.db.conftest import new_snowflake
from trainer.tiny import build_tiny_sd15, make_image

pytest.importorskip("torch")

# A run long enough to interrupt: 4 epochs of 4 images × 3 repeats, batch 1.
TINY_OVERRIDES = {
    "resolution": "64,64",
    "min_bucket_reso": 32,
    "max_bucket_reso": 128,
    "bucket_reso_steps": 32,
    "network_dim": 4,
    "network_alpha": 2.0,
    "network_dropout": 0.0,
    "train_batch_size": 1,
    "max_train_epochs": 4,
    "num_repeats": 3,
    "learning_rate": 1e-3,
    "mixed_precision": "no",
    "save_precision": "float",
    "gradient_checkpointing": False,
    "cache_latents_to_disk": False,
    "seed": 7,
}


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sd15(tmp_path_factory.mktemp("base"))


def worker_settings(
    home: Path, database_url: str, tiny_base: Path, **extra: object
) -> WorkerSettings:
    values: dict[str, object] = {
        "home": home,
        "database_url": database_url,
        "base_models": {BaseFamily.SD15: str(tiny_base)},
        "lease_seconds": 4,
        "reaper_interval_seconds": 1,
        "progress_interval_seconds": 0.5,
        "sample_steps": 2,
        "max_attempts": 3,
    }
    values.update(extra)
    return WorkerSettings(**values)


@dataclass
class SeededJob:
    ticket_id: int
    job_id: int
    trainer_id: int


def trainer_actor(member: Member) -> Actor:
    """The policy's actor for a member holding the Trainer role (in Discord)."""
    return Actor(member.id, frozenset({LabRole.TRAINER}), display_name=member.display_name)


def seed_started_job(
    settings: WorkerSettings, *, images: int = 4, **overrides: object
) -> SeededJob:
    """A ticket in TRAINING with one queued job and its task row in the outbox."""
    from db.session import make_engine, make_session_factory

    engine = make_engine(settings.resolved_database_url)
    factory = make_session_factory(engine)
    storage = storage_from_settings(settings)
    with factory.begin() as session:
        guild = repo.get_or_create_guild(session, new_snowflake(), "Worker Lab")
        owner = repo.get_or_create_member(session, guild.id, new_snowflake(), "rita")
        trainer = repo.get_or_create_member(session, guild.id, new_snowflake(), "tina")
        ticket = open_ticket(
            session,
            guild.id,
            owner,
            NewTicket(
                name="Aria",
                kind=SubjectKind.CHARACTER,
                base_model="sd15",
                trigger_word="sks",
                class_token="dog",
            ),
        )
        session.flush()
        for i in range(images):
            path = settings.home / f"src{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            make_image(path, [(64, 64), (96, 32)][i % 2], seed=i)
            stored = storage.put_file(f"datasets/{ticket.id}/{i}.png", path)
            image = DatasetImage(
                ticket_id=ticket.id,
                sha256=stored.sha256,
                phash="0" * 16,
                width=64,
                height=64,
                size_bytes=stored.size,
                storage_key=stored.key,
                original_name=path.name,
                uploader_id=owner.id,
            )
            session.add(image)
            session.flush()
            repo.add_caption_revision(session, image.id, "sks, dog, red ball", author_id=owner.id)
        ticket.status, ticket.claimer_id = TicketState.CLAIMED, trainer.id
        session.add(
            TrainingJob(
                ticket_id=ticket.id, preset="sd15-character", config={**TINY_OVERRIDES, **overrides}
            )
        )
        ticket_id, trainer_id = ticket.id, trainer.id
        actor = trainer_actor(trainer)
    transition(factory, ticket_id, Action.START_TRAINING, actor, settings.rules)
    with factory() as session:
        job_id = repo.latest_job(session, ticket_id).id
        assert session.get(Ticket, ticket_id).status is TicketState.TRAINING
    engine.dispose()
    return SeededJob(ticket_id, job_id, trainer_id)


@pytest.fixture
def sqlite_settings(tmp_path: Path, tiny_base: Path) -> WorkerSettings:
    settings = worker_settings(tmp_path / "home", f"sqlite:///{tmp_path / 'lab.db'}", tiny_base)
    migrate.upgrade(settings.resolved_database_url)
    return settings
