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
from sqlalchemy import select

from db import migrate
from db.models import OutboxMessage
from db.outbox import deliver_pending
from db.session import make_engine, make_session_factory
from lab.settings import WorkerSettings
from lab.tasks import OutboxKind
from tests.conftest import fresh_postgres_database
from tests.worker.conftest import seed_started_job, worker_settings
from tests.worker.procs import RedisServer, wait_for
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

        def make_settings(**extra: object) -> WorkerSettings:
            values: dict[str, object] = {"broker_url": redis.url, "lease_seconds": 10}
            values.update(extra)
            return worker_settings(tmp_path / "home", url, tmp_path / "no-model", **values)

        engine = make_engine(url)
        yield redis, make_settings, make_session_factory(engine)
        engine.dispose()
        redis.kill()


def _task_rows(factory) -> list[OutboxMessage]:
    with factory() as s:
        query = select(OutboxMessage).where(OutboxMessage.kind == OutboxKind.TASK.value)
        return list(s.scalars(query.order_by(OutboxMessage.id)))


def _queued_task_ids(redis: RedisServer, queue: str = "gpu") -> list[str]:
    import json

    client = redis_lib.Redis.from_url(redis.url)
    return [json.loads(raw)["headers"]["id"] for raw in client.lrange(queue, 0, -1)]


def test_broker_down_is_retried_not_dead_lettered(lab):
    """Point 1: /train start commits while Redis is down; the relay keeps the row and
    sends it once Redis is back."""
    redis, make_settings, factory = lab
    settings = make_settings()
    seeded = seed_started_job(settings)
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
    (row,) = _task_rows(factory)
    assert row.sent_at is None and row.attempts < 8 and "broker unavailable" in row.last_error
    redis.start()
    back_at = time.monotonic()
    with factory.begin() as s:
        s.execute(OutboxMessage.__table__.update().values(available_at=OutboxMessage.created_at))
    assert deliver_pending(factory, OutboxKind.TASK.value, sender.deliver).sent == 1
    log.warning("broker back: task sent %.2fs later", time.monotonic() - back_at)
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
