"""What a training worker writes, done directly on the database (the bot never talks
to workers; it only relays the rows they leave behind)."""

from __future__ import annotations

import hashlib
import io

from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from db import repositories as repo
from db.base import utcnow
from db.models import Artifact, ArtifactKind, JobStatus, SampleSet, TrainingJob
from db.services import apply_transition
from lab.lifecycle import Action, Actor
from lab.settings import LabRules
from lab.storage import LocalStorage


def report_progress(factory: sessionmaker[Session], job_id: int, step: int, total: int) -> None:
    with factory.begin() as session:
        job = session.get(TrainingJob, job_id)
        assert job is not None
        job.status = JobStatus.RUNNING
        job.progress = {
            "step": step,
            "total_steps": total,
            "epoch": 1 + step * 2 // total,
            "total_epochs": 2,
            "loss": 0.1 - step / 10_000,
            "steps_per_second": 1.5,
            "eta_seconds": (total - step) / 1.5,
            "worker": "gpu-1",
            "gpu": "H100",
        }
        repo.add_outbox(
            session,
            repo.OutboxItem(
                "discord.job_progress", {"job_id": job_id}, f"job-progress:{job_id}:{step}"
            ),
        )


def finish_training(
    factory: sessionmaker[Session],
    storage: LocalStorage,
    job_id: int,
    rules: LabRules,
    *,
    epochs: int = 2,
    lora_bytes: bytes = b"fake-lora-weights",
) -> int:
    """The job succeeded: LoRA per epoch, one sample grid; returns the sample set id."""
    grid = io.BytesIO()
    Image.new("RGB", (256, 128), (40, 90, 160)).save(grid, "PNG")
    with factory.begin() as session:
        job = session.get(TrainingJob, job_id)
        assert job is not None
        for epoch in range(1, epochs + 1):
            key = f"jobs/{job_id}/lora-e{epoch:04d}.safetensors"
            stored = storage.put_bytes(key, lora_bytes)
            session.add(
                Artifact(
                    job_id=job_id,
                    kind=ArtifactKind.LORA,
                    epoch=epoch,
                    storage_key=key,
                    sha256=stored.sha256,
                    size_bytes=stored.size,
                )
            )
        grid_key = f"jobs/{job_id}/grid.png"
        stored = storage.put_bytes(grid_key, grid.getvalue())
        grid_artifact = Artifact(
            job_id=job_id,
            kind=ArtifactKind.SAMPLE_GRID,
            epoch=epochs,
            storage_key=grid_key,
            sha256=stored.sha256,
            size_bytes=stored.size,
        )
        session.add(grid_artifact)
        session.flush()
        job.status = JobStatus.SUCCEEDED
        job.finished_at = utcnow()
        job.progress = {**job.progress, "step": job.progress.get("total_steps", 1)}
        apply_transition(session, job.ticket_id, Action.TRAINING_SUCCEEDED, Actor.system(), rules)
        sample = SampleSet(
            ticket_id=job.ticket_id,
            job_id=job_id,
            epoch=epochs,
            grid_artifact_id=grid_artifact.id,
            prompts=["ar1a, woman, portrait", "ar1a, woman, full body"],
        )
        session.add(sample)
        session.flush()
        repo.add_outbox(
            session,
            repo.OutboxItem("discord.job_finished", {"job_id": job_id}, f"job-finished:{job_id}"),
        )
        repo.add_outbox(
            session,
            repo.OutboxItem(
                "discord.sample_grid", {"sample_set_id": sample.id}, f"sample-grid:{sample.id}"
            ),
        )
        return sample.id


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
