"""The work queue never stalls (issue 13), on real Postgres and a private Redis without
persistence (a restart loses every message: the double for "the message was lost").

These run the relay, the reaper and the reconciliation functions directly, or a worker
process that only does its housekeeping; none of them trains a model."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import redis as redis_lib
from kombu import Connection
from sqlalchemy import event, select
from sqlalchemy.engine import make_url

from db import jobs, migrate, reaper
from db.models import JobStatus, OutboxMessage, TrainingJob, Worker
from db.outbox import deliver_pending, enqueue_task
from db.session import make_engine, make_session_factory
from lab.families import BaseFamily
from lab.settings import WorkerSettings
from lab.tasks import OutboxKind, TaskName
from tests.conftest import fresh_postgres_database
from tests.worker.conftest import seed_started_job, worker_settings
from tests.worker.procs import CuttableProxy, RedisServer, wait_for, worker_process
from worker.client import CelerySender, client_app
from worker.maintenance import reap_and_dispatch
from worker.runtime import build_runtime

pytestmark = pytest.mark.postgres
log = logging.getLogger(__name__)


@pytest.fixture
def lab(tmp_path: Path):
    """A fresh Postgres database, a private Redis (not started: each test decides) and
    settings pointing at both (lease 10 s, as the process tests use)."""
    with fresh_postgres_database() as url:
        migrate.upgrade(url)
        redis = RedisServer(tmp_path)

        def make_settings(database_url: str = url, **extra: object) -> WorkerSettings:
            values: dict[str, object] = {"broker_url": redis.url, "lease_seconds": 10}
            values.update(extra)
            return worker_settings(tmp_path / "home", database_url, tmp_path / "none", **values)

        engine = make_engine(url)
        yield redis, make_settings, make_session_factory(engine)
        engine.dispose()
        redis.kill()


def _task_rows(factory) -> list[OutboxMessage]:
    with factory() as s:
        query = select(OutboxMessage).where(OutboxMessage.kind == OutboxKind.TASK.value)
        return list(s.scalars(query.order_by(OutboxMessage.id)))


def _queued_task_ids(redis: RedisServer, queue: str = "gpu.sd15") -> list[str]:
    import json

    client = redis_lib.Redis.from_url(redis.url)
    return [json.loads(raw)["headers"]["id"] for raw in client.lrange(queue, 0, -1)]


def test_broker_down_is_retried_not_dead_lettered(lab):
    """Point 1: /train start commits while Redis is down; the relay keeps the row and
    sends it once Redis is back."""
    redis, make_settings, factory = lab
    settings = make_settings()
    seeded = seed_started_job(settings)
    with factory.begin() as s:  # a second row: a pass stops at the first outage
        enqueue_task(s, TaskName.REAP, {}, 1)
    sender = CelerySender(client_app(settings))
    for _ in range(
        10
    ):  # Redis down: ten relay passes (more than the 8 of a dead letter), each one a failed try
        with factory.begin() as s:  # due again now (the test does not wait the backoff)
            s.execute(
                OutboxMessage.__table__.update().values(available_at=OutboxMessage.created_at)
            )
        report = deliver_pending(factory, OutboxKind.TASK.value, sender.deliver)
        assert (report.retried, report.dead) == (1, 0)
    row, waiting = _task_rows(factory)
    assert row.sent_at is None and row.attempts < 8 and "broker unavailable" in row.last_error
    assert waiting.attempts == 0  # never tried while the broker was down
    redis.start()
    back_at = time.monotonic()
    with factory.begin() as s:
        s.execute(OutboxMessage.__table__.update().values(available_at=OutboxMessage.created_at))
    assert deliver_pending(factory, OutboxKind.TASK.value, sender.deliver).sent == 2
    log.warning("broker back: tasks sent %.2fs later", time.monotonic() - back_at)
    assert _queued_task_ids(redis) == [f"loralab.train:{seeded.job_id}:1"]


def test_a_lost_message_is_sent_again_and_a_held_one_is_not(lab):
    """Point 2: Redis restarts without persistence after the task was sent; the job is
    QUEUED with no message anywhere. Reconciliation sends it again, once."""
    redis, make_settings, factory = lab
    settings = make_settings(resend_queued_after_seconds=1)
    seeded = seed_started_job(settings)
    rt = build_runtime(settings)
    app = client_app(settings)
    redis.start()
    reap_and_dispatch(rt, app)
    task = f"loralab.train:{seeded.job_id}:1"
    assert _queued_task_ids(redis) == [task]
    time.sleep(1.2)
    reap_and_dispatch(rt, app)  # past the bound, but Redis holds it: no second copy
    assert _queued_task_ids(redis) == [task]
    with Connection(redis.url) as conn:  # a worker reserves it (taken, not yet acked)
        reserved = conn.SimpleQueue("gpu.sd15", no_ack=False).get(timeout=5)
        assert reserved.headers["id"] == task and _queued_task_ids(redis) == []
        reap_and_dispatch(rt, app)
        assert _queued_task_ids(redis) == []  # reserved by a live worker: not re-sent

    redis.kill()
    redis.start()  # no AOF, no RDB: the message is gone
    lost_at = time.monotonic()
    assert _queued_task_ids(redis) == []

    def resent() -> bool:
        reap_and_dispatch(rt, app)
        return _queued_task_ids(redis) == [task]

    wait_for(resent, timeout=10, what="the lost task to be sent again")
    log.warning("message lost: task back in Redis %.2fs later", time.monotonic() - lost_at)
    keys = [row.idempotency_key for row in _task_rows(factory)]
    assert keys == [task, f"{task}:resend-1"]
    reap_and_dispatch(rt, app)
    assert _queued_task_ids(redis) == [task]  # held again: not re-sent a second time
    rt.engine.dispose()


def _through_proxy(settings: WorkerSettings) -> tuple[CuttableProxy, str]:
    url = make_url(settings.resolved_database_url)
    proxy = CuttableProxy(("127.0.0.1", url.port or 5432))
    return proxy, url.set(port=proxy.port).render_as_string(False)


def test_worker_started_while_the_database_is_down_starts_its_maintenance(lab, tmp_path):
    """Point 3: the database is unreachable when the worker starts; once it answers the
    worker registers and its relay sends what waits in the outbox."""
    redis, make_settings, factory = lab
    redis.start()
    proxy, url = _through_proxy(make_settings())
    settings = make_settings(database_url=url, reaper_interval_seconds=0.5)
    with factory.begin() as s:  # a task row that only this worker's relay can send
        enqueue_task(s, TaskName.REAP, {}, 1)
    proxy.cut(3600)  # down until the worker is up and has failed a few ticks
    with worker_process(settings, "late", tmp_path / "w.log") as worker:
        wait_for(lambda: "ready" in worker.output(), timeout=60, what="the worker to start")
        wait_for(lambda: worker.output().count("database unavailable") >= 2, timeout=30,
                 what="maintenance ticks failing")  # fmt: skip
        proxy.down_until = 0.0  # the database answers again
        back_at = time.monotonic()

        def registered() -> Worker | None:
            with factory() as s:
                return s.scalar(select(Worker).where(Worker.name.startswith("late@")))

        wait_for(registered, timeout=30, what="the worker to register")
        log.warning("DB down at start: registered %.2fs after it answered",
                    time.monotonic() - back_at)  # fmt: skip
        wait_for(lambda: _task_rows(factory)[0].sent_at, timeout=30, what="the relay to send")
    proxy.close()


def test_reaper_leaves_a_lease_renewed_between_its_select_and_update(lab):
    """Point 8: the worker renews its lease just after the reaper read it as expired;
    the reaper's UPDATE re-checks the expiry and leaves the job with its worker."""
    _, make_settings, factory = lab
    settings = make_settings()
    seeded = seed_started_job(settings)
    lease = jobs.claim(factory, seeded.job_id, 1, "slow@host", 0.01)
    time.sleep(0.05)  # its lease has expired: the worker was slow to renew
    engine = factory.kw["bind"]
    renewed: list[bool] = []

    def renew_after_the_select(conn, cursor, statement, *_: object) -> None:
        if not renewed and statement.startswith("SELECT") and "lease_expires_at <" in statement:
            renewed.append(True)
            jobs.renew(factory, lease, 60)  # the worker's heartbeat lands now

    event.listen(engine, "after_cursor_execute", renew_after_the_select)
    try:
        result = reaper.reap_expired(factory, settings.rules, max_attempts=3)
    finally:
        event.remove(engine, "after_cursor_execute", renew_after_the_select)
    assert renewed and result.requeued == []
    with factory() as s:
        job = s.get(TrainingJob, seeded.job_id)
        assert (job.status, job.attempt, job.lease_owner) == (JobStatus.RUNNING, 1, "slow@host")


