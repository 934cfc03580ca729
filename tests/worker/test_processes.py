"""Workers as real processes: the embedded mode (SQLite + filesystem broker) and the
fault tests on Postgres + a private Redis (a killed worker, a duplicate delivery, Redis
restarting, the database unreachable, a cancel mid-run)."""

from __future__ import annotations

import logging
import re
import time

import pytest
from sqlalchemy import select

from db import migrate
from db.models import Artifact, ArtifactKind, JobStatus, OutboxMessage, Ticket, TrainingJob
from db.repositories import OutboxItem, add_outbox
from db.services import transition
from db.session import make_engine, make_session_factory
from lab.lifecycle import Action, TicketState
from lab.settings import StorageSettings, WorkerSettings
from lab.storage import storage_from_settings
from tests.conftest import fresh_postgres_database
from tests.worker.conftest import (
    TINY_OVERRIDES,
    seed_started_job,
    trainer_actor,
    worker_settings,
)
from tests.worker.procs import CuttableProxy, RedisServer, wait_for, worker_process

pytestmark = pytest.mark.slow
log = logging.getLogger(__name__)
# Jobs that are interrupted run 4 epochs and are interrupted at epoch 2 or later, so
# there is a saved epoch before the fault and training left after it; jobs that only
# have to finish run 3 (an intermediate LoRA, a final one, a grid per epoch).
EPOCHS = TINY_OVERRIDES["max_train_epochs"]
SHORT = 3
# A job that is stopped never runs to its end, so it can be long at no cost: on a loaded
# machine the two epochs left of a 4-epoch job (about 2 s idle) ran out before the stop
# reached the worker, and the job succeeded instead of stopping.
STOPPED = 40


class Watch:
    """Reads a job's rows from the database the workers use."""

    def __init__(self, settings: WorkerSettings, job_id: int) -> None:
        self.engine = make_engine(settings.resolved_database_url)
        self.factory = make_session_factory(self.engine)
        self.job_id = job_id

    def job(self) -> TrainingJob:
        with self.factory() as s:
            return s.get(TrainingJob, self.job_id)

    def artifacts(self, kind: ArtifactKind) -> list[Artifact]:
        with self.factory() as s:
            query = select(Artifact).where(Artifact.job_id == self.job_id, Artifact.kind == kind)
            return list(s.scalars(query.order_by(Artifact.epoch)))

    def epoch(self) -> int:
        return int((self.job().progress or {}).get("epoch") or 0)

    def ended(self) -> TrainingJob | None:
        job = self.job()
        return job if job.status not in (JobStatus.QUEUED, JobStatus.RUNNING) else None

    def close(self) -> None:
        self.engine.dispose()


def _state_step(key: str) -> int:
    """The global step a stored state was saved at (``…/state-e0002-s0000024.tar``)."""
    match = re.search(r"-s(\d+)\.tar$", key)
    assert match, key
    return int(match[1])


def _assert_complete(watch: Watch, settings: WorkerSettings, epochs: int = EPOCHS) -> None:
    job = watch.job()
    assert job.status is JobStatus.SUCCEEDED, job.error
    assert [a.epoch for a in watch.artifacts(ArtifactKind.LORA)] == list(range(1, epochs + 1))
    assert len(watch.artifacts(ArtifactKind.LOSS_CURVE)) == 1
    with watch.factory() as s:
        assert s.get(Ticket, job.ticket_id).status is TicketState.TESTING
        kinds = set(s.scalars(select(OutboxMessage.kind)))
    assert {"discord.job_progress", "discord.sample_grid", "discord.job_finished"} <= kinds
    keys = storage_from_settings(settings).list(f"jobs/{job.id}/")
    stored = {key.rsplit("/", 1)[1] for key in keys}
    assert {f"Aria-v1-{e:06d}.safetensors" for e in range(1, epochs)} <= stored
    assert {a.storage_key for a in watch.artifacts(ArtifactKind.LORA)} <= set(keys)


def test_embedded_mode_runs_a_job_through_the_filesystem_broker(tmp_path, tiny_base):
    settings = worker_settings(tmp_path / "home", f"sqlite:///{tmp_path / 'lab.db'}", tiny_base)
    assert settings.is_embedded
    migrate.upgrade(settings.resolved_database_url)
    seeded = seed_started_job(settings, max_train_epochs=SHORT)
    watch = Watch(settings, seeded.job_id)
    with worker_process(settings, "embedded", tmp_path / "worker.log") as worker:
        job = wait_for(watch.ended, timeout=240, what="the job to end")
        assert job.status is JobStatus.SUCCEEDED, worker.output()[-3000:]
    _assert_complete(watch, settings, SHORT)
    assert (settings.broker_folder / "in").is_dir()  # the task went through the folder
    watch.close()


