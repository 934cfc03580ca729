"""One job across several processes (one per GPU), as accelerate runs it.

The data are split the way a single process would see them: every rank walks the same
*global* batches (``train_batch_size × num_processes`` images), draws the randomness of
the whole global batch from the same ``(seed, epoch, batch)`` generator, and trains on
its own contiguous share. So 2 processes × batch b see exactly the images, flips,
captions, noise and timesteps of 1 process × batch 2b, and (with DDP averaging the
gradients) end at the same weights up to float rounding.

Only rank 0 reports and writes files: :class:`MainProcessOnly` drops every callback
elsewhere, and what only rank 0 can decide (stop now) is broadcast by :func:`agree`.
"""

from __future__ import annotations

import datetime
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator, InitProcessGroupKwargs, PartialState
from accelerate.state import AcceleratorState

from trainer.callbacks import Callbacks, Checkpoint, Progress
from trainer.data import ImageRecord
from trainer.kohya_terms import sample_timesteps
from trainer.loss import NoiseOptions
from trainer.noise import adaptive_training_noise

_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def start_accelerator(mixed_precision: str) -> tuple[Accelerator, torch.device, torch.dtype]:
    """A fresh :class:`Accelerator`, its device and the dtype of the frozen weights."""
    # A worker process runs many jobs; each may ask for another precision.
    AcceleratorState._reset_state(reset_partial_state=True)
    # Ranks wait for rank 0 while it samples or fills the disk latent cache; a rank that
    # dies is noticed by the launcher (trainer.launch), which ends them all.
    process_group = InitProcessGroupKwargs(timeout=datetime.timedelta(minutes=30))
    # accelerate runs several processes on CPUs (gloo) only when told it is on CPUs.
    on_cpus = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(
        mixed_precision=mixed_precision, cpu=on_cpus, kwargs_handlers=[process_group]
    )
    return accelerator, accelerator.device, _DTYPES[mixed_precision]


@dataclass(frozen=True, slots=True)
class Share:
    """The positions of one rank's samples in a global batch."""

    positions: list[int]
    padding: bool = False
    """True when the global batch has fewer images than processes and this rank got none:
    it trains on a copy of position 0 at zero weight, because every rank must run the
    forward and backward for DDP's gradient all-reduce to complete."""


def batch_share(size: int, rank: int, world: int) -> Share:
    """Rank ``rank``'s contiguous share of a global batch of ``size`` images: as even as
    possible, the first ``size % world`` ranks taking one more."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside a world of {world} processes")
    base, extra = divmod(size, world)
    start = rank * base + min(rank, extra)
    count = base + (1 if rank < extra else 0)
    if count == 0:
        return Share([0], padding=True)
    return Share(list(range(start, start + count)))


@dataclass(frozen=True, slots=True)
class RankBatch:
    """This rank's share of one global batch, with its part of the whole batch's draws."""

    records: list[ImageRecord]
    flips: list[bool]
    captions: list[str]
    latents: torch.Tensor
    noise: torch.Tensor
    timesteps: torch.Tensor
    padding: bool
    global_size: int


def draw_rank_batch(
    records: list[ImageRecord],
    *,
    key: str,
    rank: int,
    world: int,
    latents_of: Callable[[list[ImageRecord], list[bool]], torch.Tensor],
    noise: NoiseOptions,
    timestep_range: tuple[int, int],
    device: torch.device,
) -> RankBatch:
    """Draw flips, captions, noise and timesteps for the whole global batch ``records``
    from the generator seeded by ``key``, then keep (and load the latents of) this rank's
    share: every rank, and one process with the whole batch, draw the same."""
    rng = random.Random(key)
    generator = torch.Generator().manual_seed(rng.getrandbits(63))
    flips = [r.flip_aug and rng.random() < 0.5 for r in records]
    captions = [r.rules.apply(r.caption, rng) for r in records]
    share = batch_share(len(records), rank, world)
    mine = share.positions
    latents = latents_of([records[i] for i in mine], [flips[i] for i in mine])
    # Adaptive offset noise reads each image's latents: the others' are zeros here (their
    # noise is dropped), so the generator's draws are those of the whole batch.
    whole = latents
    if len(mine) != len(records):
        whole = latents.new_zeros((len(records), *latents.shape[1:]))
        whole[mine] = latents
    noises = adaptive_training_noise(whole, noise, generator)
    low, high = timestep_range
    timesteps = sample_timesteps(len(records), low, high, generator=generator)
    return RankBatch(
        records=[records[i] for i in mine],
        flips=[flips[i] for i in mine],
        captions=[captions[i] for i in mine],
        latents=latents,
        noise=noises[mine].to(device),
        timesteps=timesteps[mine].to(device),
        padding=share.padding,
        global_size=len(records),
    )


def agree(accelerator: Accelerator, flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank (each rank must call this at the same point)."""
    if accelerator.num_processes == 1:
        return flag
    value = torch.tensor([1 if flag else 0], device=accelerator.device)
    torch.distributed.broadcast(value, src=0)
    return bool(value.item())


def average_gradients(parameters: list[torch.nn.Parameter], world: int) -> None:
    """Average gradients that DDP does not own (the text encoders' LoRA: only the UNet is
    wrapped) over all ranks, so every rank applies the same update."""
    if world == 1:
        return
    for parameter in parameters:
        if parameter.grad is not None:
            torch.distributed.all_reduce(parameter.grad)
            parameter.grad.div_(world)


class MainProcessOnly:
    """Callbacks that only the main process passes on: the others train silently.

    Asked per call (accelerate's state is shared per process), so it can wrap the
    callbacks before :func:`start_accelerator` has run.
    """

    def __init__(self, callbacks: Callbacks) -> None:
        self.callbacks = callbacks

    @staticmethod
    def _main() -> bool:
        return PartialState().is_main_process

    def on_progress(self, progress: Progress) -> None:
        if self._main():
            self.callbacks.on_progress(progress)

    def on_sample(self, paths: list[Path], epoch: int, step: int) -> None:
        if self._main():
            self.callbacks.on_sample(paths, epoch, step)

    def on_checkpoint(self, checkpoint: Checkpoint) -> None:
        if self._main():
            self.callbacks.on_checkpoint(checkpoint)

    def on_status(self, status: str, detail: str = "") -> None:
        if self._main():
            self.callbacks.on_status(status, detail)

    def on_state(self, path: Path, epoch: int, step: int) -> None:
        if self._main():
            self.callbacks.on_state(path, epoch, step)