def test_a_worker_without_the_jobs_base_model_leaves_it_queued(lab, tmp_path):
    """Point 7: an SDXL-only worker is idle while an SD1.5 job is queued: the job waits
    on the sd15 queue for a worker that has that model, instead of being claimed and
    failed."""
    redis, make_settings, factory = lab
    redis.start()
    settings = make_settings(base_models={BaseFamily.SDXL: str(tmp_path / "sdxl")})
    seeded = seed_started_job(settings)
    with worker_process(settings, "xl", tmp_path / "w.log") as worker:
        wait_for(lambda: _task_rows(factory)[0].sent_at, timeout=60, what="the relay to send")
        wait_for(lambda: "ready" in worker.output(), timeout=60, what="the worker to start")
        time.sleep(3)  # an idle worker consuming that queue would have taken it by now
        with factory() as s:
            job = s.get(TrainingJob, seeded.job_id)
            queues = s.scalar(select(Worker.queues).where(Worker.name.startswith("xl@")))
    assert (job.status, job.fencing_token, job.error) == (JobStatus.QUEUED, 0, None)
    assert "gpu.sdxl" in queues and "gpu.sd15" not in queues
    assert _queued_task_ids(redis, "gpu.sd15") == [f"loralab.train:{seeded.job_id}:1"]


def test_a_worker_runs_a_job_whose_message_redis_lost(lab, tmp_path):
    """Point 2 end to end: the task was sent, Redis restarted empty, then a worker
    starts; its maintenance re-sends the task and it claims the job."""
    redis, make_settings, factory = lab
    settings = make_settings(resend_queued_after_seconds=2)
    seeded = seed_started_job(settings)
    redis.start()
    rt = build_runtime(settings)
    reap_and_dispatch(rt, client_app(settings))  # sent by the bot's relay, say
    rt.engine.dispose()
    redis.kill()
    redis.start()  # the message is gone
    lost_at = time.monotonic()
    with worker_process(settings, "w", tmp_path / "w.log"):

        def claimed() -> bool:
            with factory() as s:
                return s.get(TrainingJob, seeded.job_id).fencing_token >= 1

        wait_for(claimed, timeout=60, what="a worker to claim the job")
        log.warning("message lost: job claimed %.1fs later", time.monotonic() - lost_at)
    with factory() as s:
        keys = s.scalars(select(OutboxMessage.idempotency_key).order_by(OutboxMessage.id))
        assert f"loralab.train:{seeded.job_id}:1:resend-1" in list(keys)
