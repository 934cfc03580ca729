"""The training loop. :func:`train` is the entry point the CLI and the worker call.

It reads like a table of contents: :meth:`Trainer.run` walks epochs and batches and
calls :meth:`~Trainer.step`, :meth:`~Trainer.maybe_save` and
:meth:`~Trainer.maybe_sample`; the set-up lives in :mod:`trainer.setup`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lab.training.config import TrainConfig
from trainer.callbacks import Callbacks, Checkpoint, Commands, NeverStop, NullCallbacks, Progress
from trainer.checkpoints import SaveSchedule
from trainer.compat import save_network
from trainer.data import ImageRecord
from trainer.kohya_terms import LOSS_OPTIONS, apply_max_norm, kohya_loss, sample_timesteps
from trainer.loss import debiased_weights, min_snr_weights, target_for
from trainer.metadata import with_kohya_keys
from trainer.noise import adaptive_training_noise
from trainer.sampling import generate_samples, weight_grid, write_grid
from trainer.setup import Session, prepare_session
from trainer.speed import spill_warning
from trainer.state import Position, check_shape, load_state, restore_rng, save_state
from trainer.text import sdxl_time_ids

logger = logging.getLogger(__name__)

# Above this share of the GPU's memory after one step, spilling is likely (see check_memory).
SPILL_WARNING_FRACTION = 0.95
CUDA_REPORT_EVERY = 10


@dataclass
class TrainResult:
    """What a run produced and how it went."""

    output_dir: Path
    final_path: Path | None
    saved: list[Path] = field(default_factory=list)
    state_dir: Path | None = None
    epoch: int = 0
    global_step: int = 0
    stopped: bool = False
    latents_encoded: int = 0
    latents_reused: int = 0
    captions_encoded: int = 0
    steps_per_second: float = 0.0
    images_per_second: float = 0.0
    weight_grid: Path | None = None
    """The grid over ``sample_weights`` (WebP, under Discord's upload limit)."""


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
        self.callbacks = callbacks
        self.commands = commands
        self.session: Session = prepare_session(config, callbacks)
        self.session.run_info = with_kohya_keys(self.session.run_info, config, self.session.data)
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
                    if self.commands.should_stop():
                        return self.stop()
                    if self.state_requested():
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
        """Forward, loss and backward for one batch; an optimizer step every
        ``gradient_accumulation_steps`` batches (and at the end of an epoch)."""
        s, config = self.session, self.config
        records = [s.data.records[i] for i in batch]
        # Randomness derives from (seed, epoch, batch): a resumed run draws the same.
        rng = random.Random(f"step:{self.position.seed}:{self.position.epoch}:{index}")
        generator = torch.Generator().manual_seed(rng.getrandbits(63))
        flips = [r.flip_aug and rng.random() < 0.5 for r in records]
        captions = [r.rules.apply(r.caption, rng) for r in records]

        latents = self.latents(records, flips)
        with s.accelerator.autocast():  # a trained TE holds fp32 LoRA on half weights
            hidden, pooled = s.encode_text(captions)
        noise = adaptive_training_noise(latents, s.noise, generator)
        scheduler = s.base.noise_scheduler
        steps = scheduler.config.num_train_timesteps
        low, high = config.min_timestep or 0, config.max_timestep or steps
        timesteps = sample_timesteps(len(records), low, high, generator=generator)
        noise, timesteps = noise.to(s.device), timesteps.to(s.device)
        noisy = scheduler.add_noise(latents, noise, timesteps)

        extra = {}
        if pooled is not None:  # SDXL: pooled text + size/crop micro-conditioning
            time_ids = sdxl_time_ids(
                [r.original_size for r in records],
                [r.crop_top_left(flip=f) for r, f in zip(records, flips, strict=True)],
                [r.bucket for r in records],
            )
            extra["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": time_ids.to(s.device)}
        with s.accelerator.autocast():
            prediction = s.unet(noisy.to(s.weight_dtype), timesteps, hidden, **extra).sample
        target = target_for(scheduler, latents, noise, timesteps)
        loss_options = config.model_dump(include=LOSS_OPTIONS)
        losses = kohya_loss(prediction, target, timesteps, scheduler.alphas_cumprod, **loss_options)
        weights = torch.tensor(
            [config.prior_loss_weight if r.is_reg else 1.0 for r in records], device=s.device
        )
        if config.min_snr_gamma:
            weights = weights * min_snr_weights(scheduler, timesteps, config.min_snr_gamma)
        if config.debiased_estimation_loss:
            weights = weights * debiased_weights(scheduler, timesteps)
        loss = (losses * weights).mean()
        s.accelerator.backward(loss / config.gradient_accumulation_steps)

        accumulated = (index + 1) % config.gradient_accumulation_steps == 0
        self._session_images += len(records)
        self._epoch_losses.append(loss.detach())  # read (a host sync) only when reported
        if accumulated or last_in_epoch:
            self.optimizer_step()
            if last_in_epoch or self._session_steps % self._report_every == 0:
                self.report()

    def optimizer_step(self) -> None:
        s = self.session
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
        losses = torch.stack(self._epoch_losses).float().cpu()  # the one host sync
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
        if path is not None:
            self.saves.saved_epoch(self.save(path))
            self._kept_saves(path.stem)

    def maybe_save_step(self) -> None:
        """kohya's ``save_every_n_steps`` (the last step is the final file instead)."""
        path = None if self.finished() else self.saves.step_file(self.position.global_step)
        if path is not None:
            self.saves.saved_step(self.position.global_step, self.save(path))
            self._kept_saves(path.stem)

    def _kept_saves(self, stem: str) -> None:
        self.result.saved = [p for p in self.result.saved if p.exists()]
        if self.config.save_state:
            self.write_state(f"{stem}-state")

    def maybe_sample(self) -> None:
        every, prompts = self.config.sample_every_n_epochs, self.session.sample_prompts
        if not every or not prompts or self.position.epoch % every:
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
        if config.sample_weights and s.sample_prompts:
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

    def write_state(self, name: str) -> Path:
        s = self.session
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
        final = self.save(
            self.config.output_dir / f"{self.config.output_name}.safetensors", final=True
        )
        self.result.final_path = final
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
