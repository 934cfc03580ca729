"""The training service in-process (no Celery): claim, train, store, finish."""

from __future__ import annotations

import errno

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
from lab.storage import StorageError
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


def _job_and_notices(rt, seeded):
    with rt.factory() as session:
        job = session.get(TrainingJob, seeded.job_id)
        notices = session.scalars(
            select(OutboxMessage.payload).where(OutboxMessage.kind == "discord.notice")
        ).all()
        return job, [n["text"] for n in notices]


def test_a_trigger_that_cannot_be_a_folder_fails_at_once_with_the_reason(sqlite_settings):
    """Issue 13.4: an ExportError is permanent, not "the worker stopped answering"."""
    seeded = seed_started_job(sqlite_settings)
    rt = build_runtime(sqlite_settings)
    with rt.factory.begin() as session:
        session.get(Ticket, seeded.ticket_id).class_token = "man/woman"
    assert run_training_job(rt, seeded.job_id, 1) is JobStatus.FAILED
    job, _ = _job_and_notices(rt, seeded)
    assert (job.status, job.attempt) == (JobStatus.FAILED, 1)
    assert job.error == (
        "The dataset could not be prepared for training: "
        "'3_sks man/woman' cannot be used as a folder name"  # 3 repeats
    )


def test_a_full_disk_fails_at_once_with_what_to_do(sqlite_settings, monkeypatch):
    seeded = seed_started_job(sqlite_settings)
    rt = build_runtime(sqlite_settings)

    def disk_full(key, target):
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(rt.storage, "download", disk_full)
    assert run_training_job(rt, seeded.job_id, 1) is JobStatus.FAILED
    job, _ = _job_and_notices(rt, seeded)
    assert job.error.startswith("The worker's disk is full (")
    assert job.error.endswith("). Free space on it, then /train retry.")


def test_a_storage_error_hands_the_job_back_with_the_reason(sqlite_settings, monkeypatch):
    """Retryable: QUEUED again as attempt 2 at once (its task in the outbox), the
    reason in the thread; at the last attempt the job fails with that reason."""
    seeded = seed_started_job(sqlite_settings)
    rt = build_runtime(sqlite_settings.model_copy(update={"max_attempts": 2}))

    def store_down(key, target):
        raise StorageError(f"{key}: connection reset by the object store")

    monkeypatch.setattr(rt.storage, "download", store_down)
    assert run_training_job(rt, seeded.job_id, 1) is JobStatus.QUEUED
    job, notices = _job_and_notices(rt, seeded)
    assert (job.status, job.attempt, job.lease_owner) == (JobStatus.QUEUED, 2, None)
    assert "connection reset by the object store" in job.error
    assert notices[-1].startswith("Attempt 1 failed: The file store failed: datasets/")
    assert "re-queued (attempt 2 of 2)" in notices[-1]
    with rt.factory() as session:
        keys = session.scalars(select(OutboxMessage.idempotency_key)).all()
    assert f"loralab.train:{seeded.job_id}:2" in keys

    assert run_training_job(rt, seeded.job_id, 2) is JobStatus.FAILED
    job, _ = _job_and_notices(rt, seeded)
    assert job.error.startswith("The job failed 2 times; the last error: The file store failed")
    with rt.factory() as session:
        assert session.get(Ticket, seeded.ticket_id).status is TicketState.FAILED


def test_a_retried_job_waits_for_the_stopped_job_to_finish_saving(sqlite_settings):
    """Issue 13.6: an idle worker gets the retried job while the stopped one still
    saves its last state; it claims only after that job ended (within a lease)."""
    import threading

    from db import jobs
    from db.models import Member
    from db.repositories import latest_job
    from db.services import transition
    from lab.lifecycle import Action
    from tests.worker.conftest import trainer_actor

    settings = sqlite_settings.model_copy(update={"base_models": {}, "lease_seconds": 10})
    seeded = seed_started_job(settings)
    rt = build_runtime(settings)
    stopping = jobs.claim(rt.factory, seeded.job_id, 1, "other@host", 60)
    with rt.factory() as session:
        actor = trainer_actor(session.get(Member, seeded.trainer_id))
    for action in (Action.STOP_TRAINING, Action.RETRY, Action.START_TRAINING):
        transition(rt.factory, seeded.ticket_id, action, actor, settings.rules)
    with rt.factory() as session:
        retried = latest_job(session, seeded.ticket_id).id
    saver = threading.Timer(
        1.5, lambda: jobs.finish(rt.factory, stopping, settings.rules, status=JobStatus.CANCELLED)
    )
    saver.start()
    assert run_training_job(rt, retried, 1) is JobStatus.FAILED  # no base model here
    saver.join()
    with rt.factory() as session:
        stopped, job = session.get(TrainingJob, seeded.job_id), session.get(TrainingJob, retried)
        assert job.started_at >= stopped.finished_at
