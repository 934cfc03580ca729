"""The ``ss_*`` keys kohya's ``train_network.py`` writes beyond the run's own numbers, so
A1111's and Civitai's metadata viewers (and kohya's tools) find every one they expect.

Options this trainer does not have are written with the value kohya writes when the
option is off (``ss_color_aug = "False"``, ``ss_max_token_length = "None"`` for one
75-token CLIP window), which is what the run did. Left out, as kohya leaves them out
or because they have no meaning here:

- ``ss_vae_name``/``ss_vae_hash``/``ss_new_vae_hash``: kohya writes them only for a
  separate ``--vae``; a run here always uses the base's own VAE;
- ``ss_sd_model_hash``/``ss_new_sd_model_hash`` for a diffusers folder or a hub id:
  kohya hashes files only (a folder gets the string ``"IsADirectory"``);
- ``ss_sd_scripts_commit_hash``: sd-scripts' own revision; ``modelspec.implementation_version``
  names ours.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from lab.training.config import TrainConfig
from trainer.data import TrainingData
from trainer.saving import RunInfo

__all__ = ["base_model_hashes", "kohya_parity", "with_kohya_keys"]

# kohya's values for options that do not exist here (their "off" values or defaults).
ABSENT_OPTIONS: Mapping[str, str] = {
    "ss_num_validation_images": "0",
    "ss_full_fp16": "False",
    "ss_max_token_length": "None",
    "ss_lowram": "False",
    "ss_adaptive_noise_scale": "None",
    "ss_caption_dropout_every_n_epochs": "0",
    "ss_face_crop_aug_range": "None",
    "ss_scale_weight_norms": "None",
    "ss_ip_noise_gamma": "None",
    "ss_ip_noise_gamma_random_strength": "False",
    "ss_loss_type": "l2",
    "ss_huber_schedule": "snr",
    "ss_huber_scale": "1.0",
    "ss_huber_c": "0.1",
    "ss_fp8_base": "False",
    "ss_fp8_base_unet": "False",
    "ss_validation_seed": "None",
    "ss_validation_split": "0.0",
    "ss_max_validation_steps": "None",
    "ss_validate_every_n_epochs": "None",
    "ss_validate_every_n_steps": "None",
    "ss_resize_interpolation": "None",
    "ss_color_aug": "False",
    "ss_random_crop": "False",
}


def base_model_hashes(source: str) -> dict[str, str]:
    """``ss_sd_model_hash`` (A1111's legacy 8-hex hash: SHA-256 of 64 KiB at 1 MiB) and
    ``ss_new_sd_model_hash`` (SHA-256 of the file) of a single-file base; none for a
    folder or hub id."""
    path = Path(source)
    if not path.is_file():
        return {}
    whole = hashlib.sha256()
    with path.open("rb") as handle:
        handle.seek(0x100000)
        legacy = hashlib.sha256(handle.read(0x10000)).hexdigest()[:8]
        handle.seek(0)
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            whole.update(chunk)
    return {"ss_sd_model_hash": legacy, "ss_new_sd_model_hash": whole.hexdigest()}


def kohya_parity(config: TrainConfig, data: TrainingData) -> dict[str, str]:
    """The further ``ss_*`` keys: absent options, base hashes, the effective batch,
    ``ss_datasets`` (kohya's per-dataset record) and the training comment."""
    keys = dict(ABSENT_OPTIONS)
    keys.update(base_model_hashes(str(config.pretrained_model_name_or_path)))
    # kohya: batch × processes × accumulation (one process here).
    keys["ss_total_batch_size"] = str(config.train_batch_size * config.gradient_accumulation_steps)
    keys["ss_training_comment"] = str(config.training_comment)
    keys["ss_datasets"] = json.dumps([_dataset(config, data)])
    return keys


def with_kohya_keys(info: RunInfo, config: TrainConfig, data: TrainingData) -> RunInfo:
    """``info`` with :func:`kohya_parity`'s keys among its further ``ss_*`` options."""
    return dataclasses.replace(info, options={**info.options, **kohya_parity(config, data)})


def _dataset(config: TrainConfig, data: TrainingData) -> dict[str, object]:
    subsets = []
    for summary in data.subsets:
        subset = summary.config

        def option(name: str, subset: object = subset) -> object:
            value = getattr(subset, name, None)
            return getattr(config, name) if value is None else value

        subsets.append(
            {
                "img_count": summary.image_count,
                "num_repeats": summary.repeats,
                "color_aug": False,
                "flip_aug": bool(option("flip_aug")),
                "random_crop": False,
                "shuffle_caption": bool(option("shuffle_caption")),
                "keep_tokens": option("keep_tokens"),
                "keep_tokens_separator": config.keep_tokens_separator,
                "secondary_separator": None,
                "enable_wildcard": False,
                "caption_prefix": option("caption_prefix"),
                "caption_suffix": option("caption_suffix"),
                "resize_interpolation": None,
                "image_dir": summary.name,
                "class_tokens": getattr(subset, "class_tokens", None),
                "is_reg": summary.is_reg,
            }
        )
    width, height = config.resolution
    return {
        "is_dreambooth": True,
        "batch_size_per_device": config.train_batch_size,
        "num_train_images": data.num_train_images,
        "num_reg_images": data.num_reg_images,
        "resolution": [width, height],
        "enable_bucket": config.enable_bucket,
        "min_bucket_reso": config.min_bucket_reso,
        "max_bucket_reso": config.max_bucket_reso,
        "tag_frequency": data.tag_frequency(),
        "bucket_info": {
            "buckets": {
                str(i): {"resolution": list(b), "count": n}
                for i, (b, n) in enumerate(data.bucket_counts().items())
            }
        },
        "resize_interpolation": None,
        "subsets": subsets,
    }
