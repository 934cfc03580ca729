"""Job leases, the reaper and the transitions' effects on jobs, on real databases."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from db import jobs, reaper
from db import repositories as repo
from db import training as training_service
from db.base import utcnow
from db.models import (
    Artifact,
    ArtifactKind,
    AuditEntry,
    JobStatus,
    OutboxMessage,
    Ticket,
    TrainingJob,
)
from db.services import transition
from lab.lifecycle import Action, LabRole, TicketState
from lab.settings import LabRules
from lab.storage import StoredObject

RULES = LabRules()


@pytest.fixture
def training(factory, session, make_member, open_sample_ticket):
    """A ticket whose claimer just pressed /train start: job attempt 1 queued."""
    trainer = make_member("tina", LabRole.TRAINER)
    owner = make_member("rita")
    ticket_id = open_sample_ticket(owner)
    ticket = session.get(Ticket, ticket_id)
    ticket.status, ticket.claimer_id = TicketState.CLAIMED, trainer.id
    session.add(TrainingJob(ticket_id=ticket_id, config={"network_dim": 8}))
    session.commit()
    actor = make_member.actor(trainer)
    transition(factory, ticket_id, Action.START_TRAINING, actor, RULES)
    job = repo.latest_job(session, ticket_id)
    return ticket_id, job.id, actor


def _outbox(session, prefix, job_id):
    """This job's outbox keys of one kind: ``prefix`` then the job id, then ``:`` or the
    end (other tests' job 1 must not match job 12's prefix)."""
    start = f"{prefix}{job_id}"
    return session.scalars(
        select(OutboxMessage.idempotency_key).where(
            (OutboxMessage.idempotency_key == start)
            | OutboxMessage.idempotency_key.startswith(f"{start}:")
        )
    ).all()


def test_start_queues_attempt_one_and_its_task(session, training):
    ticket_id, job_id, _ = training
    job = session.get(TrainingJob, job_id)
    assert (job.status, job.attempt) == (JobStatus.QUEUED, 1)
    assert _outbox(session, "loralab.train:", job_id) == [f"loralab.train:{job_id}:1"]
    assert session.get(Ticket, ticket_id).status is TicketState.TRAINING


def test_only_one_claim_per_attempt(factory, training):
    _, job_id, _ = training
    first = jobs.claim(factory, job_id, 1, "w1", 60)
    assert first is not None and first.token == 1
    assert jobs.claim(factory, job_id, 1, "w2", 60) is None  # duplicate delivery
    assert jobs.claim(factory, job_id, 2, "w2", 60) is None  # no such attempt yet


def test_renew_records_progress_and_reports_stop(factory, session, training):
    ticket_id, job_id, actor = training
    lease = jobs.claim(factory, job_id, 1, "w1", 60)
    status = jobs.renew(factory, lease, 60, progress={"step": 3}, progress_seq=1)
    assert status.stop_requested is False
    transition(factory, ticket_id, Action.STOP_TRAINING, actor, RULES)
    assert jobs.renew(factory, lease, 60).stop_requested is True
    assert jobs.finish(factory, lease, RULES, status=JobStatus.CANCELLED)
    session.expire_all()
    job = session.get(TrainingJob, job_id)
    assert (job.status, job.progress) == (JobStatus.CANCELLED, {"step": 3})
    assert session.get(Ticket, ticket_id).status is TicketState.FAILED
    assert _outbox(session, "progress:", job_id) == [f"progress:{job_id}:1:1"]


def test_success_moves_ticket_to_testing_with_audit_and_event(factory, session, training):
    ticket_id, job_id, _ = training
    lease = jobs.claim(factory, job_id, 1, "w1", 60)
    stored = StoredObject(f"jobs/{job_id}/lora-e0001.safetensors", "ab" * 32, 123)
    jobs.record_artifact(factory, lease, ArtifactKind.LORA, stored, epoch=1)
    jobs.record_artifact(factory, lease, ArtifactKind.LORA, stored, epoch=1)  # replaced, not added
    assert jobs.finish(factory, lease, RULES, status=JobStatus.SUCCEEDED)
    session.expire_all()
    assert session.get(Ticket, ticket_id).status is TicketState.TESTING
    assert len(session.scalars(select(Artifact).where(Artifact.job_id == job_id)).all()) == 1
    actions = session.scalars(
        select(AuditEntry.action).where(AuditEntry.ticket_id == ticket_id).order_by(AuditEntry.id)
    ).all()
    assert actions[-1] == "training_succeeded"
    assert _outbox(session, "discord.job_finished:", job_id) == [f"discord.job_finished:{job_id}"]


def test_reaper_requeues_expired_lease_and_fences_the_old_worker(factory, session, training):
    ticket_id, job_id, _ = training
    old = jobs.claim(factory, job_id, 1, "w1", 60)
    result = reaper.reap_expired(
        factory, RULES, max_attempts=3, now=utcnow() + timedelta(minutes=5)
    )
    assert result.requeued == [job_id]
    assert _outbox(session, "loralab.train:", job_id) == [
        f"loralab.train:{job_id}:1",
        f"loralab.train:{job_id}:2",
    ]
    # the old worker wakes up: every write it tries is refused
    with pytest.raises(jobs.LeaseLost):
        jobs.renew(factory, old, 60)
    with pytest.raises(jobs.LeaseLost):
        jobs.record_artifact(
            factory, old, ArtifactKind.LORA, StoredObject("k", "0" * 64, 1), epoch=1
        )
    assert not jobs.finish(factory, old, RULES, status=JobStatus.SUCCEEDED)
    new = jobs.claim(factory, job_id, 2, "w2", 60)
    assert new is not None and new.token == old.token + 1
    session.expire_all()
    assert session.get(Ticket, ticket_id).status is TicketState.TRAINING


def test_reaper_gives_up_after_max_attempts_with_a_reason(factory, session, training):
    ticket_id, job_id, _ = training
    later = utcnow() + timedelta(minutes=5)
    jobs.claim(factory, job_id, 1, "w1", 60)
    assert reaper.reap_expired(factory, RULES, max_attempts=2, now=later).requeued == [job_id]
    jobs.claim(factory, job_id, 2, "w2", 60)
    result = reaper.reap_expired(factory, RULES, max_attempts=2, now=later + timedelta(minutes=5))
    assert (result.requeued, result.failed) == ([], [job_id])
    session.expire_all()
    job = session.get(TrainingJob, job_id)
    assert (job.status, job.attempt) == (JobStatus.FAILED, 2)
    assert "stopped answering 2 times" in job.error
    assert session.get(Ticket, ticket_id).status is TicketState.FAILED
    assert _outbox(session, "discord.job_failed:", job_id) == [f"discord.job_failed:{job_id}"]


def test_retry_resumes_from_the_failed_jobs_state(factory, session, training):
    ticket_id, job_id, actor = training
    lease = jobs.claim(factory, job_id, 1, "w1", 60)
    state = StoredObject(f"jobs/{job_id}/state-e0002.tar", "cd" * 32, 10)
    jobs.record_artifact(factory, lease, ArtifactKind.STATE, state, epoch=2)
    jobs.finish(factory, lease, RULES, status=JobStatus.FAILED, error="CUDA out of memory")
    transition(factory, ticket_id, Action.RETRY, actor, RULES)
    session.expire_all()
    retry = repo.latest_job(session, ticket_id)
    assert retry.id != job_id
    assert (retry.status, retry.state_key, retry.state_epoch) == (
        JobStatus.QUEUED,
        state.key,
        2,
    )
    assert retry.config == {"network_dim": 8}


def test_stop_then_retry_resumes_from_the_stops_state_and_keeps_its_epochs(
    factory, session, training
):
    """Issue 13.6: /train retry is pressed while the stopped job is still saving; the
    retried job, when claimed, resumes from the stop's state (step 14), not the older
    one (step 8) that existed at retry time, and its run lists both jobs' LoRAs."""
    ticket_id, job_id, actor = training
    old = jobs.claim(factory, job_id, 1, "w1", 60)

    def stored(name: str) -> StoredObject:
        return StoredObject(f"jobs/{job_id}/{name}", "ab" * 32, 10)

    jobs.record_artifact(factory, old, ArtifactKind.LORA, stored("e1.safetensors"), epoch=1)
    jobs.record_artifact(factory, old, ArtifactKind.STATE, stored("state-s8.tar"), epoch=1)
    transition(factory, ticket_id, Action.STOP_TRAINING, actor, RULES)
    transition(factory, ticket_id, Action.RETRY, actor, RULES)  # before the stop's save
    jobs.record_artifact(factory, old, ArtifactKind.LORA, stored("e2.safetensors"), epoch=2)
    jobs.record_artifact(factory, old, ArtifactKind.STATE, stored("state-s14.tar"), epoch=2)
    assert jobs.finish(factory, old, RULES, status=JobStatus.CANCELLED)

    session.expire_all()
    retry = repo.latest_job(session, ticket_id)
    assert retry.id != job_id and retry.state_key == f"jobs/{job_id}/state-s8.tar"
    transition(factory, ticket_id, Action.START_TRAINING, actor, RULES)
    new = jobs.claim(factory, retry.id, 1, "w2", 60)
    with factory() as s:
        assert jobs.job_context(s, retry.id).state_key == f"jobs/{job_id}/state-s14.tar"
    own = StoredObject(f"jobs/{retry.id}/e3.safetensors", "cd" * 32, 10)
    jobs.record_artifact(factory, new, ArtifactKind.LORA, own, epoch=3)
    with factory() as s:
        run = jobs.loras(s, retry.id)
    assert {e: a.storage_key for e, a in run.items()} == {
        1: f"jobs/{job_id}/e1.safetensors",
        2: f"jobs/{job_id}/e2.safetensors",
        3: own.key,
    }
    assert training_service.job_view(factory, retry.id).lora_epochs == (1, 2, 3)
    assert jobs.finish(factory, new, RULES, status=JobStatus.SUCCEEDED)
    session.get(Ticket, ticket_id).chosen_epoch = 2
    session.commit()
    release = training_service.release_view(factory, ticket_id)
    assert release.lora_key == f"jobs/{job_id}/e2.safetensors"  # trained by the first job


def test_a_stopping_job_whose_worker_died_is_cancelled_not_run_again(factory, session, training):
    ticket_id, job_id, actor = training
    jobs.claim(factory, job_id, 1, "w1", 60)
    transition(factory, ticket_id, Action.STOP_TRAINING, actor, RULES)
    result = reaper.reap_expired(
        factory, RULES, max_attempts=3, now=utcnow() + timedelta(minutes=5)
    )
    assert (result.requeued, result.failed) == ([], [])
    session.expire_all()
    job = session.get(TrainingJob, job_id)
    assert (job.status, job.attempt) == (JobStatus.CANCELLED, 1)
    assert _outbox(session, "loralab.train:", job_id) == [f"loralab.train:{job_id}:1"]
