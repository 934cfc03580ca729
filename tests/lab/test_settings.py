"""Settings: embedded defaults, environment and TOML sources, secrets kept out of reprs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from lab.families import BaseFamily
from lab.settings import BotSettings, CliSettings, WorkerSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in ("DATABASE_URL", "BROKER_URL", "DISCORD_TOKEN", "LORALAB_HOME", "LORALAB_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env from the developer's checkout


def test_embedded_defaults_live_under_the_data_dir(tmp_path):
    s = CliSettings()
    assert s.home == Path(".loralab")
    assert s.resolved_database_url == f"sqlite:///{tmp_path / '.loralab' / 'lab.db'}"
    assert s.resolved_broker_url == "filesystem://"
    assert s.is_embedded
    assert s.storage.backend == "local"
    assert s.storage_root == tmp_path / ".loralab" / "storage"


def test_loralab_home_moves_every_derived_location(monkeypatch, tmp_path):
    monkeypatch.setenv("LORALAB_HOME", str(tmp_path / "elsewhere"))
    s = WorkerSettings()
    assert s.resolved_database_url.endswith("/elsewhere/lab.db")
    assert s.broker_folder == tmp_path / "elsewhere" / "broker"
    assert s.storage_root == tmp_path / "elsewhere" / "storage"


def test_production_urls_from_plain_env_names(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://lab:pw@db/lab")
    monkeypatch.setenv("BROKER_URL", "redis://redis:6379/0")
    monkeypatch.setenv("LORALAB_STORAGE__BACKEND", "s3")
    monkeypatch.setenv("LORALAB_STORAGE__S3_BUCKET", "loras")
    s = WorkerSettings()
    assert s.resolved_database_url == "postgresql+psycopg://lab:pw@db/lab"
    assert not s.is_embedded
    assert s.storage.s3_bucket == "loras"


def test_s3_without_a_bucket_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("LORALAB_STORAGE__BACKEND", "s3")
    with pytest.raises(ValidationError, match=r"needs storage\.s3_bucket"):
        WorkerSettings()


def test_toml_file_is_read_and_env_wins_over_it(monkeypatch, tmp_path):
    config = tmp_path / "lab.toml"
    config.write_text(
        'log_level = "DEBUG"\nbroker_url = "redis://from-toml"\n'
        "[rules]\nrelease_quorum = 5\n[rules.min_images]\nsd15 = 20\nsdxl = 12\n"
    )
    monkeypatch.setenv("LORALAB_CONFIG", str(config))
    monkeypatch.setenv("BROKER_URL", "redis://from-env")
    s = CliSettings()
    assert s.log_level == "DEBUG"
    assert s.rules.release_quorum == 5
    assert s.rules.min_images[BaseFamily.SD15] == 20
    assert s.resolved_broker_url == "redis://from-env"


def test_secrets_never_appear_in_repr_str_dumps_or_logs(monkeypatch, caplog):
    monkeypatch.setenv("DISCORD_TOKEN", "tok-SECRET-123")
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://lab:pw-SECRET@db/lab")
    monkeypatch.setenv("BROKER_URL", "redis://:broker-SECRET@redis:6379/0")
    monkeypatch.setenv("LORALAB_STORAGE__S3_SECRET_ACCESS_KEY", "s3-SECRET")
    s = BotSettings()
    assert s.discord_token.get_secret_value() == "tok-SECRET-123"
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("settings: %r / %s", s, s)
    for text in (repr(s), str(s), caplog.text):
        assert "SECRET" not in text.replace("SecretStr", "")
    assert "postgresql+psycopg://lab:***@db/lab" in repr(s)
    assert "redis://:***@redis:6379/0" in repr(s)


def test_unknown_storage_key_is_refused(monkeypatch):
    monkeypatch.setenv("LORALAB_STORAGE__BUKET", "typo")
    with pytest.raises(ValidationError, match="buket"):
        CliSettings()


def test_as_environment_rebuilds_the_same_settings(monkeypatch, tmp_path):
    from pydantic import SecretStr

    from lab.settings import StorageSettings

    original = WorkerSettings(
        home=tmp_path / "h",
        database_url="postgresql+psycopg://lab:pw@db/lab",
        queues=("gpu", "cpu"),
        lease_seconds=7.5,
        base_models={BaseFamily.SD15: "/models/sd15"},
        storage=StorageSettings(backend="s3", s3_bucket="b", s3_secret_access_key=SecretStr("k")),
    )
    for name, value in original.as_environment().items():
        monkeypatch.setenv(name, value)
    rebuilt = WorkerSettings()
    assert rebuilt == original
    assert rebuilt.storage.s3_secret_access_key.get_secret_value() == "k"


def test_gpus_per_job_comes_from_the_environment_and_must_be_positive(monkeypatch):
    assert WorkerSettings().gpus_per_job == 1
    monkeypatch.setenv("LORALAB_GPUS_PER_JOB", "2")
    assert WorkerSettings().gpus_per_job == 2
    monkeypatch.setenv("LORALAB_GPUS_PER_JOB", "0")
    with pytest.raises(ValidationError, match="gpus_per_job"):
        WorkerSettings()


@pytest.mark.parametrize("password", ["p/ss", "p?ss", "p#ss", "a/b?c#d", "s3cr:et"])
def test_every_url_setting_is_shown_without_its_password(password):
    from lab.settings import BotSettings, StorageSettings

    settings = BotSettings(
        database_url=f"postgresql://lab:{password}@db.example:5432/lab",
        broker_url=f"redis://:{password}@redis.example:6379/0",
        storage=StorageSettings(s3_endpoint_url=f"https://key:{password}@s3.example"),
    )
    shown = f"{settings} {settings!r}"
    assert password not in shown and "ss@" not in shown
    assert "postgresql://lab:***@db.example:5432/lab" in shown
    assert "redis://:***@redis.example:6379/0" in shown
    assert "https://key:***@s3.example" in shown
