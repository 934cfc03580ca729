"""What the lab knows about the apps that load its files (pure)."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import save

from lab.apps import (
    DEFAULT_RELEASE_APPS,
    App,
    compat_filename,
    dora_note,
    fit_error,
    job_is_dora,
    needs_dora_compat,
)


def test_the_compat_file_sits_beside_the_dora_file() -> None:
    assert compat_filename("ohwx-v1-e3.safetensors") == "ohwx-v1-e3-lora-compat.safetensors"
    assert compat_filename("jobs/4/a.b.safetensors") == "jobs/4/a.b-lora-compat.safetensors"
    with pytest.raises(ValueError, match=r"not a \.safetensors"):
        compat_filename("model.ckpt")


def test_only_lycoris_reads_dora_right() -> None:
    assert needs_dora_compat(DEFAULT_RELEASE_APPS)
    assert needs_dora_compat([App.LYCORIS, App.COMFYUI])
    assert not needs_dora_compat([App.LYCORIS])
    assert dora_note([App.DIFFUSERS]).startswith("diffusers: drops dora_scale")


def test_the_fit_error_is_read_from_the_header() -> None:
    data = save({"x": np.zeros(2, np.float32)},
                metadata={"loralab_dora_compat_relative_error": "0.125"})  # fmt: skip
    assert fit_error(data) == 0.125
    assert fit_error(save({"x": np.zeros(2, np.float32)})) is None
    assert fit_error(b"short") is None


def test_a_job_trains_dora_when_its_network_args_say_so() -> None:
    dora = {"network_module": "lycoris.kohya", "network_args": ["dora_wd=True"]}
    assert job_is_dora("sd15-character", dora)
    assert not job_is_dora("sd15-character", {"network_dim": 8})
    assert not job_is_dora(None, {"no_such_key": 1})  # no longer valid: not DoRA
