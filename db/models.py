"""The lab's tables. Postgres is the source of truth for every state.

Relationships are ``lazy="raise"``: a query says what it loads, so no N+1 slips in.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from db.base import Base, BigIntId, UTCDateTime, utcnow
from lab.families import BaseFamily
from lab.lifecycle import TicketState


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    """Enums stored as their values in a VARCHAR with a named CHECK (portable, and
    adding a member never needs ALTER TYPE)."""
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=24,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class SubjectKind(enum.StrEnum):
    CHARACTER = "character"
    STYLE = "style"
    CONCEPT = "concept"
    CLOTHING = "clothing"
    POSE = "pose"
    OBJECT = "object"


class ImageStatus(enum.StrEnum):
    ACTIVE = "active"
    REMOVED = "removed"


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ArtifactKind(enum.StrEnum):
    LORA = "lora"
    SAMPLE_GRID = "sample_grid"
    LOSS_CURVE = "loss_curve"
    STATE = "state"
    DATASET_EXPORT = "dataset_export"


class ContributionKind(enum.StrEnum):
    REQUEST = "request"
    CURATE = "curate"
    CAPTION = "caption"
    TRAIN = "train"
    TEST = "test"


class Guild(Base):
    """A Discord server that runs a lab, with its configuration."""

    __tablename__ = "guilds"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(100))
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Channel/role ids created by /lab setup and per-lab rule overrides."""
    next_ticket_number: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Member(Base):
    __tablename__ = "members"
    __table_args__ = (UniqueConstraint("guild_id", "discord_user_id"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    guild_id: Mapped[int] = mapped_column(ForeignKey("guilds.id", ondelete="CASCADE"))
    discord_user_id: Mapped[int] = mapped_column(BigInteger)
    display_name: Mapped[str] = mapped_column(String(100))
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Ticket(Base):
    """A LoRA request; `parent_id` chains the versions opened by /lora iterate."""

    __tablename__ = "tickets"
    __table_args__ = (
        UniqueConstraint("guild_id", "number"),
        CheckConstraint("version >= 1", name="version_positive"),
        Index("ix_tickets_guild_status", "guild_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    guild_id: Mapped[int] = mapped_column(ForeignKey("guilds.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[SubjectKind] = mapped_column(_enum(SubjectKind, "subject_kind"))
    base_family: Mapped[BaseFamily] = mapped_column(_enum(BaseFamily, "base_family"))
    base_model: Mapped[str] = mapped_column(String(100))
    """The named base ("sd15", "pony", …) the requester chose."""
    trigger_word: Mapped[str] = mapped_column(String(100))
    class_token: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[TicketState] = mapped_column(
        _enum(TicketState, "ticket_state"), default=TicketState.DATASET
    )
    requester_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    claimer_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    chosen_epoch: Mapped[int | None] = mapped_column(Integer)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    version: Mapped[int] = mapped_column(Integer, default=1)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    """Bumped by every compare-and-set transition."""
    forum_thread_id: Mapped[int | None] = mapped_column(BigInteger)
    card_message_id: Mapped[int | None] = mapped_column(BigInteger)
    board_message_id: Mapped[int | None] = mapped_column(BigInteger)
    """The #job-board message (Claim button) while the job is offered or claimed."""
    release_message_id: Mapped[int | None] = mapped_column(BigInteger)
    last_activity_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    requester: Mapped[Member] = relationship(foreign_keys=[requester_id], lazy="raise")
    claimer: Mapped[Member | None] = relationship(foreign_keys=[claimer_id], lazy="raise")


class DatasetImage(Base):
    __tablename__ = "dataset_images"
    __table_args__ = (UniqueConstraint("ticket_id", "sha256"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    sha256: Mapped[str] = mapped_column(String(64))
    phash: Mapped[str] = mapped_column(String(32))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    storage_key: Mapped[str] = mapped_column(String(300))
    original_name: Mapped[str] = mapped_column(String(300))
    uploader_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    status: Mapped[ImageStatus] = mapped_column(
        _enum(ImageStatus, "image_status"), default=ImageStatus.ACTIVE
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Caption(Base):
    """One revision of an image's caption; the newest revision is the current text."""

    __tablename__ = "captions"
    __table_args__ = (UniqueConstraint("image_id", "revision"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("dataset_images.id", ondelete="CASCADE"))
    revision: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    """``None`` when the auto-tagger wrote it."""
    source: Mapped[str] = mapped_column(String(20), default="manual")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TrainingJob(Base):
    """One training run of a ticket. The lease fields let exactly one worker own it."""

    __tablename__ = "training_jobs"
    __table_args__ = (Index("ix_training_jobs_status_lease", "status", "lease_expires_at"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    preset: Mapped[str | None] = mapped_column(String(50))
    status: Mapped[JobStatus] = mapped_column(
        _enum(JobStatus, "job_status"), default=JobStatus.QUEUED
    )
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    fencing_token: Mapped[int] = mapped_column(Integer, default=0)
    """Bumped on every claim of the lease; writes from an older holder are refused."""
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    stop_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    state_key: Mapped[str | None] = mapped_column(String(300))
    """Storage key of the newest resumable training state; a re-queued job resumes
    from it on whichever worker picks it up."""
    state_epoch: Mapped[int | None] = mapped_column(Integer)
    resumes_job_id: Mapped[int | None] = mapped_column(
        BigIntId, ForeignKey("training_jobs.id", ondelete="SET NULL")
    )
    """The job a `/train retry` continues: its newest state is taken when this job is
    claimed (a stop may still be saving one when the retry is asked), and its LoRAs
    are this job's earlier epochs."""
    progress_message_id: Mapped[int | None] = mapped_column(BigInteger)
    """The thread message the bot edits in place with this job's progress."""
    started_by_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Artifact(Base):
    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("job_id", "kind", "epoch"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("training_jobs.id", ondelete="CASCADE"))
    kind: Mapped[ArtifactKind] = mapped_column(_enum(ArtifactKind, "artifact_kind"))
    epoch: Mapped[int | None] = mapped_column(Integer)
    storage_key: Mapped[str] = mapped_column(String(300))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SampleSet(Base):
    """A set of samples testers vote on (one grid: prompts × epochs or × weights)."""

    __tablename__ = "sample_sets"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("training_jobs.id", ondelete="SET NULL"))
    grid_artifact_id: Mapped[int | None] = mapped_column(ForeignKey("artifacts.id"))
    epoch: Mapped[int | None] = mapped_column(Integer)
    prompts: Mapped[list[str]] = mapped_column(JSON, default=list)
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    testing_message_id: Mapped[int | None] = mapped_column(BigInteger)
    """The copy cross-posted to #testing (its tally is kept current too)."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Vote(Base):
    """One vote per member per sample set; voting again changes it."""

    __tablename__ = "votes"
    __table_args__ = (CheckConstraint("value IN (-1, 1)", name="value_is_up_or_down"),)

    sample_set_id: Mapped[int] = mapped_column(
        ForeignKey("sample_sets.id", ondelete="CASCADE"), primary_key=True
    )
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)
    value: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Contribution(Base):
    """Who helped with a ticket, and how much (credits and /lora stats)."""

    __tablename__ = "contributions"
    __table_args__ = (UniqueConstraint("ticket_id", "member_id", "kind"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    kind: Mapped[ContributionKind] = mapped_column(_enum(ContributionKind, "contribution_kind"))
    count: Mapped[int] = mapped_column(Integer, default=0)


class AuditEntry(Base):
    """Every transition: who, when, from, to, why."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    """``None`` when the lab itself acted (worker, reaper, inactivity timer)."""
    action: Mapped[str] = mapped_column(String(40))
    from_status: Mapped[TicketState] = mapped_column(_enum(TicketState, "audit_from_state"))
    to_status: Mapped[TicketState | None] = mapped_column(_enum(TicketState, "audit_to_state"))
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OutboxMessage(Base):
    """A Discord message or Celery task decided in a transaction, delivered after commit."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_pending", "sent_at", "available_at"),
        Index("ix_outbox_ticket_order", "ticket_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    """``discord.*`` rows go to the bot's relay, ``task.*`` rows to Celery."""
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    available_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ticket_id: Mapped[int | None] = mapped_column(BigInteger)
    """The ticket the row belongs to (no foreign key: a dead letter outlives its
    ticket); a ticket's rows are delivered in order."""
    dead_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """Set when the row is given up on; ``last_error`` says why. `redrive` clears it."""


class Worker(Base):
    """A running worker process (for /train workers); it heartbeats while alive."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(200))
    queues: Mapped[list[str]] = mapped_column(JSON, default=list)
    gpu_name: Mapped[str | None] = mapped_column(String(200))
    gpu_memory_mb: Mapped[int | None] = mapped_column(Integer)
    current_job_id: Mapped[int | None] = mapped_column(
        ForeignKey("training_jobs.id", ondelete="SET NULL")
    )
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
