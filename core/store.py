"""Blobs in Redis by key with a TTL: uploads, artifacts and a small record per job.

Job arguments carry only ids and the validated params, so any worker that reaches the same
Redis can run any job; the blobs expire on their own (patient data is not kept forever).
Uploads (with their file names and types) and artifacts are sealed with the job's own data key
(core.sealing, AES-GCM); DELETE and expiry destroy the key, so copies of the sealed blobs left in
an append-only file or snapshot stay unreadable (docs/security.md, "What is kept").

Layout (prefix `lrpseg` by default):
  {p}:dek:{id}        string  the job's 256-bit data key (ttl: result_ttl, renewed with the artifacts);
                              on `keys` (LRPSEG_KEY_REDIS_URL: a Redis without persistence), else here
  {p}:input:{id}      hash  image, image_name, image_type, [ground_truth, gt_name, gt_type] (all sealed)
  {p}:artifacts:{id}  hash  artifact name -> sealed bytes (LRPSEG_ARTIFACT_STORE=redis; else core.artifacts,
                            where the store's own encryption at rest applies: docs/security.md)
  {p}:artifact-deadlines  sorted set  job id by the time its file/S3 artifacts are due for deletion
  {p}:record:{id}     hash  owner, created, state (live|deleted); outlives the job (tombstone -> 410)
  {p}:idempotency:{owner}:{key}  string  "{payload sha256}:{job id}" for Idempotency-Key replays
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from redis import Redis
from redis.client import Pipeline

from core import sealing
from core.artifacts import Artifacts, Blob, RedisArtifacts


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


# KEYS: the idempotency key   ARGV: value, ttl, record key prefix. A job whose record is missing
# is being created (the record follows the claim): still the key's job.
_CLAIM_IDEMPOTENCY = """
local earlier = redis.call('get', KEYS[1])
if earlier then
  local job = string.match(earlier, ':([^:]*)$')
  if redis.call('hget', ARGV[3] .. job, 'state') ~= 'deleted' then return earlier end
