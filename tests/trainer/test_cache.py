"""Latents are encoded once: a second run re-encodes nothing, a touched image only itself."""

from __future__ import annotations

from pathlib import Path

from lab.training.config import build_config
from tests.trainer.conftest import base_values
from trainer.callbacks import NullCallbacks
from trainer.loop import train
from trainer.tiny import make_image


class StatusLog(NullCallbacks):
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def on_status(self, status: str, detail: str = "") -> None:
        self.lines.append((status, detail))


def _config(model: Path, data: Path, out: Path, **extra: object):
    return build_config(
        base_values(
            model,
            data,
            out,
            max_train_epochs=None,
            max_train_steps=1,  # the cache is filled before the first step; one step reads it
            cache_latents=True,
            cache_latents_to_disk=True,
            latent_cache_dir=str(out.parent / "latents"),
            **extra,
        )
    )


def test_second_run_reencodes_nothing_and_a_touched_image_only_itself(
    tiny_model: Path, dataset: Path, tmp_path: Path
) -> None:
    first = train(_config(tiny_model, dataset, tmp_path / "one"))
    assert (first.latents_encoded, first.latents_reused) == (4, 0)

    log = StatusLog()
    second = train(_config(tiny_model, dataset, tmp_path / "two"), log)
    assert (second.latents_encoded, second.latents_reused) == (0, 4)
    assert ("caching", "latents: 0 encoded, 4 reused") in log.lines

    # Rewrite one image with new pixels (same name, same size): only it is re-encoded.
    make_image(dataset / "2_sks" / "img1.png", (96, 32), seed=99)
    third = train(_config(tiny_model, dataset, tmp_path / "three"))
    assert (third.latents_encoded, third.latents_reused) == (1, 3)


def test_flip_caches_both_orientations_and_a_new_bucket_recaches(
    tiny_model: Path, dataset: Path, tmp_path: Path
) -> None:
    flipped = train(_config(tiny_model, dataset, tmp_path / "one", flip_aug=True))
    assert flipped.latents_encoded == 8  # 4 images × (plain, mirrored)
    # The plain latents are shared with a run without flips.
    plain = train(_config(tiny_model, dataset, tmp_path / "two"))
    assert (plain.latents_encoded, plain.latents_reused) == (0, 4)
    # Without buckets the 3:1 images are cropped to 64×64 instead of 96×32: those two are
    # encoded again; the square ones train exactly as before and are reused.
    no_buckets = train(_config(tiny_model, dataset, tmp_path / "three", enable_bucket=False))
    assert (no_buckets.latents_encoded, no_buckets.latents_reused) == (2, 2)


def test_without_cache_every_step_encodes(tiny_model: Path, dataset: Path, tmp_path: Path):
    result = train(
        build_config(
            base_values(
                tiny_model,
                dataset,
                tmp_path / "o",
                max_train_epochs=None,
                max_train_steps=2,
                cache_latents=False,
            )
        )
    )
    assert result.latents_encoded == 4  # 2 steps × batch 2, each sample through the VAE


def test_text_encoder_outputs_cached_when_frozen_and_static(
    tiny_model: Path, dataset: Path, tmp_path: Path
) -> None:
    frozen = train(
        build_config(
            base_values(
                tiny_model,
                dataset,
                tmp_path / "a",
                max_train_epochs=None,
                max_train_steps=1,  # the cache is filled before the first step
                network_train_unet_only=True,
            )
        )
    )
    assert frozen.captions_encoded == 4  # four distinct captions, encoded once each
    shuffled = train(
        build_config(
            base_values(
                tiny_model,
                dataset,
                tmp_path / "b",
                max_train_epochs=None,
                max_train_steps=1,
                network_train_unet_only=True,
                shuffle_caption=True,
            )
        )
    )
    assert shuffled.captions_encoded == 0  # dynamic captions are encoded per step, not cached
