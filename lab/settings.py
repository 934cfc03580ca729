"""Settings, one object per process kind, built in entry points (never at import).

Sources, highest priority first: keyword arguments, environment variables
(``LORALAB_…``; ``DATABASE_URL``, ``BROKER_URL`` and ``DISCORD_TOKEN`` are also
read without the prefix, as deployment tools expect), a ``.env`` file in the working
directory, then the TOML file named by ``LORALAB_CONFIG`` (if any).

The embedded defaults need nothing: a data directory ``./.loralab/`` (override with
``LORALAB_HOME``) holding a SQLite database, the Celery ``filesystem://`` broker's
folders and the local file store.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from lab.apps import DEFAULT_RELEASE_APPS, App
from lab.autocaption import CaptionSettings
from lab.dataset.settings import IngestSettings
from lab.families import FAMILIES, BaseFamily
from lab.training.allowed import TrainingLimits


class LabRules(BaseModel):
    """The thresholds the lifecycle policy enforces; an admin may change them per lab."""

    model_config = {"frozen": True, "extra": "forbid"}

    min_images: dict[BaseFamily, int] = Field(
        default_factory=lambda: {f: d.min_images for f, d in FAMILIES.items()}
    )
    release_quorum: int = Field(3, ge=0, description="Votes needed before a release.")
    release_min_approval: float = Field(
        0.5, ge=0, le=1, description="Share of up-votes a release needs (strictly above)."
    )
    count_own_votes: bool = Field(
        False,
        description="Whether the requester's and the claiming trainer's votes count "
        "towards the release quorum (by default they are shown but do not count).",
    )
    claim_inactivity_hours: float = Field(
        72, gt=0, description="A claimed job with no activity this long returns to READY."
    )
    release_apps: tuple[App, ...] = Field(
        DEFAULT_RELEASE_APPS,
        description="The apps the lab's members load LoRAs in; when one of them applies "
        "DoRA wrongly, a DoRA release attaches the plain-LoRA fit (…-lora-compat).",
    )
    training: TrainingLimits = Field(
        default_factory=TrainingLimits,
        description="Bounds of what a trainer may set with /train config.",
    )


class StorageSettings(BaseModel):
    """Where datasets and artifacts live: a local folder, or an S3-compatible bucket."""

    model_config = {"extra": "forbid"}

    backend: Literal["local", "s3"] = "local"
    local_root: Path | None = None
    """Defaults to ``<home>/storage``."""
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, _redacted(name, value)

    @model_validator(mode="after")
    def _s3_needs_a_bucket(self) -> StorageSettings:
        if self.backend == "s3" and not self.s3_bucket:
            raise ValueError("storage.backend = 's3' needs storage.s3_bucket")
        return self


# The grammar of SQLAlchemy's ``make_url`` (which ``db.session`` parses these with): the
# password runs from the first ':' of the userinfo to the last '@' before the host, so
# it may hold '/', '?' and '#' (a ``[^/?#]`` regex stops there and logs the rest).
_USERINFO = re.compile(r"^(?P<head>[\w+.-]+://[^:/@]*:)(?P<password>.*)@(?P<tail>[^@]*)$", re.S)


def redact_password(url: str) -> str:
    """`url` with the password of its userinfo (``scheme://user:PASSWORD@host``) hidden."""
    match = _USERINFO.match(url)
    if match is None:
        return url
    return f"{match['head']}***@{match['tail']}"


def _redacted(name: str | None, value: Any) -> Any:
    if isinstance(value, str) and "://" in value:
        return redact_password(value)
    return value


def _plain(value: Any) -> Any:
    """`value` as JSON-ready data with secrets revealed (for `as_environment`)."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, BaseModel):
        return {k: _plain(getattr(value, k)) for k in type(value).model_fields}
    if isinstance(value, dict):
        return {str(_plain(k)): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    return value


def _default_home() -> Path:
    return Path(os.environ.get("LORALAB_HOME", ".loralab"))


class CommonSettings(BaseSettings):
    """What every process needs: where the data is, the database, the broker, storage."""

    model_config = SettingsConfigDict(
        env_prefix="LORALAB_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        frozen=True,
    )

    home: Path = Field(default_factory=_default_home)
    database_url: str | None = Field(
        None, validation_alias=AliasChoices("LORALAB_DATABASE_URL", "DATABASE_URL", "database_url")
    )
    broker_url: str | None = Field(
        None, validation_alias=AliasChoices("LORALAB_BROKER_URL", "BROKER_URL", "broker_url")
    )
    storage: StorageSettings = Field(default_factory=StorageSettings)
    rules: LabRules = Field(default_factory=LabRules)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    log_level: str = "INFO"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = [init_settings, env_settings, dotenv_settings, file_secret_settings]
        toml_path = os.environ.get("LORALAB_CONFIG")
        if toml_path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(toml_path)))
        return tuple(sources)

    def as_environment(self) -> dict[str, str]:
        """``LORALAB_…`` variables that rebuild exactly these settings in a child process
        (secrets included: pass them only to processes of the lab)."""
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = _plain(getattr(self, name))
            if value is None:
                continue
            text = json.dumps(value) if isinstance(value, dict | list) else str(value)
            env[f"LORALAB_{name.upper()}"] = text
        return env

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # Every URL setting may carry a password: show them with the password hidden.
        for name, value in super().__repr_args__():
            yield name, _redacted(name, value)

    # Derived locations: computed, so an override of `home` moves all of them.
    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'lab.db').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_folder(self) -> Path:
        """The filesystem transport's exchange folder (embedded mode only)."""
        return (self.home / "broker").resolve()

    @property
    def storage_root(self) -> Path:
        return (self.storage.local_root or self.home / "storage").resolve()

    @property
    def is_embedded(self) -> bool:
        return self.resolved_broker_url.startswith("filesystem://")


DISCORD_ATTACHMENT_HOSTS = frozenset({"cdn.discordapp.com", "media.discordapp.net"})


class BotSettings(CommonSettings):
    """The Discord bot process."""

    discord_token: SecretStr | None = Field(
        None, validation_alias=AliasChoices("LORALAB_DISCORD_TOKEN", "DISCORD_TOKEN")
    )
    message_content_intent: bool = Field(
        False, description="Ingest plain attachments posted in ticket threads."
    )
    upload_limit_bytes: int = Field(
        10 * 1024 * 1024, description="Files above this are released by link, not attached."
    )
    attachment_hosts: frozenset[str] = Field(
        DISCORD_ATTACHMENT_HOSTS,
        description="Hosts uploads are fetched from (a JSON list); anything else is refused. "
        "Discord's by default; an operator behind a media proxy sets theirs.",
    )
    rate_limit_max_wait_seconds: float = Field(
        30.0,
        ge=30.0,
        description="A Discord rate limit longer than this is not slept through: the "
        "outbox row is postponed and other tickets' rows go ahead (discord.py's minimum: 30).",
    )
    io_threads: int = Field(
        2,
        ge=1,
        description="Threads for uploads and file reads (each upload in flight holds up "
        "to one image's worth of memory); database calls have a pool of their own.",
    )


class WorkerSettings(CommonSettings):
    """A Celery worker process (never holds the Discord token)."""

    worker_name: str | None = None
    queues: tuple[str, ...] = ("cpu",)
    concurrency: int = Field(1, ge=1)
    lease_seconds: float = Field(
        120, gt=0, description="A job whose worker is silent this long is re-queued."
    )
    max_attempts: int = Field(3, ge=1, description="Deliveries of a job before it fails.")
    reaper_interval_seconds: float = Field(30, gt=0)
    resend_queued_after_seconds: float = Field(
        120,
        gt=0,
        description="A job queued this long whose task the broker no longer holds "
        "(Redis lost it) gets its task sent again.",
    )
    progress_interval_seconds: float = Field(
        5, ge=0, description="At most one progress event per job this often."
    )
    state_every_minutes: float = Field(
        30, gt=0, description="Also save a resumable state this often, not only per epoch."
    )
    base_models: dict[BaseFamily, str] = Field(
        default_factory=dict,
        description="Base model (diffusers folder or .safetensors) per family.",
    )
    sample_steps: int = Field(
        20, ge=1, le=100, description="Denoising steps of each sample image (at most 100)."
    )
    gpus_per_job: int = Field(
        1,
        ge=1,
        description="GPUs one training job runs on: one process each, through accelerate "
        "(trainer.launch). A job takes GPUs 0..N-1 of those the worker sees, so give each "
        "such worker its own CUDA_VISIBLE_DEVICES and concurrency 1.",
    )
    max_job_hours: float = Field(
        24,
        gt=0,
        description="Hard time limit of one training task; Redis's visibility "
        "timeout is set above it so a long job is never re-delivered while it runs.",
    )
    captioning: CaptionSettings = Field(
        default_factory=CaptionSettings,
        description="Auto-captioning models (by local path) and the tag rules, e.g. "
        'LORALAB_CAPTIONING__MODELS=\'{"wd14": {"kind": "tagger", "model": "/models/wd"}}\'.',
    )

    @property
    def work_dir(self) -> Path:
        return (self.home / "work").resolve()


class CliSettings(CommonSettings):
    """One-shot CLI commands (``loralab db …``, ``loralab dataset …``)."""
