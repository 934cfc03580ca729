"""Running one training job on this worker: claim the lease, materialise the dataset
from storage, resume from the newest state, train, store artifacts, finish.

The trainer (and so torch) is imported inside `run_training_job`, in the pool child
that runs the task, never in the worker's main process.
"""

from __future__ import annotations

import logging
import re
import shutil
import tarfile
import time
from pathlib import Path
from typing import Any

from db import jobs, reaper
from db.models import ArtifactKind, JobStatus
from lab.dataset.export import export_kohya
from lab.families import BaseFamily
from lab.prompts import prompt_file_text
from lab.render import loss_curve
from lab.training import build_config
from lab.training.job import split_job_config
from worker import preload, shutdown
from worker.failures import JobFailure, classify
from worker.registry import gpu_description, set_current_job
from worker.reporting import JobReporter
from worker.runtime import Runtime, retry_db

log = logging.getLogger(__name__)

SHUTDOWN = "The worker training this job was shut down (a restart or an upgrade)."
DEFAULT_PROMPTS = ("{trigger}, {cls}", "{trigger}, {cls}, portrait, looking at viewer")


def run_training_job(rt: Runtime, job_id: int, attempt: int) -> JobStatus | None:
    """Run attempt `attempt` of job `job_id`; ``None`` when there was nothing to claim
    (a duplicate or late delivery) or the lease was lost midway. A retryable failure
    hands the job back to the queue at once (QUEUED, its next attempt)."""
    _wait_for_resumed_job(rt, job_id)
    lease = retry_db(
        lambda: jobs.claim(rt.factory, job_id, attempt, rt.name, rt.settings.lease_seconds),
        what="claim job",
    )
    if lease is None:
        return None

    set_current_job(rt, job_id)
    _remove_earlier_attempts(rt, job_id, attempt)
    work = rt.settings.work_dir / f"job-{job_id}-a{attempt}"
    try:
        try:
            with shutdown.while_training():
                outcome = _run(rt, lease, work)
        except jobs.LeaseLost:
            return None
        except Exception as exc:
            failure = classify(exc)
            if not failure.permanent:
                return _hand_back(rt, lease, failure.reason)
            log.warning("job %s failed: %s", job_id, failure.reason)
            outcome = JobStatus.FAILED, failure.reason
        if outcome is None:
            return None
        status, error = outcome
        if status is JobStatus.QUEUED:  # handed back (a shutdown): nothing to finish
            return status
        ended = retry_db(
            lambda: jobs.finish(rt.factory, lease, rt.settings.rules, status=status, error=error),
            what="finish job",
        )
        return status if ended else None
    finally:
        set_current_job(rt, None)
        shutil.rmtree(work, ignore_errors=True)
        log.debug("job %s finished on %s (%s)", job_id, rt.name, gpu_description())


def _run(rt: Runtime, lease: jobs.Lease, work: Path) -> tuple[JobStatus, str | None] | None:
    context = retry_db(lambda: _context(rt, lease.job_id), what="read job")
    prompts = [
        p.format(trigger=context.trigger_word, cls=context.class_token) for p in DEFAULT_PROMPTS
    ]
    with jobs_reporter(rt, lease, prompts) as reporter:
        status, error = _train(rt, context, work, reporter, prompts)
        reporter.flush()  # the last progress, which the heartbeat may not have written
        if reporter.lost:
            return None
        if status is JobStatus.CANCELLED and shutdown.requested() and not reporter.stop_requested:
            # Stopped for a shutdown, not on request: the state is saved; queue it again.
            retry_db(lambda: reaper.release(rt.factory, lease, SHUTDOWN), what="release job")
            return JobStatus.QUEUED, None
        if status is JobStatus.SUCCEEDED:
            _store_loss_curve(rt, lease, reporter)
    return status, error


def _hand_back(rt: Runtime, lease: jobs.Lease, reason: str) -> JobStatus | None:
    """Re-queue the job now with `reason` (or fail it, at its last attempt)."""
    log.warning("job %s attempt %s: %s; handing it back", lease.job_id, lease.attempt, reason)
    attempts = rt.settings.max_attempts
    return retry_db(
        lambda: reaper.requeue(
            rt.factory,
            lease,
            rt.settings.rules,
            max_attempts=attempts,
            why=f"Attempt {lease.attempt} failed: {reason}.",
            give_up=f"The job failed {lease.attempt} times; the last error: {reason}",
        ),
        what="hand the job back",
    )


def _wait_for_resumed_job(rt: Runtime, job_id: int) -> None:
    """A `/train retry` right after `/train stop` reaches an idle worker while the
    stopped job may still be saving its last state: wait (up to a lease) for it to
    end, so the retried job resumes from that state."""
    deadline = time.monotonic() + rt.settings.lease_seconds
    while retry_db(lambda: jobs.resumed_job_running(rt.factory, job_id), what="read job"):
        if time.monotonic() >= deadline:
            log.warning("job %s: the job it resumes is still running; starting anyway", job_id)
            return
        time.sleep(0.5)


