"""Blobs in Redis by key with a TTL: uploads, artifacts and a small record per job.

Job arguments carry only ids and the validated params, so any worker that reaches the same
Redis can run any job; the blobs expire on their own (patient data is not kept forever).

Layout (prefix `lrpseg` by default):
  {p}:input:{id}      hash  image, image_name, image_type, [ground_truth, gt_name, gt_type]
  {p}:artifacts:{id}  hash  artifact name -> bytes
  {p}:record:{id}     hash  owner, created, state (live|deleted); outlives the job (tombstone -> 410)
  {p}:idempotency:{owner}:{key}  string  "{payload sha256}:{job id}" for Idempotency-Key replays
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from redis import Redis
from redis.client import Pipeline


@dataclass(frozen=True)
class Upload:
    data: bytes
    filename: str | None = None
    content_type: str | None = None


@dataclass(frozen=True)
class Inputs:
    image: Upload
    ground_truth: Upload | None


@dataclass(frozen=True)
class JobRecord:
    owner: str
    created: float
    state: str  # live | deleted


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode()


class Store:
    def __init__(self, connection: Redis, prefix: str = "lrpseg") -> None:
        self.connection = connection
        self.prefix = prefix

    def key(self, kind: str, job_id: str) -> str:
        return f"{self.prefix}:{kind}:{job_id}"

    # ---- inputs -------------------------------------------------------------------

    def put_inputs(self, job_id: str, inputs: Inputs, ttl: int) -> None:
        fields: dict[str, bytes | str] = {"image": inputs.image.data}
        fields["image_name"] = inputs.image.filename or ""
        fields["image_type"] = inputs.image.content_type or ""
        if inputs.ground_truth is not None:
            fields["ground_truth"] = inputs.ground_truth.data
            fields["gt_name"] = inputs.ground_truth.filename or ""
            fields["gt_type"] = inputs.ground_truth.content_type or ""
        key = self.key("input", job_id)
        with self.connection.pipeline() as pipe:
            pipe.hset(key, mapping=fields)
            pipe.expire(key, ttl)
            pipe.execute()

    def get_inputs(self, job_id: str) -> Inputs | None:
        raw = self.connection.hgetall(self.key("input", job_id))
        if not raw or b"image" not in raw:
            return None

        def upload(data: str, name: str, ctype: str) -> Upload:
            return Upload(
                raw[data.encode()], _text(raw.get(name.encode())) or None, _text(raw.get(ctype.encode())) or None
            )

        gt = upload("ground_truth", "gt_name", "gt_type") if b"ground_truth" in raw else None
        return Inputs(upload("image", "image_name", "image_type"), gt)

    def delete_inputs(self, job_id: str, pipeline: Pipeline | None = None) -> None:
        (pipeline if pipeline is not None else self.connection).delete(self.key("input", job_id))

    # ---- artifacts ----------------------------------------------------------------

    def put_artifacts(
        self, job_id: str, artifacts: dict[str, bytes], ttl: int, pipeline: Pipeline | None = None
    ) -> None:
        """Store the artifacts (in `pipeline`'s transaction if given: core.claims.Claims.fenced)."""
        if not artifacts:
            return
        key = self.key("artifacts", job_id)
        pipe = pipeline if pipeline is not None else self.connection.pipeline()
        pipe.delete(key)
        pipe.hset(key, mapping=artifacts)  # type: ignore[arg-type]
        pipe.expire(key, ttl)
        if pipeline is None:
            pipe.execute()

    def get_artifact(self, job_id: str, name: str) -> bytes | None:
        return self.connection.hget(self.key("artifacts", job_id), name)

    def artifact_names(self, job_id: str) -> list[str]:
        return sorted(k.decode() for k in self.connection.hkeys(self.key("artifacts", job_id)))

    # ---- job records ----------------------------------------------------------------

    def create_record(self, job_id: str, owner: str, ttl: int) -> None:
        key = self.key("record", job_id)
        with self.connection.pipeline() as pipe:
            pipe.hset(key, mapping={"owner": owner, "created": repr(time.time()), "state": "live"})
            pipe.expire(key, ttl)
            pipe.execute()

    def get_record(self, job_id: str) -> JobRecord | None:
        raw = self.connection.hgetall(self.key("record", job_id))
        if not raw:
            return None
        return JobRecord(raw[b"owner"].decode(), float(raw[b"created"]), raw[b"state"].decode())

    def mark_deleted(self, job_id: str) -> None:
        """Drop the job's data; keep the record as a tombstone so the id answers 410."""
        with self.connection.pipeline() as pipe:
            pipe.delete(self.key("input", job_id), self.key("artifacts", job_id))
            pipe.hset(self.key("record", job_id), "state", "deleted")
            pipe.execute()

    # ---- idempotency keys --------------------------------------------------------------

    def claim_idempotency_key(self, owner: str, key: str, value: str, ttl: int) -> str | None:
        """Set owner's key to value unless it is set; return the earlier value if it was."""
        name = f"{self.prefix}:idempotency:{owner}:{key}"
        if self.connection.set(name, value, nx=True, ex=ttl):
            return None
        earlier = self.connection.get(name)
        return earlier.decode() if earlier is not None else None

    def release_idempotency_key(self, owner: str, key: str) -> None:
        self.connection.delete(f"{self.prefix}:idempotency:{owner}:{key}")

    def is_deleted(self, job_id: str) -> bool:
        return self.connection.hget(self.key("record", job_id), "state") == b"deleted"
