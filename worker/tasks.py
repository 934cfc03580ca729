"""Celery tasks: thin. They receive ids, and a service does the work (the trainer and
torch are imported inside the services' bodies, so the main process stays torch-free)."""

from __future__ import annotations

import logging

from lab.tasks import CaptionPayload, TaskName
from worker.app import app
from worker.captioning import run_caption_request
from worker.maintenance import reap_and_dispatch
from worker.runner import run_training_job
from worker.runtime import runtime
from worker.sampling import run_sample_request

log = logging.getLogger(__name__)


@app.task(name=TaskName.TRAIN.value)
def train(job_id: int, attempt: int) -> str:
    """Train attempt `attempt` of job `job_id` (a repeat delivery finds nothing to do)."""
    status = run_training_job(runtime(), job_id, attempt)
    outcome = status.value if status else "skipped"
    log.info("job %s attempt %s: %s", job_id, attempt, outcome)
    return outcome


@app.task(name=TaskName.CAPTION.value)
def caption(
    ticket_id: int,
    request_id: int,
    kind: str | None = None,
    model: str | None = None,
    overwrite: bool = False,
) -> int | str:
    """Auto-caption a ticket's dataset for request `request_id` (idempotent)."""
    payload = CaptionPayload(ticket_id=ticket_id, request_id=request_id, kind=kind,
                             model=model, overwrite=overwrite)  # fmt: skip
    written = run_caption_request(runtime(), payload)
    return "skipped" if written is None else written


@app.task(name=TaskName.SAMPLE.value)
def sample(job_id: int, sample_set_id: int) -> str:
    """Render a tester's prompts with the job's newest LoRA (`/test prompts`)."""
    return "rendered" if run_sample_request(runtime(), job_id, sample_set_id) else "skipped"


@app.task(name=TaskName.REAP.value)
def reap() -> dict[str, list[int]]:
    """Re-queue jobs whose worker died (also run periodically by every worker)."""
    result = reap_and_dispatch(runtime(), app)
    return {"requeued": result.requeued, "failed": result.failed}