def _remove_earlier_attempts(rt: Runtime, job_id: int, attempt: int) -> None:
    """A killed attempt on this machine left its work folder (dataset copy, outputs);
    its lease is fenced off now that we hold the job, so nothing will use it again."""
    for folder in rt.settings.work_dir.glob(f"job-{job_id}-a*"):
        earlier = folder.name.rpartition("-a")[2]
        if earlier.isdigit() and int(earlier) < attempt:
            log.info("job %s: removing attempt %s's work folder", job_id, earlier)
            shutil.rmtree(folder, ignore_errors=True)


def jobs_reporter(rt: Runtime, lease: jobs.Lease, prompts: list[str]) -> Any:
    return JobReporter(rt, lease, prompts=prompts, gpu=gpu_description())


def _context(rt: Runtime, job_id: int) -> jobs.JobContext:
    with rt.factory() as session:
        return jobs.job_context(session, job_id)


def _train(
    rt: Runtime, context: jobs.JobContext, work: Path, reporter: Any, prompts: list[str]
) -> tuple[JobStatus, str | None]:
    """Train; the trainer's and the dataset's errors are classified by the caller."""
    preload.wait()  # a preload on another thread holds the import locks until it is done
    from trainer.launch import launch

    config = _build_config(rt, context, work, prompts)
    # One process here, or one per GPU that relay rank 0's reports to the reporter.
    result = launch(config, rt.settings.gpus_per_job, reporter, reporter)
    if result.stopped:
        return JobStatus.CANCELLED, "Stopped on request; the training state was saved."
    return JobStatus.SUCCEEDED, None


def _build_config(rt: Runtime, context: jobs.JobContext, work: Path, prompts: list[str]) -> Any:

    base = rt.settings.base_models.get(BaseFamily(context.base_family))
    if base is None:
        raise JobFailure(
            f"This worker has no {context.base_family} base model configured "
            f"(LORALAB_BASE_MODELS__{context.base_family.upper()})."
        )
    flat = _materialise(rt, context, work / "flat")
    train_dir = work / "train"
    overrides, lab_values = split_job_config(context.overrides)
    repeats = int(lab_values.get("num_repeats", 0)) or None
    export_kohya(
        flat,
        train_dir,
        context.trigger_word,
        context.class_token,
        repeats=repeats,
        target_steps=None if repeats else 1500,
        epochs=int(overrides.get("max_train_epochs", 10)),
    )
    prompt_file = work / "prompts.txt"
    values: dict[str, Any] = {
        "pretrained_model_name_or_path": base,
        "train_data_dir": str(train_dir),
        "output_dir": str(work / "out"),
        "output_name": _safe_name(f"{context.name}-v{context.version}"),
        "sample_prompts": str(prompt_file),
        "sample_every_n_epochs": 1,
        "save_state": True,
    }
    state = _download_state(rt, context, work)
    if state is not None:
        values["resume"] = str(state)
    config = build_config(values, preset=context.preset, overrides=overrides)
    # Sizes and steps from the job and the lab, never from member text (see lab.prompts).
    text = prompt_file_text(prompts, resolution=config.resolution, steps=rt.settings.sample_steps)
    prompt_file.write_text(text, encoding="utf-8")
    return config


def _materialise(rt: Runtime, context: jobs.JobContext, flat: Path) -> Path:
    """The ticket's images and current captions, from storage, in one flat folder."""
    if not context.images:
        raise JobFailure("This ticket has no images to train on.")
    flat.mkdir(parents=True, exist_ok=True)
    for image in context.images:
        suffix = Path(image.storage_key).suffix or ".png"
        rt.storage.download(image.storage_key, flat / f"{image.image_id:06d}{suffix}")
        (flat / f"{image.image_id:06d}.txt").write_text(image.caption, encoding="utf-8")
    return flat


def _download_state(rt: Runtime, context: jobs.JobContext, work: Path) -> Path | None:
    if not context.state_key:
        return None
    archive = rt.storage.download(context.state_key, work / "resume.tar")
    target = work / "resume"
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")  # our own archive; "data" refuses odd members
    log.info("job %s resumes from %s", context.job_id, context.state_key)
    return target / "state"


def _store_loss_curve(rt: Runtime, lease: jobs.Lease, reporter: Any) -> None:
    if not reporter.losses:
        return
    path = rt.settings.work_dir / f"loss-{lease.job_id}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    loss_curve(reporter.losses, epoch_steps=reporter.epoch_steps).save(path)
    stored = rt.storage.put_file(f"jobs/{lease.job_id}/loss.png", path)
    path.unlink(missing_ok=True)
    retry_db(
        lambda: jobs.record_artifact(
            rt.factory, lease, ArtifactKind.LOSS_CURVE, stored, epoch=None
        ),
        what="record loss curve",
    )


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "lora"
