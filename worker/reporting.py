"""The trainer's callbacks and commands, implemented against the database and storage.

A heartbeat thread renews the job's lease, writes the newest progress at a bounded
rate (one outbox event per write) and reads the stop flag. The callbacks upload each
LoRA file, sample grid and training state to storage and record them under the lease.
If the lease is lost (this worker was presumed dead and the job re-queued), the
trainer is told to stop and nothing more is written.
"""

from __future__ import annotations

import logging
import tarfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from PIL import Image
from sqlalchemy.exc import SQLAlchemyError

from db import jobs
from db.models import ArtifactKind
from lab.apps import compat_filename
from lab.render import sample_grid
from worker import shutdown
from worker.runtime import Runtime, retry_db

log = logging.getLogger(__name__)


class JobReporter:
    """Callbacks + Commands for one leased job."""

    def __init__(self, rt: Runtime, lease: jobs.Lease, *, prompts: list[str], gpu: str) -> None:
        self.rt = rt
        self.lease = lease
        self.prompts = prompts
        self.gpu = gpu
        self.losses: list[float] = []
        self.epoch_steps: list[int] = []
        self.lost = False
        self.stop_requested = False
        self._progress: dict[str, Any] | None = None
        self._written_seq = 0
        self._seq = 0
        self._last_state_at = time.monotonic()
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._heartbeat, name="lease-heartbeat", daemon=True)

    # -- lifetime -----------------------------------------------------------------

    def __enter__(self) -> JobReporter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=30)

    def _heartbeat(self) -> None:
        s = self.rt.settings
        interval = max(0.2, min(s.lease_seconds / 3, s.progress_interval_seconds or 1.0))
        while not self._done.wait(interval):
            self.flush()

    def flush(self) -> None:
        """Renew the lease now, with the newest progress if it changed (the heartbeat
        thread and the runner's final flush take turns)."""
        with self._flush_lock:
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            progress, seq = self._progress, self._seq
        fresh = progress if seq != self._written_seq else None
        try:
            status = jobs.renew(
                self.rt.factory,
                self.lease,
                self.rt.settings.lease_seconds,
                progress=fresh,
                progress_seq=seq if fresh is not None else None,
            )
        except jobs.LeaseLost:
            log.warning("job %s: lease lost; stopping without writing more", self.lease.job_id)
            self.lost = True
            return
        except SQLAlchemyError as exc:  # the database is away: keep training, renew next tick
            log.warning("job %s: heartbeat failed (%s); will retry", self.lease.job_id, exc)
            return
        self._written_seq = seq if fresh is not None else self._written_seq
        self.stop_requested = status.stop_requested

    # -- Commands ---------------------------------------------------------------------

    def should_stop(self) -> bool:
        return self.lost or self.stop_requested or shutdown.requested()

    def should_save_state(self) -> bool:
        """A periodic resumable state, besides the per-epoch ones."""
        due = time.monotonic() - self._last_state_at >= self.rt.settings.state_every_minutes * 60
        return due and not self.lost

    # -- Callbacks --------------------------------------------------------------------

    def on_progress(self, progress: Any) -> None:
        data = asdict(progress)
        self.losses.append(float(data["loss"]))
        data.update(worker=self.rt.name, gpu=self.gpu)
        with self._lock:
            self._progress, self._seq = data, self._seq + 1

    def on_status(self, status: str, detail: str = "") -> None:
        log.info("job %s: %s %s", self.lease.job_id, status, detail)
        if status == "training" and self._progress is None:
            with self._lock:
                self._progress = {
                    "status": status,
                    "detail": detail,
                    "worker": self.rt.name,
                    "gpu": self.gpu,
                }
                self._seq += 1

    def on_checkpoint(self, checkpoint: Any) -> None:
        self.epoch_steps.append(checkpoint.step)
        key = f"jobs/{self.lease.job_id}/{checkpoint.path.name}"
        compat = getattr(checkpoint, "compat_path", None)
        if compat is not None and not self.lost:
            # Stored before the LoRA's artifact row, so a release never finds one without
            # the other; the release post derives this key from the LoRA's.
            self.rt.storage.put_file(compat_filename(key), compat)
        self._upload(ArtifactKind.LORA, key, checkpoint.path, checkpoint.epoch)

    def on_state(self, path: Path, epoch: int, step: int) -> None:
        """A resumable state directory was written: pack it and store it as the newest."""
        self._last_state_at = time.monotonic()
        archive = path.with_suffix(".tar")
        with tarfile.open(archive, "w") as tar:
            tar.add(path, arcname="state")
        key = f"jobs/{self.lease.job_id}/state-e{epoch:04d}-s{step:07d}.tar"
        self._upload(ArtifactKind.STATE, key, archive, epoch)
        archive.unlink(missing_ok=True)
        if not self.lost:
            self._prune_states(keep=key)

    def _prune_states(self, keep: str) -> None:
        """Delete the job's older states from storage once the newest is recorded (a
        long run saves one every `state_every_minutes`; only the newest is resumed)."""
        try:
            old = retry_db(
                lambda: jobs.prune_states(self.rt.factory, self.lease, keep), what="prune states"
            )
        except jobs.LeaseLost:
            self.lost = True
            return
        try:
            # Also the files no row names any more: a state replaced for the same
            # epoch, or one a killed attempt uploaded but never recorded.
            stored = self.rt.storage.list(f"jobs/{self.lease.job_id}/state-")
            for key in sorted((set(old) | set(stored)) - {keep}):
                self.rt.storage.delete(key)
        except Exception as exc:  # an orphaned file costs space, never the run
            log.warning("job %s: could not prune old states: %s", self.lease.job_id, exc)

    def on_sample(self, paths: list[Path], epoch: int, step: int) -> None:
        if self.lost:
            return
        images = [Image.open(p) for p in paths]
        labels = self.prompts[: len(images)] + [p.stem for p in paths[len(self.prompts) :]]
        grid = sample_grid([[im] for im in images], labels, [f"epoch {epoch}"])
        out = paths[0].parent / f"grid-e{epoch:04d}.png"
        grid.save(out)
        stored = self.rt.storage.put_file(f"jobs/{self.lease.job_id}/{out.name}", out)
        retry_db(
            lambda: jobs.record_samples(
                self.rt.factory, self.lease, stored, epoch=epoch, prompts=labels
            ),
            what="record samples",
        )

    def _upload(self, kind: ArtifactKind, key: str, path: Path, epoch: int | None) -> None:
        if self.lost:
            return
        stored = self.rt.storage.put_file(key, path)
        try:
            retry_db(
                lambda: jobs.record_artifact(
                    self.rt.factory, self.lease, kind, stored, epoch=epoch
                ),
                what=f"record {kind.value}",
            )
        except jobs.LeaseLost:
            self.lost = True
