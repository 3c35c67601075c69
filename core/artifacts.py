"""Where a finished job's artifacts (PNGs, .npy, DICOM) live: one small interface, three stores.

`LRPSEG_ARTIFACT_STORE` picks one:
  redis               a hash per job in the job's Redis (the embedded default; expires by TTL)
  file:///path        one folder per job on a shared volume: {path}/{key prefix}/{job id}/{name}
  s3://bucket/prefix  one object per artifact, {prefix}/{key prefix}/{job id}/{name}; boto3 reads the standard AWS_* variables,
                      AWS_ENDPOINT_URL included (MinIO, Ceph RGW, any S3-protocol server)

Redis then holds only job state and results. Folders and objects do not expire by themselves:
`core.store.Store` keeps their deadlines in a Redis sorted set and the workers' maintenance
deletes what is due (`Store.sweep_expired_artifacts`); DELETE removes them at once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from redis import Redis

from core.settings import parse_location

CHUNK = 1024 * 1024  # streaming granularity


@dataclass(frozen=True)
class Blob:
    """An artifact being read: its size and its bytes in chunks (read lazily where the store can)."""

    size: int
    chunks: Iterator[bytes]


class Artifacts(Protocol):
    """A job's named blobs. Names are the fixed artifact names (no slashes); job ids are uuids."""

    expires_by_itself: bool  # True: put()'s ttl is enforced by the store (Redis); else by the sweeper

    def put(self, job_id: str, artifacts: dict[str, bytes], ttl: int) -> None: ...
    def get(self, job_id: str, name: str) -> bytes | None: ...
    def stream(self, job_id: str, name: str) -> Blob | None: ...
    def names(self, job_id: str) -> list[str]: ...
    def delete(self, job_id: str) -> None: ...
    def url(self, job_id: str, name: str, expires: int, content_type: str) -> str | None:
        """A time-limited URL a client can fetch the artifact from, where the store has one."""
        ...


class RedisArtifacts:
    """`{prefix}:artifacts:{id}`: a hash of name -> bytes with the result's TTL."""

    expires_by_itself = True

    def __init__(self, connection: Redis, prefix: str) -> None:
        self.connection = connection
        self.prefix = prefix

    def key(self, job_id: str) -> str:
        return f"{self.prefix}:artifacts:{job_id}"

    def put(self, job_id: str, artifacts: dict[str, bytes], ttl: int) -> None:
        with self.connection.pipeline() as pipe:
            pipe.delete(self.key(job_id))
            pipe.hset(self.key(job_id), mapping=artifacts)  # type: ignore[arg-type]
            pipe.expire(self.key(job_id), ttl)
            pipe.execute()

    def get(self, job_id: str, name: str) -> bytes | None:
        return self.connection.hget(self.key(job_id), name)  # type: ignore[return-value]

    def stream(self, job_id: str, name: str) -> Blob | None:
        data = self.get(job_id, name)
        return None if data is None else Blob(len(data), iter([data]))

    def names(self, job_id: str) -> list[str]:
        return sorted(k.decode() for k in self.connection.hkeys(self.key(job_id)))  # type: ignore[union-attr]

    def delete(self, job_id: str) -> None:
        self.connection.delete(self.key(job_id))

    def url(self, job_id: str, name: str, expires: int, content_type: str) -> str | None:
        return None


class FileArtifacts:
    """`{root}/{prefix}/{id}/{name}`. Each file is written to a temporary name and renamed, so a
    reader on another machine sees a whole file or none."""

    expires_by_itself = False

    def __init__(self, root: Path, prefix: str) -> None:
        self.root = root / prefix

    def folder(self, job_id: str) -> Path:
        return self.root / job_id

    def put(self, job_id: str, artifacts: dict[str, bytes], ttl: int) -> None:
        folder = self.folder(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in artifacts.items():
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, folder / name)

    def get(self, job_id: str, name: str) -> bytes | None:
        try:
            return (self.folder(job_id) / name).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def stream(self, job_id: str, name: str) -> Blob | None:
        try:
            handle = (self.folder(job_id) / name).open("rb")
        except (FileNotFoundError, NotADirectoryError):
            return None

        def chunks() -> Iterator[bytes]:
            with handle:
                while block := handle.read(CHUNK):
                    yield block

        return Blob(os.fstat(handle.fileno()).st_size, chunks())

    def names(self, job_id: str) -> list[str]:
        try:
            return sorted(p.name for p in self.folder(job_id).iterdir() if not p.name.startswith("."))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def delete(self, job_id: str) -> None:
        shutil.rmtree(self.folder(job_id), ignore_errors=True)

    def url(self, job_id: str, name: str, expires: int, content_type: str) -> str | None:
        return None


class S3Artifacts:
    """`s3://{bucket}/{prefix}/{id}/{name}` through boto3 (credentials, region and endpoint from
    the standard AWS_* variables and config files)."""

    expires_by_itself = False

    def __init__(self, bucket: str, prefix: str, client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.client = client if client is not None else s3_client()

    def key(self, job_id: str, name: str = "") -> str:
        return "/".join(p for p in (self.prefix, job_id, name) if p) + ("" if name else "/")

    def put(self, job_id: str, artifacts: dict[str, bytes], ttl: int) -> None:
        for name, data in artifacts.items():
            self.client.put_object(Bucket=self.bucket, Key=self.key(job_id, name), Body=data)

    def _object(self, job_id: str, name: str) -> Any:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.key(job_id, name))
        except self.client.exceptions.NoSuchKey:
            return None

    def get(self, job_id: str, name: str) -> bytes | None:
        found = self._object(job_id, name)
        return None if found is None else found["Body"].read()

    def stream(self, job_id: str, name: str) -> Blob | None:
        found = self._object(job_id, name)
        if found is None:
            return None
        body = found["Body"]

        def chunks() -> Iterator[bytes]:
            try:
                yield from body.iter_chunks(CHUNK)
            finally:
                body.close()

        return Blob(int(found["ContentLength"]), chunks())

    def _keys(self, job_id: str) -> Iterator[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.key(job_id))
        for page in pages:
            for item in page.get("Contents", []):
                yield item["Key"]

    def names(self, job_id: str) -> list[str]:
        return sorted(key.rsplit("/", 1)[1] for key in self._keys(job_id))

    def delete(self, job_id: str) -> None:
        keys = list(self._keys(job_id))
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = [{"Key": key} for key in keys[start : start + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    def url(self, job_id: str, name: str, expires: int, content_type: str) -> str | None:
        params = {
            "Bucket": self.bucket,
            "Key": self.key(job_id, name),
            "ResponseContentType": content_type,
            "ResponseContentDisposition": f'inline; filename="{job_id}-{name}"',
        }
        return str(self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires))


def s3_client() -> Any:
    """boto3's S3 client from the environment; AWS_ENDPOINT_URL (boto3 >= 1.28) selects a
    non-AWS server, which is addressed path-style (bucket in the path, not the host name)."""
    import boto3
    from botocore.config import Config

    style = "path" if os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") else "auto"
    return boto3.client("s3", config=Config(s3={"addressing_style": style}, retries={"mode": "standard"}))


def open_artifacts(location: str, connection: Redis, prefix: str) -> Artifacts:
    """The store LRPSEG_ARTIFACT_STORE names (already validated by Settings)."""
    where = parse_location(location)
    if where.kind == "file":
        assert where.path is not None
        return FileArtifacts(where.path, prefix)
    if where.kind == "s3":
        return S3Artifacts(where.bucket, "/".join(p for p in (where.prefix, prefix) if p))
    return RedisArtifacts(connection, prefix)
