"""Housekeeping (issue 13.8) in-process on SQLite, no training: a killed attempt's work
folder, old resumable states, dead workers in the registry, and the database timeouts."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import event, select

from db import jobs, reaper
from db.base import utcnow
from db.models import Artifact, ArtifactKind, JobStatus, TrainingJob, Worker
from db.session import POSTGRES_TIMEOUTS, make_engine
from tests.worker.conftest import seed_started_job
from worker.registry import forget_gone, register, set_current_job
from worker.reporting import JobReporter
from worker.runner import run_training_job
from worker.runtime import build_runtime


def test_the_next_attempt_removes_a_killed_attempts_work_folder(sqlite_settings):
    settings = sqlite_settings.model_copy(update={"base_models": {}})  # fails fast after claim
    seeded = seed_started_job(settings)
    rt = build_runtime(settings)
    jobs.claim(rt.factory, seeded.job_id, 1, "killed@host", 60)
    left = settings.work_dir / f"job-{seeded.job_id}-a1" / "flat"
    left.mkdir(parents=True)
    (left / "000001.png").write_bytes(b"a copy of the dataset")
    later = utcnow() + timedelta(minutes=5)
    assert reaper.reap_expired(rt.factory, settings.rules, max_attempts=3, now=later).requeued
    other = settings.work_dir / f"job-{seeded.job_id + 1}-a1"  # another job's: kept
    other.mkdir()
    assert run_training_job(rt, seeded.job_id, 2) is JobStatus.FAILED
    assert not left.parent.exists() and other.exists()


def test_only_the_newest_state_stays_in_storage(sqlite_settings, tmp_path):
    seeded = seed_started_job(sqlite_settings)
    rt = build_runtime(sqlite_settings)
    lease = jobs.claim(rt.factory, seeded.job_id, 1, rt.name, 60)
    reporter = JobReporter(rt, lease, prompts=[], gpu="CPU")
    for epoch, step in [(1, 12), (2, 20), (2, 22), (2, 24)]:  # per epoch, then periodic
        state = tmp_path / f"state-{step}"
        state.mkdir()
        (state / "optimizer.bin").write_bytes(b"x" * step)
        reporter.on_state(state, epoch, step)
    newest = f"jobs/{seeded.job_id}/state-e0002-s0000024.tar"
    assert rt.storage.list(f"jobs/{seeded.job_id}/state-") == [newest]
    with rt.factory() as s:
        assert s.get(TrainingJob, seeded.job_id).state_key == newest
        states = s.scalars(select(Artifact.storage_key).where(Artifact.kind == ArtifactKind.STATE))
        assert list(states) == [newest]


def test_a_dead_worker_is_removed_from_the_registry(sqlite_settings):
    seeded = seed_started_job(sqlite_settings)
    alive = build_runtime(sqlite_settings.model_copy(update={"worker_name": "alive@host"}))
    dead = build_runtime(sqlite_settings.model_copy(update={"worker_name": "dead@host"}))
    for rt in (alive, dead):
        register(rt, ["gpu"])
    set_current_job(dead, seeded.job_id)
    with dead.factory.begin() as s:
        s.get(Worker, "dead@host").heartbeat_at = utcnow() - timedelta(seconds=31)
    assert forget_gone(alive, silent_for=30) == ["dead@host"]
    with alive.factory() as s:
        assert list(s.scalars(select(Worker.name))) == ["alive@host"]


def test_postgres_connections_have_a_connect_timeout_and_keepalive(postgres_url):
    engine = make_engine(postgres_url)
    seen: list[dict] = []
    event.listen(engine, "do_connect", lambda _d, _r, _a, cparams: seen.append(dict(cparams)))
    with engine.connect() as conn:  # libpq accepts every one of them
        conn.exec_driver_sql("SELECT 1")
    engine.dispose()
    assert POSTGRES_TIMEOUTS.items() <= seen[0].items()
    assert seen[0]["connect_timeout"] == 10 and seen[0]["keepalives_idle"] == 30
