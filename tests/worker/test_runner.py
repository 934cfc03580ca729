"""The training service in-process (no Celery): claim, train, store, finish."""

from __future__ import annotations

from sqlalchemy import select

from db.models import (
    Artifact,
    ArtifactKind,
    JobStatus,
    OutboxMessage,
    SampleSet,
    Ticket,
    TrainingJob,
)
from lab.lifecycle import TicketState
from tests.worker.conftest import seed_started_job
from worker.runner import run_training_job
from worker.runtime import build_runtime


def test_job_trains_stores_one_lora_per_epoch_and_opens_testing(sqlite_settings):
    seeded = seed_started_job(sqlite_settings, max_train_epochs=2)
    rt = build_runtime(sqlite_settings)

    assert run_training_job(rt, seeded.job_id, 1) is JobStatus.SUCCEEDED
    assert run_training_job(rt, seeded.job_id, 1) is None  # a repeat delivery does nothing

    with rt.factory() as session:
        job = session.get(TrainingJob, seeded.job_id)
        assert job.status is JobStatus.SUCCEEDED and job.fencing_token == 1
        assert job.progress["epoch"] == 2 and job.progress["worker"] == rt.name
        assert session.get(Ticket, seeded.ticket_id).status is TicketState.TESTING
        artifacts = session.scalars(select(Artifact).where(Artifact.job_id == job.id)).all()
        loras = sorted(a.epoch for a in artifacts if a.kind is ArtifactKind.LORA)
        assert loras == [1, 2]
        assert {a.kind for a in artifacts} == {
            ArtifactKind.LORA,
            ArtifactKind.SAMPLE_GRID, ArtifactKind.LOSS_CURVE, ArtifactKind.STATE
        }  # fmt: skip
        for artifact in artifacts:
            assert rt.storage.exists(artifact.storage_key)
        sets = session.scalars(select(SampleSet).where(SampleSet.job_id == job.id)).all()
        assert sorted(s.epoch for s in sets) == [1, 2]
        kinds = session.scalars(select(OutboxMessage.kind)).all()
        assert {"discord.job_progress", "discord.sample_grid", "discord.job_finished"} <= set(kinds)
