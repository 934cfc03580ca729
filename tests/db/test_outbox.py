"""The outbox delivery core on real databases: once, retried with backoff, dead-lettered."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from db.base import utcnow
from db.models import OutboxMessage
from db.outbox import RelayPolicy, RetryableDeliveryError, deliver_pending, enqueue_task
from db.repositories import OutboxItem, add_outbox
from lab.tasks import TaskName


def _rows(session, prefix):
    return session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.kind.startswith(prefix))
        .order_by(OutboxMessage.id)
    ).all()


def test_rows_are_delivered_once_in_order(factory, session):
    for i in range(3):
        add_outbox(session, OutboxItem(f"test.once.{i}", {"i": i}, f"once-{i}-{id(session)}"))
    session.commit()
    seen = []
    report = deliver_pending(factory, "test.once.", lambda row: seen.append(row.payload["i"]))
    again = deliver_pending(factory, "test.once.", lambda row: seen.append(row.payload["i"]))
    assert seen == [0, 1, 2]
    assert (report.sent, again.sent) == (3, 0)
    assert all(row.sent_at is not None for row in _rows(session, "test.once."))


def test_retryable_failure_backs_off_then_delivers(factory, session):
    add_outbox(session, OutboxItem("test.retry", {}, f"retry-{id(session)}"))
    session.commit()
    calls = []

    def flaky(row):
        calls.append(row.attempts)
        if len(calls) == 1:
            raise RetryableDeliveryError("HTTP 503", retry_after=30)

    first = deliver_pending(factory, "test.retry", flaky)
    immediately = deliver_pending(factory, "test.retry", flaky)
    assert (first.retried, immediately.sent, len(calls)) == (1, 0, 1)  # waits its backoff
    session.expire_all()
    (row,) = _rows(session, "test.retry")
    assert row.last_error == "HTTP 503"
    assert row.available_at >= utcnow() + timedelta(seconds=25)  # honours retry_after

    row.available_at = utcnow() - timedelta(seconds=1)
    session.commit()
    later = deliver_pending(factory, "test.retry", flaky)
    assert later.sent == 1 and calls == [0, 1]


def test_dead_letter_after_max_attempts_and_on_permanent_errors(factory, session):
    add_outbox(session, OutboxItem("test.dead.retry", {}, f"dead-r-{id(session)}"))
    add_outbox(session, OutboxItem("test.dead.perm", {}, f"dead-p-{id(session)}"))
    session.commit()
    policy = RelayPolicy(max_attempts=3, base_delay=0)

    def always_503(row):
        raise RetryableDeliveryError("HTTP 503")

    reports = [
        deliver_pending(factory, "test.dead.retry", always_503, policy=policy) for _ in range(5)
    ]
    assert [r.retried for r in reports] == [1, 1, 0, 0, 0]
    assert [r.dead for r in reports] == [0, 0, 1, 0, 0]

    def broken(row):
        raise ValueError("payload refers to a deleted ticket")

    perm = deliver_pending(factory, "test.dead.perm", broken, policy=policy)
    assert perm.dead == 1
    assert deliver_pending(factory, "test.dead.", broken, policy=policy).dead == 0
    session.expire_all()
    dead = {row.kind: row for row in _rows(session, "test.dead.")}
    assert dead["test.dead.perm"].last_error.startswith("ValueError(")
    assert all(row.sent_at is None for row in dead.values())  # kept, not lost


def test_enqueued_task_carries_name_queue_and_idempotent_task_id(factory, session):
    row = enqueue_task(session, TaskName.TRAIN, {"job_id": 12, "attempt": 2}, 12, 2)
    session.commit()
    assert row.kind == "task"
    assert row.idempotency_key == "loralab.train:12:2"
    assert row.payload == {
        "name": "loralab.train",
        "payload": {"job_id": 12, "attempt": 2},
        "task_id": "loralab.train:12:2",
        "queue": "gpu",
    }


def test_a_postponed_row_holds_back_its_tickets_later_rows_only(factory, session):
    """Rows of one ticket are delivered in order; other tickets go ahead."""
    from db.outbox import dead_letters, redrive
    from tests.db.conftest import new_snowflake

    a, b = new_snowflake(), new_snowflake()
    tag = id(session)
    for key, ticket in (("a1", a), ("a2", a), ("b1", b), ("a3", a)):
        add_outbox(
            session, OutboxItem("test.order", {"ticket_id": ticket, "k": key}, f"{key}-{tag}")
        )
    session.commit()
    seen: list[str] = []

    def rate_limited_once(row):
        if row.payload["k"] == "a1" and "a1" not in [s.split("!")[0] for s in seen]:
            seen.append("a1!")
            raise RetryableDeliveryError("429", retry_after=40)
        seen.append(row.payload["k"])

    first = deliver_pending(factory, "test.order", rate_limited_once)
    assert (first.sent, first.retried) == (1, 1) and seen == ["a1!", "b1"]
    assert deliver_pending(factory, "test.order", rate_limited_once).sent == 0  # a1 not due
    (a1,) = [r for r in _rows(session, "test.order") if r.payload["k"] == "a1"]
    session.expire_all()
    a1 = session.get(OutboxMessage, a1.id)
    a1.available_at = utcnow() - timedelta(seconds=1)
    session.commit()
    deliver_pending(factory, "test.order", rate_limited_once)
    assert seen == ["a1!", "b1", "a1", "a2", "a3"]

    # A dead letter holds nothing up, and keeps its reason until it is re-driven.
    add_outbox(session, OutboxItem("test.order", {"ticket_id": b, "k": "b2"}, f"b2-{tag}"))
    add_outbox(session, OutboxItem("test.order", {"ticket_id": b, "k": "b3"}, f"b3-{tag}"))
    session.commit()

    def refuse_b2(row):
        if row.payload["k"] == "b2":
            raise ValueError("403 Missing Permissions")
        seen.append(row.payload["k"])

    assert deliver_pending(factory, "test.order", refuse_b2).dead == 1
    assert seen[-1] == "b3"
    (letter,) = [d for d in dead_letters(factory) if d.ticket_id == b]
    assert letter.kind == "test.order" and "403 Missing Permissions" in letter.reason
    assert redrive(factory, [letter.id]) == [letter.id]
    assert deliver_pending(factory, "test.order", lambda row: seen.append("again")).sent == 1
    assert redrive(factory, [letter.id]) == []  # delivered now: not a dead letter
