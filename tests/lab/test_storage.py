"""The storage interface, on a local folder and on a real S3 HTTP endpoint (moto's
server on a loopback port), with the same tests."""

from __future__ import annotations

import hashlib

import pytest

from lab.storage import LocalStorage, ObjectNotFound, S3Storage, StorageError


@pytest.fixture(scope="module")
def s3_endpoint():
    server_mod = pytest.importorskip("moto.server")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path):
    if request.param == "local":
        return LocalStorage(tmp_path / "store")
    endpoint = request.getfixturevalue("s3_endpoint")
    import boto3

    bucket = f"test-{tmp_path.name.lower().replace('_', '-')[-40:]}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    ).create_bucket(Bucket=bucket)
    return S3Storage(
        bucket,
        endpoint_url=endpoint,
        region="us-east-1",
        access_key_id="test",
        secret_access_key="test",
    )


def test_round_trip_with_digest(storage, tmp_path):
    data = b"lora weights" * 1000
    stored = storage.put_bytes("jobs/1/lora-e0001.safetensors", data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.size == len(data)
    assert storage.get_bytes("jobs/1/lora-e0001.safetensors") == data

    src = tmp_path / "grid.png"
    src.write_bytes(b"\x89PNG" + bytes(range(256)))
    stored = storage.put_file("jobs/1/grid-e0001.png", src)
    assert stored.size == src.stat().st_size
    out = storage.download("jobs/1/grid-e0001.png", tmp_path / "copy" / "grid.png")
    assert out.read_bytes() == src.read_bytes()
    assert storage.list("jobs/1/") == ["jobs/1/grid-e0001.png", "jobs/1/lora-e0001.safetensors"]


def test_missing_objects_and_delete(storage, tmp_path):
    assert not storage.exists("nope/x")
    with pytest.raises(ObjectNotFound, match="no object 'nope/x'"):
        storage.get_bytes("nope/x")
    with pytest.raises(ObjectNotFound):
        storage.download("nope/x", tmp_path / "x")
    storage.put_bytes("a/b", b"1")
    assert storage.exists("a/b")
    storage.delete("a/b")
    assert not storage.exists("a/b")


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "a/../../b", "a\\b", "", "a//b"])
def test_keys_cannot_escape_the_store(storage, key):
    with pytest.raises(StorageError, match="invalid storage key"):
        storage.put_bytes(key, b"x")


def test_local_writes_are_atomic(tmp_path):
    store = LocalStorage(tmp_path / "store")
    store.put_bytes("k", b"old")

    def explode(out):
        out.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        store._commit("k", explode)
    assert store.get_bytes("k") == b"old"
    assert store.list("") == ["k"]  # no temporary file left behind
