"""``loralab train``: the standalone trainer's command (defined in :mod:`trainer.cli`)."""

from __future__ import annotations

from trainer.cli import train

__all__ = ["train"]
