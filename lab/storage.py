"""One storage interface for datasets and artifacts: a local folder (embedded mode)
or an S3-compatible bucket (production, MinIO in compose). Workers on other machines
read and write only through it, never through Discord.

Keys are relative POSIX paths (``jobs/12/lora-e0003.safetensors``); a key that tries
to leave the store (``..``, absolute, backslashes) is refused.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Protocol

from lab.errors import LabError
from lab.settings import CommonSettings

_CHUNK = 1 << 20


class StorageError(LabError):
    code = "storage_error"


class ObjectNotFound(StorageError):
    code = "object_not_found"


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    sha256: str
    size: int


class Storage(Protocol):
    def put_file(self, key: str, path: Path) -> StoredObject: ...

    def put_bytes(self, key: str, data: bytes) -> StoredObject: ...

    def get_bytes(self, key: str) -> bytes: ...

    def download(self, key: str, dest: Path) -> Path: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def list(self, prefix: str) -> list[str]: ...


def check_key(key: str) -> str:
    """`key` if it is a safe relative POSIX path inside the store, else `StorageError`."""
    path = PurePosixPath(key)
    if (
        not key
        or "\\" in key
        or path.is_absolute()
        or any(part in ("..", ".", "") for part in key.split("/"))
    ):
        raise StorageError(f"invalid storage key {key!r}")
    return key


def file_digest(path: Path) -> tuple[str, int]:
    """(sha256 hex, size) of a file, read in chunks."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class LocalStorage:
    """A folder. Writes go to a temporary file first, then are renamed into place, so
    a reader never sees half a file."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _commit(self, key: str, write: Any) -> StoredObject:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out:
                write(out)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        sha, size = file_digest(target)
        return StoredObject(key, sha, size)

    def put_file(self, key: str, path: Path) -> StoredObject:
        def copy(out: BinaryIO) -> None:
            with path.open("rb") as src:
                shutil.copyfileobj(src, out, _CHUNK)

        return self._commit(key, copy)

    def put_bytes(self, key: str, data: bytes) -> StoredObject:
        return self._commit(key, lambda out: out.write(data))

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(f"no object {key!r} in storage") from None

    def download(self, key: str, dest: Path) -> Path:
        src = self._path(key)
        if not src.is_file():
            raise ObjectNotFound(f"no object {key!r} in storage")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        return dest

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix if prefix else self.root
        search = base if base.is_dir() else base.parent
        if not search.exists():
            return []
        keys = (
            p.relative_to(self.root).as_posix()
            for p in search.rglob("*")
            if p.is_file() and not p.name.startswith(".incoming-")
        )
        return sorted(k for k in keys if k.startswith(prefix))


class S3Storage:
    """An S3-compatible bucket through boto3 (imported only when used)."""

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> None:
        import boto3

        self.bucket = bucket
        self._s3 = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
        )

    def put_file(self, key: str, path: Path) -> StoredObject:
        sha, size = file_digest(path)
        self._s3.upload_file(
            str(path), self.bucket, check_key(key), ExtraArgs={"Metadata": {"sha256": sha}}
        )
        return StoredObject(key, sha, size)

    def put_bytes(self, key: str, data: bytes) -> StoredObject:
        sha = hashlib.sha256(data).hexdigest()
        self._s3.put_object(
            Bucket=self.bucket, Key=check_key(key), Body=data, Metadata={"sha256": sha}
        )
        return StoredObject(key, sha, len(data))

    def _missing(self, exc: Exception) -> bool:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        return code in ("404", "NoSuchKey", "NotFound")

    def get_bytes(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            return self._s3.get_object(Bucket=self.bucket, Key=check_key(key))["Body"].read()
        except ClientError as exc:
            if self._missing(exc):
                raise ObjectNotFound(f"no object {key!r} in storage") from None
            raise

    def download(self, key: str, dest: Path) -> Path:
        from botocore.exceptions import ClientError

        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._s3.download_file(self.bucket, check_key(key), str(dest))
        except ClientError as exc:
            if self._missing(exc):
                raise ObjectNotFound(f"no object {key!r} in storage") from None
            raise
        return dest

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._s3.head_object(Bucket=self.bucket, Key=check_key(key))
        except ClientError as exc:
            if self._missing(exc):
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self._s3.delete_object(Bucket=self.bucket, Key=check_key(key))

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return sorted(keys)


def storage_from_settings(settings: CommonSettings) -> Storage:
    cfg = settings.storage
    if cfg.backend == "local":
        return LocalStorage(settings.storage_root)

    def secret(value: Any) -> str | None:
        return value.get_secret_value() if value is not None else None

    assert cfg.s3_bucket is not None  # validated by StorageSettings
    return S3Storage(
        cfg.s3_bucket,
        endpoint_url=cfg.s3_endpoint_url,
        region=cfg.s3_region,
        access_key_id=secret(cfg.s3_access_key_id),
        secret_access_key=secret(cfg.s3_secret_access_key),
    )
