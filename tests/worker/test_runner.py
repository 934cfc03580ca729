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
            ArtifactKind.SAMPLE_GRID,
            ArtifactKind.LOSS_CURVE,
            ArtifactKind.STATE,
        }
        for artifact in artifacts:
            assert rt.storage.exists(artifact.storage_key)
        sets = session.scalars(select(SampleSet).where(SampleSet.job_id == job.id)).all()
        assert sorted(s.epoch for s in sets) == [1, 2]
        kinds = session.scalars(select(OutboxMessage.kind)).all()
        assert {"discord.job_progress", "discord.sample_grid", "discord.job_finished"} <= set(kinds)


def test_out_of_memory_fails_the_job_with_what_to_change(sqlite_settings, monkeypatch):
    import torch

    import trainer.loop

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainer.loop, "train", oom)
    seeded = seed_started_job(sqlite_settings)
    rt = build_runtime(sqlite_settings)
    assert run_training_job(rt, seeded.job_id, 1) is JobStatus.FAILED
    with rt.factory() as session:
        job = session.get(TrainingJob, seeded.job_id)
        assert job.error.startswith("The GPU ran out of memory. Lower train_batch_size")
        assert session.get(Ticket, seeded.ticket_id).status is TicketState.FAILED
        failed = session.scalars(
            select(OutboxMessage.idempotency_key).where(OutboxMessage.kind == "discord.job_failed")
        ).all()
        assert failed == [f"discord.job_failed:{seeded.job_id}"]


def test_missing_base_model_fails_with_the_setting_to_set(sqlite_settings):
    settings = sqlite_settings.model_copy(update={"base_models": {}})
    seeded = seed_started_job(settings)
    rt = build_runtime(settings)
    assert run_training_job(rt, seeded.job_id, 1) is JobStatus.FAILED
    with rt.factory() as session:
        error = session.get(TrainingJob, seeded.job_id).error
    assert error == "This worker has no sd15 base model configured (LORALAB_BASE_MODELS__SD15)."


def test_bad_stored_config_fails_with_the_trainers_message(sqlite_settings):
    seeded = seed_started_job(sqlite_settings, learning_rte=1e-4)
    rt = build_runtime(sqlite_settings)
    assert run_training_job(rt, seeded.job_id, 1) is JobStatus.FAILED
    with rt.factory() as session:
        error = session.get(TrainingJob, seeded.job_id).error
    assert "unknown key 'learning_rte': use learning_rate" in error


def test_registry_records_worker_gpu_and_current_job(sqlite_settings):
    from db.models import Worker
    from worker.registry import gpu_description, register, set_current_job, unregister

    rt = build_runtime(sqlite_settings)
    register(rt, ["cpu", "gpu"])
    seeded = seed_started_job(sqlite_settings)
    set_current_job(rt, seeded.job_id)
    with rt.factory() as session:
        row = session.get(Worker, rt.name)
        assert row.queues == ["cpu", "gpu"] and row.current_job_id == seeded.job_id
        assert (row.gpu_name is None) == (gpu_description() == "CPU")
    unregister(rt)
    with rt.factory() as session:
        assert session.get(Worker, rt.name) is None


def test_a_job_on_two_processes_stores_what_one_process_does(sqlite_settings):
    """gpus_per_job=2 (gloo on CPUs here): rank 0's reports reach the job, once each."""
    settings = sqlite_settings.model_copy(update={"gpus_per_job": 2})
    seeded = seed_started_job(settings, max_train_epochs=2)
    rt = build_runtime(settings)

    assert run_training_job(rt, seeded.job_id, 1) is JobStatus.SUCCEEDED
    with rt.factory() as session:
        job = session.get(TrainingJob, seeded.job_id)
        assert job.progress["epoch"] == 2
        artifacts = session.scalars(select(Artifact).where(Artifact.job_id == job.id)).all()
        assert sorted(a.epoch for a in artifacts if a.kind is ArtifactKind.LORA) == [1, 2]
        assert sum(a.kind is ArtifactKind.STATE for a in artifacts) >= 1
        sets = session.scalars(select(SampleSet).where(SampleSet.job_id == job.id)).all()
        assert sorted(s.epoch for s in sets) == [1, 2]
