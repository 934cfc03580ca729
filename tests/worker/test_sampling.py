"""`/test prompts` on the worker: the tester's prompts rendered with the saved LoRA file
at several weights, stored, and offered for voting."""

from __future__ import annotations

import numpy as np
from PIL import Image
from sqlalchemy import select

from db.models import Artifact, OutboxMessage, SampleSet
from tests.worker.conftest import seed_started_job
from worker.runner import run_training_job
from worker.runtime import build_runtime
from worker.sampling import run_sample_request


def test_requested_prompts_are_rendered_across_lora_weights(sqlite_settings):
    seeded = seed_started_job(sqlite_settings, max_train_epochs=2, learning_rate=0.05)
    rt = build_runtime(sqlite_settings)
    run_training_job(rt, seeded.job_id, 1)
    with rt.factory.begin() as session:
        sample = SampleSet(
            ticket_id=seeded.ticket_id,
            job_id=seeded.job_id,
            prompts=["dog on grass", "sks, dog, portrait"],
        )
        session.add(sample)
        session.flush()
        sample_id = sample.id

    assert run_sample_request(rt, seeded.job_id, sample_id) is True
    assert run_sample_request(rt, seeded.job_id, sample_id) is False  # a repeat does nothing

    with rt.factory() as session:
        sample = session.get(SampleSet, sample_id)
        assert sample.epoch == 2  # the newest LoRA file
        grid_artifact = session.get(Artifact, sample.grid_artifact_id)
        posts = session.scalars(
            select(OutboxMessage.idempotency_key).where(OutboxMessage.kind == "discord.sample_grid")
        ).all()
    assert f"sample-grid:{sample_id}" in posts
    grid = np.asarray(
        Image.open(rt.storage.download(grid_artifact.storage_key, sqlite_settings.home / "g.png"))
    )
    # rows = 2 prompts, columns = 4 weights, 256 px cells after a 220 px label column
    assert grid.shape[:2] == (28 + 2 * 256, 220 + 4 * 256)
    cell = lambda r, c: grid[28 + r * 256 : 28 + (r + 1) * 256, 220 + c * 256 : 220 + (c + 1) * 256]  # noqa: E731
    assert not np.array_equal(cell(0, 0), cell(0, 3))  # weight 1 differs from weight 0


def test_no_lora_yet_tells_the_thread(sqlite_settings):
    seeded = seed_started_job(sqlite_settings)
    rt = build_runtime(sqlite_settings)
    with rt.factory.begin() as session:
        sample = SampleSet(ticket_id=seeded.ticket_id, job_id=seeded.job_id, prompts=["x"])
        session.add(sample)
        session.flush()
        sample_id = sample.id
    assert run_sample_request(rt, seeded.job_id, sample_id) is False
    with rt.factory() as session:
        notice = session.scalar(
            select(OutboxMessage.payload).where(
                OutboxMessage.idempotency_key == f"sample-failed:{sample_id}"
            )
        )
    assert notice["text"] == "There is no LoRA file to sample from yet."
