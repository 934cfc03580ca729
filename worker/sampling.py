"""`/test prompts`: render a tester's prompts with the job's newest LoRA file at several
weights, store the grid, and ask the bot to post it for voting."""

from __future__ import annotations

import logging
import shutil

from db import jobs
from db import repositories as repo
from db.models import Artifact, ArtifactKind, SampleSet, Ticket, TrainingJob
from lab.families import BaseFamily
from lab.tasks import OutboxKind
from lab.training import ConfigError, build_config
from lab.training.job import split_job_config
from worker.runtime import Runtime, retry_db

log = logging.getLogger(__name__)


def run_sample_request(rt: Runtime, job_id: int, sample_set_id: int) -> bool:
    """Render sample set `sample_set_id`; False when it was already rendered (a repeat
    delivery) or cannot be (the reason goes to the ticket's thread)."""
    with rt.factory() as session:
        sample = session.get(SampleSet, sample_set_id)
        job = session.get(TrainingJob, job_id)
        if sample is None or job is None or sample.grid_artifact_id is not None:
            return False
        ticket = session.get(Ticket, job.ticket_id)
        assert ticket is not None
        run = jobs.loras(session, job_id)  # a retried job's earlier epochs count too
        lora = run[max(run)] if run else None
        prompts = [_with_trigger(p, ticket.trigger_word) for p in sample.prompts or []]
        family, preset, stored = ticket.base_family, job.preset, dict(job.config or {})
    if lora is None or not prompts:
        _notice(rt, ticket.id, sample_set_id, "There is no LoRA file to sample from yet.")
        return False
    base = rt.settings.base_models.get(BaseFamily(family))
    work = rt.settings.work_dir / f"samples-{sample_set_id}"
    try:
        if base is None:
            raise ConfigError(f"This worker has no {family} base model configured.")
        from trainer.errors import TrainerError
        from trainer.inference import lora_weight_grid

        file = rt.storage.download(lora.storage_key, work / lora.storage_key.rsplit("/", 1)[1])
        overrides, _ = split_job_config(stored)
        values = {
            "pretrained_model_name_or_path": base,
            "train_data_dir": str(work),
            "output_dir": str(work),
        }
        config = build_config(values, preset=preset, overrides=overrides)
        grid = lora_weight_grid(
            config, file, prompts, work / "grid.png", steps=rt.settings.sample_steps
        )
        stored_grid = rt.storage.put_file(f"jobs/{job_id}/requested-{sample_set_id}.png", grid)
    except (ConfigError, TrainerError) as error:
        _notice(rt, ticket.id, sample_set_id, f"Samples could not be rendered: {error}")
        return False
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def record() -> None:
        with rt.factory.begin() as session:
            artifact = Artifact(
                job_id=job_id,
                kind=ArtifactKind.SAMPLE_GRID,
                epoch=None,
                storage_key=stored_grid.key,
                sha256=stored_grid.sha256,
                size_bytes=stored_grid.size,
            )
            session.add(artifact)
            session.flush()
            row = session.get(SampleSet, sample_set_id)
            assert row is not None
            row.grid_artifact_id, row.epoch = artifact.id, lora.epoch
            repo.add_outbox(
                session,
                repo.OutboxItem(
                    OutboxKind.SAMPLE_GRID.value,
                    {"sample_set_id": sample_set_id},
                    f"sample-grid:{sample_set_id}",
                ),
            )

    retry_db(record, what="record requested samples")
    return True


def _with_trigger(prompt: str, trigger: str) -> str:
    return prompt if trigger in prompt.split(", ")[0].split() else f"{trigger}, {prompt}"


def _notice(rt: Runtime, ticket_id: int, sample_set_id: int, text: str) -> None:
    log.warning("sample set %s: %s", sample_set_id, text)
    with rt.factory.begin() as session:
        repo.add_outbox(
            session,
            repo.OutboxItem(
                OutboxKind.NOTICE.value,
                {"ticket_id": ticket_id, "text": text},
                f"sample-failed:{sample_set_id}",
            ),
        )