end
redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2])
return false
"""


class Store:
    def __init__(
        self,
        connection: Redis,
        prefix: str = "lrpseg",
        artifacts: Artifacts | None = None,
        keys: Redis | None = None,
    ) -> None:
        self.connection = connection
        self.prefix = prefix
        self.artifacts: Artifacts = artifacts if artifacts is not None else RedisArtifacts(connection, prefix)
        self.keys = keys if keys is not None else connection  # where the data keys live (key_redis_url)

    def key(self, kind: str, job_id: str) -> str:
        return f"{self.prefix}:{kind}:{job_id}"

    def key_of(self, kind: str) -> str:
        return f"{self.prefix}:{kind}"

    # ---- the job's data key ----------------------------------------------------------

    def data_key(self, job_id: str) -> bytes | None:
        """The job's data key; None once deleted or expired (its sealed data is then unreadable)."""
        value = self.keys.get(self.key("dek", job_id))
        return bytes(value) if value is not None else None

    def _new_data_key(self, job_id: str, ttl: int) -> bytes:
        key = sealing.new_data_key()
        if not self.keys.set(self.key("dek", job_id), key, nx=True, ex=ttl):
            existing = self.data_key(job_id)
            if existing is None:
                raise RuntimeError(f"the data key of job {job_id} vanished while it was made")
            return existing
        return key

    def destroy_data(self, job_id: str, pipeline: Pipeline | None = None) -> None:
        """Drop the sealed upload and artifacts (in `pipeline`'s transaction if given); then
        `destroy_key`, which makes any copy left in an AOF or snapshot unreadable."""
        (pipeline if pipeline is not None else self.connection).delete(
            self.key("input", job_id), self.key("artifacts", job_id), self.key("result", job_id)
        )

    def destroy_key(self, job_id: str) -> None:
        self.keys.delete(self.key("dek", job_id))

    # ---- inputs -------------------------------------------------------------------

    def put_inputs(self, job_id: str, inputs: Inputs, ttl: int) -> None:
        dek = self._new_data_key(job_id, ttl)
        plain: dict[str, bytes] = {"image": inputs.image.data}
        plain["image_name"] = (inputs.image.filename or "").encode()
        plain["image_type"] = (inputs.image.content_type or "").encode()
        if inputs.ground_truth is not None:
            plain["ground_truth"] = inputs.ground_truth.data
            plain["gt_name"] = (inputs.ground_truth.filename or "").encode()
            plain["gt_type"] = (inputs.ground_truth.content_type or "").encode()
        fields = {name: sealing.seal(dek, value, job_id, f"input/{name}") for name, value in plain.items()}
        key = self.key("input", job_id)
        with self.connection.pipeline() as pipe:
            pipe.hset(key, mapping=fields)
            pipe.expire(key, ttl)
            pipe.execute()

    def get_inputs(self, job_id: str) -> Inputs | None:
        raw = self.connection.hgetall(self.key("input", job_id))
        dek = self.data_key(job_id)
        if not raw or b"image" not in raw or dek is None:
            return None
        fields = {k.decode(): sealing.unseal(dek, v, job_id, f"input/{k.decode()}") for k, v in raw.items()}

        def upload(data: str, name: str, ctype: str) -> Upload:
            return Upload(fields[data], fields.get(name, b"").decode() or None, fields.get(ctype, b"").decode() or None)

        gt = upload("ground_truth", "gt_name", "gt_type") if "ground_truth" in fields else None
        return Inputs(upload("image", "image_name", "image_type"), gt)

    def delete_inputs(self, job_id: str, pipeline: Pipeline | None = None) -> None:
        (pipeline if pipeline is not None else self.connection).delete(self.key("input", job_id))

    # ---- artifacts ----------------------------------------------------------------

    @property
    def sealed_in_redis(self) -> bool:
        """Artifacts kept in Redis are sealed with the job's key (a deleted job leaves nothing
        readable in an AOF); file and S3 stores hold them as they are, under their own at-rest
        encryption and deleted by DELETE and the sweeper."""
        return isinstance(self.artifacts, RedisArtifacts)

    def seal_artifacts(self, job_id: str, artifacts: dict[str, bytes]) -> dict[str, bytes] | None:
        """The artifacts ready for `put_artifacts` (sealed with the job's key for Redis); None if
        the key is gone (the job was deleted)."""
        dek = self.data_key(job_id)
        if dek is None:
            return None
        if not self.sealed_in_redis:
            return artifacts
        return {name: sealing.seal(dek, data, job_id, f"artifact/{name}") for name, data in artifacts.items()}

    def put_artifacts(
        self, job_id: str, sealed: dict[str, bytes] | None, ttl: int, pipeline: Pipeline | None = None
    ) -> None:
        """Store `seal_artifacts`' output (the Redis writes in `pipeline`'s transaction if given:
        core.claims.Claims.fenced); the data key then lives as long as they do. A file/S3 store is
        written at once and its deadline queued for the sweeper."""
        if not sealed:
            return
        pipe = pipeline if pipeline is not None else self.connection.pipeline()
        if self.sealed_in_redis:
            key = self.key("artifacts", job_id)
            pipe.delete(key)
            pipe.hset(key, mapping=sealed)
            pipe.expire(key, ttl)
        else:
            self.artifacts.put(job_id, sealed, ttl)
            pipe.zadd(self.key_of("artifact-deadlines"), {job_id: time.time() + ttl})
        if pipeline is None:
            pipe.execute()
        self.keys.expire(self.key("dek", job_id), ttl)  # the key lives as long as the artifacts

    # ---- the result of the job's end write --------------------------------------------

    def seal_result(self, job_id: str, result: bytes) -> bytes | None:
        """The result JSON ready for `put_result`, sealed with the job's key; None if the key is gone."""
        dek = self.data_key(job_id)
        return None if dek is None else sealing.seal(dek, result, job_id, "result")

    def put_result(self, job_id: str, sealed: bytes, ttl: int, pipeline: Pipeline) -> None:
        """Kept with the artifacts in the job's end write (`pipeline`: core.claims.Claims.fenced). The
        end write deletes the inputs and RQ records "finished" only after it: a run that ends between
        the two (its worker killed, a Redis failover) is re-queued, and the re-run ends from this
        instead of failing on the deleted inputs (workers.tasks)."""
        pipeline.set(self.key("result", job_id), sealed, ex=ttl)

    def get_result(self, job_id: str) -> bytes | None:
        """The result an earlier run's end write stored; None if there was none or the job's key is gone."""
        sealed = self.connection.get(self.key("result", job_id))
        dek = self.data_key(job_id) if sealed is not None else None
        return None if sealed is None or dek is None else sealing.unseal(dek, bytes(sealed), job_id, "result")

    def get_artifact(self, job_id: str, name: str) -> bytes | None:
        if not self.sealed_in_redis:
            return self.artifacts.get(job_id, name)
        sealed = self.connection.hget(self.key("artifacts", job_id), name)
        dek = self.data_key(job_id)
        if sealed is None or dek is None:
            return None
        return sealing.unseal(dek, bytes(sealed), job_id, f"artifact/{name}")

    def stream_artifact(self, job_id: str, name: str) -> Blob | None:
        """The artifact in chunks (a sealed one is opened whole: AES-GCM checks the whole blob)."""
        if not self.sealed_in_redis:
            return self.artifacts.stream(job_id, name)
        data = self.get_artifact(job_id, name)
        return None if data is None else Blob(len(data), iter([data]))

    def artifact_names(self, job_id: str) -> list[str]:
        return self.artifacts.names(job_id)

    def delete_artifacts(self, job_id: str) -> None:
        self.artifacts.delete(job_id)
        if not self.artifacts.expires_by_itself:
            self.connection.zrem(self.key_of("artifact-deadlines"), job_id)

    def sweep_expired_artifacts(self, now: float | None = None, limit: int = 100) -> int:
        """Delete the artifacts whose result TTL has passed (file and S3 stores); returns how
        many jobs' were. Deleting is idempotent, so workers sweeping at once do no harm; the
        deadline goes only once the objects are gone (a failed delete is retried next round)."""
        if self.artifacts.expires_by_itself:
            return 0
        key = self.key_of("artifact-deadlines")
        due = self.connection.zrangebyscore(key, 0, time.time() if now is None else now, start=0, num=limit)
        swept = 0
        for raw in due:
            job_id = raw.decode() if isinstance(raw, bytes) else str(raw)
            self.artifacts.delete(job_id)
            swept += int(self.connection.zrem(key, job_id))
        return swept

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
        """Drop the job's data (its key first); keep the record as a tombstone so the id answers 410."""
        self.destroy_key(job_id)
        with self.connection.pipeline() as pipe:
            self.destroy_data(job_id, pipe)
            pipe.hset(self.key("record", job_id), "state", "deleted")
            pipe.execute()
        self.delete_artifacts(job_id)

    # ---- idempotency keys --------------------------------------------------------------

    def claim_idempotency_key(self, owner: str, key: str, value: str, ttl: int) -> str | None:
        """Set owner's key to value ("{fingerprint}:{job id}") unless it names a job that is not
        deleted; return that earlier value if it does. A key dies with its job: a replay after
        DELETE makes a new job (one atomic step, so two replays cannot both make one)."""
        name = f"{self.prefix}:idempotency:{owner}:{key}"
        earlier = self.connection.eval(_CLAIM_IDEMPOTENCY, 1, name, value, ttl, self.key("record", ""))
        return earlier.decode() if isinstance(earlier, bytes) else None

    def release_idempotency_key(self, owner: str, key: str) -> None:
        self.connection.delete(f"{self.prefix}:idempotency:{owner}:{key}")

    def is_deleted(self, job_id: str) -> bool:
        return self.connection.hget(self.key("record", job_id), "state") == b"deleted"
