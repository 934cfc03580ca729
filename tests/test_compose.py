"""docker-compose.yml against the Compose Specification's JSON schema (no Docker engine
runs here; the schema ships with check-jsonschema), plus what our deployment needs."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def schema() -> dict:
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads((vendor / "compose-spec.json").read_text())


def test_compose_file_is_valid_against_the_compose_spec(compose, schema):
    jsonschema.validate(compose, schema)


def test_the_schema_check_can_fail(compose, schema):
    broken = json.loads(json.dumps(compose))
    broken["services"]["bot"]["depends_on"] = 42
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_services_of_the_deployment(compose):
    services = compose["services"]
    assert {"postgres", "redis", "minio", "migrate", "bot", "worker-cpu", "worker-gpu"} <= set(
        services
    )
    gpu = services["worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "container_name" not in gpu  # so `--scale worker-gpu=N` works
    for name in ("postgres", "redis", "minio", "bot", "worker-cpu", "worker-gpu"):
        assert "healthcheck" in services[name], name
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["bot"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )
    # the bot holds the Discord token; workers never do
    assert "DISCORD_TOKEN" in services["bot"]["environment"]
    for worker in ("worker-cpu", "worker-gpu"):
        assert "DISCORD_TOKEN" not in services[worker]["environment"]
