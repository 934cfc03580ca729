"""A lab job's config is checked against the trainer's own model, without the trainer."""

from __future__ import annotations

import pytest

from lab.training import ConfigError
from lab.training.job import check_job_config, split_job_config


def test_preset_and_overrides_become_a_trainer_config():
    values = {"network_dim": 16, "max_train_epochs": 8, "num_repeats": 5, "suggested_weight": 0.7}
    config = check_job_config("sd15-character", values)
    assert (config.network_dim, config.max_train_epochs) == (16, 8)
    assert config.keep_tokens == 1  # from the preset


@pytest.mark.parametrize(
    ("preset", "config", "message"),
    [
        ("sd15-character", {"learning_rte": 1e-4}, "unknown key 'learning_rte': use learning_rate"),
        ("sd15-character", {"network_dim": "big"}, "network_dim"),
        ("sd15-character", {"output_dir": "/etc"}, "output_dir is set by the worker"),
        ("sd15-character", {"num_repeats": 0}, "num_repeats must be between 1 and 1000"),
        ("sd15-nope", {}, "sd15-nope"),
    ],
)
def test_bad_job_configs_name_the_problem(preset, config, message):
    with pytest.raises(ConfigError, match=message):
        check_job_config(preset, config)


def test_split_separates_lab_keys_from_trainer_keys():
    trainer, lab = split_job_config({"preset": "x", "network_dim": 8, "num_repeats": 3})
    assert (trainer, lab) == ({"network_dim": 8}, {"num_repeats": 3})


def test_dataset_config_is_set_by_the_worker_only():
    import pytest

    from lab.training.errors import ConfigError
    from lab.training.job import check_job_config

    with pytest.raises(ConfigError, match="dataset_config is set by the worker"):
        check_job_config("sd15-character", {"dataset_config": "/etc/passwd"})