@pytest.fixture
def prod(tmp_path, tiny_base):
    """A Postgres database of this test's own (the rows its workers commit must not meet
    another test's) and a private Redis, as production would be."""
    with fresh_postgres_database() as postgres_url:
        migrate.upgrade(postgres_url)
        redis = RedisServer(tmp_path)
        redis.start()

        def make_settings(database_url: str = postgres_url, **extra: object) -> WorkerSettings:
            return worker_settings(
                tmp_path / "home", database_url, tiny_base, broker_url=redis.url, **extra
            )

        yield redis, make_settings, postgres_url
        redis.kill()


@pytest.fixture
def s3_storage(tmp_path) -> StorageSettings:
    """An S3 HTTP endpoint (moto's server) with a bucket: what a second machine shares."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="k",
        aws_secret_access_key="s",
    ).create_bucket(Bucket="lab")
    yield StorageSettings(
        backend="s3",
        s3_bucket="lab",
        s3_endpoint_url=endpoint,
        s3_region="us-east-1",
        s3_access_key_id="k",
        s3_secret_access_key="s",
    )
    server.stop()


@pytest.mark.postgres
def test_killed_worker_job_resumes_on_another_worker(prod, tmp_path, s3_storage):
    """The two workers share only Postgres, Redis and the S3 store (no local files). The
    second one stands by while the first trains, as a spare machine would."""
    _, make_settings, _ = prod
    settings = make_settings(storage=s3_storage)
    seeded = seed_started_job(settings)
    watch = Watch(settings, seeded.job_id)

    def first_has_it() -> bool:
        return (watch.job().lease_owner or "").startswith("first@")

    with worker_process(settings, "first", tmp_path / "a.log") as first:
        wait_for(first_has_it, timeout=240, what="the first worker to take the job")
        with worker_process(settings, "second", tmp_path / "b.log") as second:
            wait_for(
                lambda: watch.artifacts(ArtifactKind.STATE) and watch.epoch() >= 2,
                timeout=240,
                what="epoch 2 with a saved state",
            )
            state_epoch = watch.job().state_epoch
            first.kill()
            killed_at = time.monotonic()

            def second_took_it() -> bool:
                job = watch.job()
                return job.attempt == 2 and (job.lease_owner or "").startswith("second@")

            wait_for(second_took_it, timeout=60, what="the second worker to take the job")
            taken_after = time.monotonic() - killed_at
            wait_for(watch.ended, timeout=240, what="the job to end")
            finished_after = time.monotonic() - killed_at
            output = second.output()
    _assert_complete(watch, settings)
    assert "trainer stack preloaded" in output  # the pool child imported it while idle
    assert f"resumes from jobs/{seeded.job_id}/state-e{state_epoch:04d}" in output
    resumed_epoch = int(output.split("resumed from")[1].split("at epoch ")[1].split(",")[0])
    assert resumed_epoch >= state_epoch >= 1  # not from zero
    log.warning(
        "SIGKILL: re-claimed after %.1fs, finished after %.1fs (resumed at epoch %d)",
        taken_after,
        finished_after,
        resumed_epoch,
    )
    watch.close()


@pytest.mark.postgres
def test_duplicate_delivery_trains_once(prod, tmp_path):
    _, make_settings, _ = prod
    settings = make_settings()
    seeded = seed_started_job(settings, max_train_epochs=2)
    watch = Watch(settings, seeded.job_id)
    with watch.factory.begin() as s:  # the same message again, under another outbox key
        body = {
            "name": "loralab.train",
            "payload": {"job_id": seeded.job_id, "attempt": 1},
            "task_id": f"duplicate-{seeded.job_id}",
            "queue": "gpu",
        }
        add_outbox(s, OutboxItem("task", body, f"dup-{seeded.job_id}"))
    with worker_process(settings, "dup", tmp_path / "w.log") as worker:
        wait_for(watch.ended, timeout=240, what="the job to end")
        wait_for(lambda: "skipped" in worker.output(), timeout=60, what="the duplicate to be seen")
    _assert_complete(watch, settings, 2)
    assert watch.job().fencing_token == 1  # claimed exactly once
    watch.close()


@pytest.mark.postgres
def test_redis_restart_mid_job(prod, tmp_path):
    redis, make_settings, _ = prod
    settings = make_settings()
    seeded = seed_started_job(settings)
    watch = Watch(settings, seeded.job_id)
    with worker_process(settings, "r", tmp_path / "w.log"):
        wait_for(lambda: watch.epoch() >= 2, timeout=240, what="epoch 2")
        redis.kill()
        down_at = time.monotonic()
        time.sleep(2)
        redis.start()
        job = wait_for(watch.ended, timeout=240, what="the job to end")
        log.warning(
            "Redis restart: job ended %.1fs after Redis went down", time.monotonic() - down_at
        )
    assert job.attempt == 1
    _assert_complete(watch, settings)
    watch.close()


@pytest.mark.postgres
def test_database_unreachable_for_seconds(prod, tmp_path):
    from sqlalchemy.engine import make_url

    _, make_settings, postgres_url = prod
    proxy = CuttableProxy(("127.0.0.1", make_url(postgres_url).port or 5432))
    through_proxy = make_url(postgres_url).set(port=proxy.port).render_as_string(False)
    settings = make_settings(database_url=through_proxy, lease_seconds=10)
    seeded = seed_started_job(settings)
    watch = Watch(make_settings(), seeded.job_id)  # the test itself reads directly
    with worker_process(settings, "d", tmp_path / "w.log") as worker:
        wait_for(lambda: watch.epoch() >= 2, timeout=240, what="epoch 2")
        proxy.cut(4)
        cut_at = time.monotonic()
        job = wait_for(watch.ended, timeout=240, what="the job to end")
        log.warning("DB cut 4s: job ended %.1fs later", time.monotonic() - cut_at)
        assert "database unavailable" in worker.output() or "heartbeat failed" in worker.output()
    assert job.attempt == 1
    _assert_complete(watch, settings)
    proxy.close()
    watch.close()


@pytest.mark.postgres
def test_cancel_mid_epoch_saves_state_and_stops(prod, tmp_path):
    _, make_settings, _ = prod
    settings = make_settings()
    seeded = seed_started_job(settings, max_train_epochs=STOPPED)
    watch = Watch(settings, seeded.job_id)
    with worker_process(settings, "c", tmp_path / "w.log"):
        wait_for(lambda: watch.epoch() >= 2, timeout=240, what="epoch 2")
        with watch.factory() as s:
            from db.models import Member

            actor = trainer_actor(s.get(Member, seeded.trainer_id))
        transition(watch.factory, seeded.ticket_id, Action.STOP_TRAINING, actor, settings.rules)
        asked = time.monotonic()
        job = wait_for(watch.ended, timeout=60, what="the job to stop")
        stopped_after = time.monotonic() - asked
    assert job.status is JobStatus.CANCELLED
    assert job.progress["epoch"] < STOPPED  # it did not run to the end
    states = watch.artifacts(ArtifactKind.STATE)
    assert states and watch.job().state_key == states[-1].storage_key
    with watch.factory() as s:
        assert s.get(Ticket, seeded.ticket_id).status is TicketState.FAILED
    log.warning("cancel: job CANCELLED %.1fs after /train stop", stopped_after)
    watch.close()


@pytest.mark.postgres
def test_sigterm_saves_state_and_hands_the_job_back_at_once(prod, tmp_path):
    """Issue 13.5: SIGTERM to the worker's main process only (what `docker stop` sends):
    the job saves its state, is QUEUED again at once (the same attempt), the worker
    exits, and the next worker resumes from that state."""
    import os
    import signal

    _, make_settings, _ = prod
    settings = make_settings(lease_seconds=10)
    seeded = seed_started_job(settings)
    watch = Watch(settings, seeded.job_id)
    with worker_process(settings, "first", tmp_path / "a.log") as first:
        wait_for(
            lambda: watch.artifacts(ArtifactKind.STATE) and watch.epoch() >= 2,
            timeout=240,
            what="epoch 2 with a saved state",
        )
        reported = int(watch.job().progress["step"])  # trained, at least, before the signal
        os.kill(first.proc.pid, signal.SIGTERM)
        term_at = time.monotonic()
        queued = wait_for(
            lambda: (job := watch.job()).status is JobStatus.QUEUED and job,
            timeout=30,
            what="the job to be queued again",
        )
        queued_after = time.monotonic() - term_at
        first.proc.wait(timeout=30)
        exited_after = time.monotonic() - term_at
        assert "handing the job back" in first.output()
    # No attempt lost, and the state handed back holds every step reported before the
    # signal: a fresh one, or the epoch's own when the signal came before the next step.
    assert queued.attempt == 1
    assert queued.state_key in {a.storage_key for a in watch.artifacts(ArtifactKind.STATE)}
    assert _state_step(queued.state_key) >= reported
    with worker_process(settings, "second", tmp_path / "b.log") as second:
        job = wait_for(watch.ended, timeout=240, what="the job to end")
        resumed_after = time.monotonic() - term_at
        output = second.output()
    assert job.status is JobStatus.SUCCEEDED, job.error
    assert f"resumes from {queued.state_key}" in output
    _assert_complete(watch, settings)
    log.warning(
        "SIGTERM: QUEUED after %.1fs, worker exited after %.1fs, job done %.1fs later",
        queued_after,
        exited_after,
        resumed_after,
    )
    watch.close()
