"""The training loop. :func:`train` is the entry point the CLI and the worker call.

It reads like a table of contents: :meth:`Trainer.run` walks epochs and batches and
calls :meth:`~Trainer.step`, :meth:`~Trainer.maybe_save` and
:meth:`~Trainer.maybe_sample`; the set-up lives in :mod:`trainer.setup`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from pathlib import Path

import torch

from lab.training.config import TrainConfig
from trainer.callbacks import Callbacks, Checkpoint, Commands, NeverStop, NullCallbacks, Progress
from trainer.checkpoints import SaveSchedule
from trainer.compat import save_network
from trainer.data import ImageRecord
from trainer.distributed import MainProcessOnly, agree, average_gradients, draw_rank_batch
from trainer.kohya_terms import LOSS_OPTIONS, apply_max_norm, kohya_loss
from trainer.loss import debiased_weights, min_snr_weights, target_for
from trainer.metadata import with_kohya_keys
from trainer.result import TrainResult
from trainer.sampling import generate_samples, weight_grid, write_grid
from trainer.setup import Session, prepare_session
from trainer.speed import spill_warning
from trainer.state import Position, check_shape, load_state, restore_rng, save_state
from trainer.text import sdxl_time_ids

logger = logging.getLogger(__name__)

__all__ = ["TrainResult", "Trainer", "train"]

# Above this share of the GPU's memory after one step, spilling is likely (see check_memory).
SPILL_WARNING_FRACTION = 0.95
CUDA_REPORT_EVERY = 10


def train(
    config: TrainConfig,
    callbacks: Callbacks | None = None,
    commands: Commands | None = None,
) -> TrainResult:
    """Train one LoRA as ``config`` says, reporting through ``callbacks``.

    ``commands.should_stop()`` is polled before every step; when it answers True the run
    saves a resumable state (``<output_name>-state``) and returns with ``stopped=True``.
    """
    return Trainer(config, callbacks or NullCallbacks(), commands or NeverStop()).run()


class Trainer:
    """One run: a :class:`~trainer.setup.Session` plus the counters that move."""

    def __init__(self, config: TrainConfig, callbacks: Callbacks, commands: Commands) -> None:
        self.config = config
        # With several processes only rank 0 reports, and only it writes files.
        self.callbacks = MainProcessOnly(callbacks)
        self.commands = commands
        self.session: Session = prepare_session(config, self.callbacks)
        self.session.run_info = with_kohya_keys(self.session.run_info, config, self.session.data)
        self.is_main = self.session.accelerator.is_main_process
        self.position = Position(epoch=0, batch=0, global_step=0, seed=self.session.seed)
        self.result = TrainResult(output_dir=config.output_dir, final_path=None)
        self._epoch_losses: list[torch.Tensor] = []
        self.saves = SaveSchedule(config)
        # Reading the loss waits for the GPU; on CUDA report every few steps so the
        # host keeps queueing work ahead of the device.
        self._report_every = 1 if self.session.device.type == "cpu" else CUDA_REPORT_EVERY
        self._session_steps = 0
        self._session_images = 0
        self._started = 0.0
        self._samples: dict[int, list[Path]] = {}
        if config.resume is not None:
            self.resume(config.resume)

    # -- the table of contents ----------------------------------------------------------

    def run(self) -> TrainResult:
        s = self.session
        self.callbacks.on_status("training", f"{s.total_steps} steps, {s.num_epochs} epochs")
        self._started = time.perf_counter()
        while not self.finished():
            batches = s.data.epoch_batches(self.position.seed, self.position.epoch)
            for index in range(self.position.batch, len(batches)):
                # Stop or snapshot only between optimizer steps: accumulated gradients
                # are not part of the state.
                if index % self.config.gradient_accumulation_steps == 0:
                    if self.stop_requested():
                        return self.stop()
                    if self.is_main and self.state_requested():
                        self.write_state(f"{self.config.output_name}-state")
                self.step(batches[index], index, last_in_epoch=index == len(batches) - 1)
                self._advance(batch=index + 1)
                self.maybe_save_step()
                if self.position.global_step >= s.total_steps:
                    break
            if self.position.batch >= len(batches):
                self._advance(epoch=self.position.epoch + 1, batch=0)
                self._epoch_losses.clear()
                if not self.finished():
                    self.maybe_save()  # the last epoch is saved by finish() instead
                self.maybe_sample()
        return self.finish()

    def stop_requested(self) -> bool:
        """Rank 0 asks; the others learn its answer (a collective: at the report cadence)."""
        accelerator = self.session.accelerator
        if accelerator.num_processes == 1:
            return self.commands.should_stop()
        if self._session_steps % self._report_every:
            return False
        return agree(accelerator, self.is_main and self.commands.should_stop())

    def state_requested(self) -> bool:
        # Optional in the Commands protocol: minimal implementations only answer should_stop.
        ask = getattr(self.commands, "should_save_state", None)
        return bool(ask is not None and ask())

    def finished(self) -> bool:
        return (
            self.position.global_step >= self.session.total_steps
            or self.position.epoch >= self.session.num_epochs
        )

    # -- one step -------------------------------------------------------------------------

    def step(self, batch: list[int], index: int, *, last_in_epoch: bool) -> None:
        """Forward, loss and backward for this rank's share of one global batch; an
        optimizer step every ``gradient_accumulation_steps`` batches (and at epoch end)."""
        s, config = self.session, self.config
        accelerator, world = s.accelerator, s.accelerator.num_processes
        scheduler = s.base.noise_scheduler
        steps = scheduler.config.num_train_timesteps
        # Randomness derives from (seed, epoch, batch), drawn for the whole global batch:
        # a resumed run, and a run on another number of processes, draw the same.
        b = draw_rank_batch(
            [s.data.records[i] for i in batch],
            key=f"step:{self.position.seed}:{self.position.epoch}:{index}",
            rank=accelerator.process_index,
            world=world,
            latents_of=self.latents,
            noise=s.noise,
            timestep_range=(config.min_timestep or 0, config.max_timestep or steps),
            device=s.device,
        )
        noisy = scheduler.add_noise(b.latents, b.noise, b.timesteps)

        sync = (index + 1) % config.gradient_accumulation_steps == 0 or last_in_epoch
        # Between optimizer steps gradients only accumulate locally (no all-reduce).
        with contextlib.nullcontext() if sync else accelerator.no_sync(s.unet):
            with accelerator.autocast():  # a trained TE holds fp32 LoRA on half weights
                hidden, pooled = s.encode_text(b.captions)
            extra = {}
            if pooled is not None:  # SDXL: pooled text + size/crop micro-conditioning
                time_ids = sdxl_time_ids(
                    [r.original_size for r in b.records],
                    [r.crop_top_left(flip=f) for r, f in zip(b.records, b.flips, strict=True)],
                    [r.bucket for r in b.records],
                )
                time_ids = time_ids.to(s.device)
                extra["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": time_ids}
            with accelerator.autocast():
                prediction = s.unet(noisy.to(s.weight_dtype), b.timesteps, hidden, **extra).sample
            target = target_for(scheduler, b.latents, b.noise, b.timesteps)
            options = config.model_dump(include=LOSS_OPTIONS)
            alphas = scheduler.alphas_cumprod
            losses = kohya_loss(prediction, target, b.timesteps, alphas, **options)
            weights = torch.tensor(
                [config.prior_loss_weight if r.is_reg else 1.0 for r in b.records], device=s.device
            ) * (0.0 if b.padding else 1.0)  # a padding rank's copy counts for nothing
            if config.min_snr_gamma:
                weights = weights * min_snr_weights(scheduler, b.timesteps, config.min_snr_gamma)
            if config.debiased_estimation_loss:
                weights = weights * debiased_weights(scheduler, b.timesteps)
            # The global batch's mean once DDP averages the ranks' gradients.
            loss = (losses * weights).sum() * (world / b.global_size)
            accelerator.backward(loss / config.gradient_accumulation_steps)

        self._session_images += b.global_size
        self._epoch_losses.append(loss.detach())  # read (a host sync) only when reported
        if sync:
            self.optimizer_step()
            if last_in_epoch or self._session_steps % self._report_every == 0:
                self.report()

    def optimizer_step(self) -> None:
        s = self.session
        if self.config.train_text_encoder:
            average_gradients(s.network.text_encoder_parameters(), s.accelerator.num_processes)
        if self.config.max_grad_norm:
            s.accelerator.clip_grad_norm_(s.trainable, self.config.max_grad_norm)
        s.optimizer.step()
        s.lr_scheduler.step()
        s.optimizer.zero_grad(set_to_none=True)
        if self.config.scale_weight_norms:
            apply_max_norm(s.network.components().values(), self.config.scale_weight_norms)
        self._session_steps += 1
        self._advance(global_step=self.position.global_step + 1)
        if self._session_steps == 1:
            self.check_memory()

    def check_memory(self) -> None:
        """Warn once, after the first step, when the GPU is (nearly) out of memory."""
        message = spill_warning(self.session.device, SPILL_WARNING_FRACTION)
        if message:
            logger.warning(message)
            self.callbacks.on_status("warning", message)

    def latents(self, records: list[ImageRecord], flips: list[bool]) -> torch.Tensor:
        s = self.session
        if s.latent_cache is not None:
            stacked = torch.stack(
                [s.latent_cache.get(r, f) for r, f in zip(records, flips, strict=True)]
            )
        else:
            stacked = s.vae_encoder.encode_records(records, flips)
        return stacked.to(s.device, torch.float32)

    def report(self) -> None:
        s = self.session
        losses = torch.stack(self._epoch_losses).float()
        if s.accelerator.num_processes > 1:  # each rank holds its share of each loss
            losses = s.accelerator.reduce(losses, reduction="mean")
        losses = losses.cpu()  # the one host sync
        loss, average = float(losses[-1]), float(losses.mean())
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        rate = self._session_steps / elapsed
        remaining = s.total_steps - self.position.global_step
        self.callbacks.on_progress(
            Progress(
                step=self.position.global_step,
                total_steps=s.total_steps,
                epoch=self.position.epoch + 1,
                total_epochs=s.num_epochs,
                loss=loss,
                average_loss=average,
                learning_rate=s.lr_scheduler.get_last_lr()[0],
                steps_per_second=rate,
                images_per_second=self._session_images / elapsed,
                eta_seconds=remaining / rate if rate > 0 else math.inf,
            )
        )

    # -- checkpoints, samples, state ---------------------------------------------------

    def maybe_save(self) -> None:
        """An epoch's LoRA when one is due (and its state with ``save_state``)."""
        path = self.saves.epoch_file(self.position.epoch)
        if path is not None and self.is_main:
            self.saves.saved_epoch(self.save(path))
            self._kept_saves(path.stem)

    def maybe_save_step(self) -> None:
        """kohya's ``save_every_n_steps`` (the last step is the final file instead)."""
        path = None if self.finished() else self.saves.step_file(self.position.global_step)
        if path is not None and self.is_main:
            self.saves.saved_step(self.position.global_step, self.save(path))
            self._kept_saves(path.stem)

    def _kept_saves(self, stem: str) -> None:
        self.result.saved = [p for p in self.result.saved if p.exists()]
        if self.config.save_state:
            self.write_state(f"{stem}-state")

    def maybe_sample(self) -> None:
        every, prompts = self.config.sample_every_n_epochs, self.session.sample_prompts
        if not every or not prompts or self.position.epoch % every or not self.is_main:
            return
        s = self.session
        self.callbacks.on_status("sampling", f"epoch {self.position.epoch}")
        s.unet.eval()
        try:
            paths = generate_samples(
                s.base,
                prompts,
                sampler=self.config.sample_sampler,
                encode_text=s.encode_text,
                folder=self.config.output_dir / "sample",
                stem=f"{self.config.output_name}_e{self.position.epoch:06d}",
                device=s.device,
            )
        finally:
            s.unet.train()
        self._samples[self.position.epoch] = paths
        write_grid(
            self.config.output_dir / "sample" / f"{self.config.output_name}_grid.png",
            [p.prompt for p in s.sample_prompts],
            self._samples,
        )
        self.callbacks.on_sample(paths, self.position.epoch, self.position.global_step)

    def maybe_weight_grid(self) -> None:
        """At the end: each prompt at each of ``sample_weights`` (0 = the base model)."""
        s, config = self.session, self.config
        if config.sample_weights and s.sample_prompts and self.is_main:
            self.callbacks.on_status("sampling", f"LoRA weights {list(config.sample_weights)}")
            s.unet.eval()
            self.result.weight_grid = weight_grid(
                s.base,
                s.network,
                s.sample_prompts,
                config.sample_weights,
                sampler=config.sample_sampler,
                encode_text=s.encode_text,
                folder=config.output_dir / "sample",
                stem=config.output_name,
                device=s.device,
            )

    def save(self, path: Path, *, final: bool = False) -> Path:
        s = self.session
        self.callbacks.on_status("saving", path.name)
        epoch = self.position.epoch + (1 if self.position.batch else 0)
        step = self.position.global_step
        compat = save_network(path, s.network, s.run_info, self.config, s.base, epoch, step)
        self.result.saved.append(path)
        self.callbacks.on_checkpoint(Checkpoint(path, epoch, step, final, compat_path=compat))
        return path

    def write_state(self, name: str) -> Path | None:
        """Rank 0 writes the state; every rank can resume from it (the LoRA, optimizer
        and schedule are the same on all ranks after each step)."""
        s = self.session
        if not self.is_main:
            return None
        training = {
            "optimizer": s.optimizer.state_dict(),
            "lr_scheduler": s.lr_scheduler.state_dict(),
        }
        scaler = getattr(s.accelerator, "scaler", None)
        if scaler is not None:
            training["scaler"] = scaler.state_dict()
        directory = save_state(
            self.config.output_dir / name,
            position=self.position,
            shape=s.shape,
            lora=s.network.state_dicts(),
            training=training,
        )
        self.result.state_dir = directory
        self.callbacks.on_state(directory, self.position.epoch, self.position.global_step)
        return directory

    def resume(self, directory: Path) -> None:
        """Continue from a state directory: weights, optimizer, scheduler, RNG, counters."""
        s = self.session
        loaded = load_state(directory)
        check_shape(loaded.shape, s.shape)
        s.network.load_state_dicts(loaded.lora)
        s.optimizer.load_state_dict(loaded.training["optimizer"])
        s.lr_scheduler.load_state_dict(loaded.training["lr_scheduler"])
        scaler = getattr(s.accelerator, "scaler", None)
        if scaler is not None and "scaler" in loaded.training:
            scaler.load_state_dict(loaded.training["scaler"])
        restore_rng(loaded.training["rng"])
        self.position = loaded.position
        logger.info(
            "resumed from %s at epoch %d, batch %d, step %d",
            directory,
            self.position.epoch,
            self.position.batch,
            self.position.global_step,
        )

    def stop(self) -> TrainResult:
        self.write_state(f"{self.config.output_name}-state")
        self.callbacks.on_status("stopped", f"state saved at step {self.position.global_step}")
        return self._result(stopped=True)

    def finish(self) -> TrainResult:
        final = self.config.output_dir / f"{self.config.output_name}.safetensors"
        if self.is_main:
            self.result.final_path = self.save(final, final=True)
        self.maybe_weight_grid()
        if self.config.save_state or self.config.save_state_on_train_end:
            self.write_state(f"{self.config.output_name}-state")
        self.callbacks.on_status("finished", f"{self.position.global_step} steps, saved {final}")
        return self._result(stopped=False)

    def _advance(self, **changes: int) -> None:
        self.position = dataclasses.replace(self.position, **changes)

    def _result(self, *, stopped: bool) -> TrainResult:
        s, r = self.session, self.result
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        r.stopped = stopped
        r.epoch, r.global_step = self.position.epoch, self.position.global_step
        r.latents_encoded = s.vae_encoder.images
        r.latents_reused = s.latent_cache.reused if s.latent_cache is not None else 0
        r.captions_encoded = s.text_cache.encoded if s.text_cache is not None else 0
        r.steps_per_second = self._session_steps / elapsed
        r.images_per_second = self._session_images / elapsed
        return r
