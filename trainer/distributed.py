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

from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState

from trainer.callbacks import Callbacks, Checkpoint, Progress


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
    callbacks before :func:`trainer.setup.start_accelerator` has run.
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
