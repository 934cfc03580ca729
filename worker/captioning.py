"""Auto-captioning one request on this worker: read what to caption, fetch the images
from storage, run the configured model in batches, apply the lab's rules, record the
captions as revisions by "auto" and tell the ticket's thread.

The model (onnxruntime, or torch + transformers) is loaded inside the task, in the
pool child, and kept for the next request of the same model.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from db import autocaption
from lab.autocaption import CaptionerConfig, CaptionerKind, rules_for
from lab.storage import StorageError
from lab.tasks import CaptionPayload
from worker.runtime import Runtime, retry_db

log = logging.getLogger(__name__)

# (name, config) → the loaded model: one per pool process, the last one used.
_loaded: tuple[tuple[str, CaptionerConfig], Any] | None = None


def _captioner(name: str, config: CaptionerConfig) -> Any:
    global _loaded
    if _loaded is None or _loaded[0] != (name, config):
        from trainer.captioners import load_captioner

        _loaded = None  # free the previous model before loading the next
        _loaded = ((name, config), load_captioner(config))
    return _loaded[1]


def run_caption_request(rt: Runtime, payload: CaptionPayload) -> int | None:
    """Caption the request's images; how many captions were written, or ``None`` for a
    repeated delivery of a request already recorded. Failures are told to the thread."""
    from trainer.captioners import CaptionerError, caption_files

    ticket_id, request_id = payload.ticket_id, payload.request_id
    tag = f"ticket {ticket_id} request {request_id}"
    job = retry_db(lambda: autocaption.caption_job(rt.factory, payload), what="read caption job")
    if job is None:
        log.info("%s: already recorded, skipped", tag)
        return None
    settings = rt.settings.captioning
    try:
        kind = CaptionerKind(payload.kind) if payload.kind else None
        name, config = settings.resolve(kind, payload.model)
    except (KeyError, ValueError) as exc:
        return _fail(rt, payload, exc.args[0] if exc.args else str(exc))
    if not job.images:
        return _record(rt, payload, {}, name)
    work = rt.settings.work_dir / f"caption-{ticket_id}-{request_id}"
    try:
        files = _materialise(rt, job, work)
        rules = rules_for(settings, base=job.base_model, trigger=job.trigger_word,
                          class_token=job.class_token)  # fmt: skip
        captioner = _captioner(name, config)
        started, done = time.monotonic(), 0

        def progress(count: int) -> None:
            nonlocal done
            done += count
            log.info("%s: %d/%d images captioned by %s", tag, done, len(files), name)

        texts = caption_files(captioner, files, rules, batch_size=config.batch_size,
                              progress=progress)  # fmt: skip
        elapsed = time.monotonic() - started
        log.info("%s: %d images in %.1fs (%.2f images/s) on %s", tag, len(files), elapsed,
                 len(files) / max(elapsed, 1e-9), captioner.device)  # fmt: skip
    except (CaptionerError, StorageError, OSError) as exc:
        log.warning("%s: auto-captioning failed: %s", tag, exc)
        return _fail(rt, payload, str(exc))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    captions = {image.image_id: text for image, text in zip(job.images, texts, strict=True)}
    return _record(rt, payload, captions, name)


def _materialise(rt: Runtime, job: autocaption.CaptionJob, work: Path) -> list[Path]:
    work.mkdir(parents=True, exist_ok=True)
    files = []
    for image in job.images:
        suffix = Path(image.storage_key).suffix or ".png"
        files.append(rt.storage.download(image.storage_key, work / f"{image.image_id}{suffix}"))
    return files


def _record(
    rt: Runtime, payload: CaptionPayload, captions: dict[int, str], name: str
) -> int | None:
    return retry_db(
        lambda: autocaption.record_auto_captions(
            rt.factory, payload.ticket_id, payload.request_id, captions,
            overwrite=payload.overwrite, model_name=name,
        ),
        what="record auto captions",
    )  # fmt: skip


def _fail(rt: Runtime, payload: CaptionPayload, message: str) -> int:
    retry_db(
        lambda: autocaption.record_autocaption_failure(
            rt.factory, payload.ticket_id, payload.request_id, message
        ),
        what="record caption failure",
    )
    return 0
