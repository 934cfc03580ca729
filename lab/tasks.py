"""Contracts between the processes: Celery task names and queues, and the outbox row
kinds with their payloads. Payloads carry ids only; receivers re-read the rows.

The bot never imports the worker and the worker never imports the bot: both import
these names.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict


class Queue(StrEnum):
    CPU = "cpu"
    """Ingest, dataset exports, grids, auto-captioning."""
    GPU = "gpu"
    """Training and sampling."""


class TaskName(StrEnum):
    """Explicit, stable Celery task names (never derived from module paths)."""

    TRAIN = "loralab.train"
    SAMPLE = "loralab.sample"
    REAP = "loralab.reap"
    CAPTION = "loralab.caption"


QUEUE_OF: dict[TaskName, Queue] = {
    TaskName.TRAIN: Queue.GPU,
    TaskName.SAMPLE: Queue.GPU,
    TaskName.REAP: Queue.CPU,
    TaskName.CAPTION: Queue.CPU,
}


def family_queue(family: str) -> str:
    """The queue of training tasks for one base family (``gpu.sdxl``): only workers
    that have that family's base model consume it, so a job waits for one of them
    instead of being claimed and failed by a worker that cannot run it."""
    return f"{Queue.GPU.value}.{family}"


def consumed_queues(queues: tuple[str, ...], families: list[str]) -> list[str]:
    """The queues a worker started with `queues` consumes: a GPU worker also takes
    the training queue of every base family it has a model for."""
    extra = [family_queue(f) for f in sorted(families)] if Queue.GPU.value in queues else []
    return [*queues, *extra]


class _Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CaptionPayload(_Payload):
    """Auto-caption a ticket's dataset; ``request_id`` (the Discord interaction id) makes
    the task idempotent: a request is recorded once however often it is delivered."""

    ticket_id: int
    request_id: int
    kind: str | None = None
    """``tagger`` or ``captioner``; ``None``: the style of the ticket's base model."""
    model: str | None = None
    """A configured model name; ``None``: the worker's default for the kind."""
    overwrite: bool = False
    """Caption every image (a new revision); else only images without a caption."""


def task_id(name: TaskName, *ids: int) -> str:
    """The Celery task id, which is also the idempotency key: ``loralab.train:12:2``
    is job 12's second attempt, so a duplicate send is the same task."""
    return ":".join([name.value, *map(str, ids)])


class TaskSender(Protocol):
    """Sends a Celery task by name (the bot's and the worker's outbox relays use it)."""

    def send(self, name: str, payload: dict[str, Any], *, task_id: str, queue: str) -> None: ...


class OutboxKind(StrEnum):
    """What an outbox row asks for. ``task.*`` rows become Celery tasks; ``discord.*``
    rows become Discord messages, sent by the bot's relay."""

    TASK = "task"
    """payload: {"name": TaskName, "payload": {...}, "task_id": str, "queue": Queue}"""
    TICKET_POST = "discord.ticket_post"
    """payload: {"ticket_id"} — create the forum post and its ticket card."""
    TICKET_CARD = "discord.ticket_card"
    """payload: {"ticket_id"} — re-render the ticket card (status, counts, people)."""
    JOB_PROGRESS = "discord.job_progress"
    """payload: {"job_id"} — edit the progress message from the job's progress."""
    SAMPLE_GRID = "discord.sample_grid"
    """payload: {"sample_set_id"} — post the grid with vote buttons (thread + #testing)."""
    JOB_FINISHED = "discord.job_finished"
    """payload: {"job_id"} — training succeeded: artifacts listed, testing opens."""
    JOB_FAILED = "discord.job_failed"
    """payload: {"job_id"} — the job's `error` says what happened and what to change."""
    NOTICE = "discord.notice"
    """payload: {"ticket_id", "text"} — a plain message in the ticket's thread."""
    JOB_BOARD = "discord.job_board"
    """payload: {"ticket_id"} — post, edit or close the ticket's #job-board message."""
    RELEASE = "discord.release"
    """payload: {"ticket_id"} — the #releases post of a released ticket."""
    SAMPLE_TALLY = "discord.sample_tally"
    """payload: {"sample_set_id"} — refresh the tally on both copies of a sample grid."""
    CLOSE_VOTING = "discord.close_voting"
    """payload: {"ticket_id"} — the ticket left TESTING: its sample grids' vote buttons are
    disabled on both copies."""
