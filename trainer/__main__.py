"""``python -m trainer CONFIG.toml [overrides…]``: the trainer without the lab around it."""

from __future__ import annotations

import logging

from trainer.cli import train

if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    train(prog_name="python -m trainer")
