"""All service and worker settings, read once from the environment (prefix LRPSEG_).

`REDIS_URL` is also read as-is (the docker-compose / Heroku convention); with none,
`lrpseg serve` starts an embedded Redis and passes its URL on.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LRPSEG_", populate_by_name=True, extra="ignore")

    # Redis / RQ
    redis_url: str | None = Field(None, validation_alias=AliasChoices("LRPSEG_REDIS_URL", "REDIS_URL", "redis_url"))
    queue_name: str = "lrpseg"
    key_prefix: str = "lrpseg"
    result_ttl: int = Field(24 * 3600, gt=0, description="seconds results and artifacts are kept")
    failure_ttl: int = Field(3600, gt=0, description="seconds failed jobs are kept (short: patient data)")
    tombstone_ttl: int = Field(7 * 24 * 3600, gt=0, description="seconds an expired job id answers 410, not 404")
    job_timeout: int = Field(300, gt=0, description="seconds a job may run before the worker stops it")
    job_retries: int = Field(1, ge=0, description="re-runs of a job whose worker died under it")
    max_queue: int = Field(256, gt=0, description="queued jobs beyond which submissions get 503")
    retry_after: int = Field(1, gt=0, description="seconds suggested in Retry-After")

    # API
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_upload_bytes: int = Field(64 * 1024 * 1024, gt=0)
    max_pixels: int = Field(8192 * 8192, gt=0)
    max_side: int = Field(16384, gt=0)
    max_wait: float = Field(60.0, ge=0, description="longest ?wait= accepted by POST /v1/explain")

    # Worker
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    torch_threads: int | None = Field(None, gt=0, description="torch intra-op threads per worker; default torch's")
    preload: Literal["all", "default"] = "all"
    worker_name: str | None = None
    parent_pid: int | None = Field(None, description="set by `lrpseg serve`: a worker whose parent dies stops")
    worker_heartbeat: float = Field(5.0, gt=0, description="seconds between a worker's announcements")

    # Embedded default (`lrpseg serve` without REDIS_URL)
    data_dir: Path = Path("var")
    workers: int = Field(1, ge=0)

    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("REDIS_URL must start with redis://, rediss:// or unix://")
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value not in ("auto", "cpu", "cuda") and not (value.startswith("cuda:") and value[5:].isdigit()):
            raise ValueError("device must be auto, cpu, cuda or cuda:N")
        return value

    @model_validator(mode="after")
    def _ttls(self) -> Settings:
        if self.failure_ttl > self.result_ttl:
            raise ValueError("failure_ttl must not exceed result_ttl")
        if self.tombstone_ttl < self.result_ttl:
            raise ValueError("tombstone_ttl must be at least result_ttl")
        return self

    @property
    def worker_max_age(self) -> float:
        """A worker not heard from for this long counts as gone."""
        return 3 * self.worker_heartbeat

    def require_redis_url(self) -> str:
        if not self.redis_url:
            raise RuntimeError("no Redis configured: set REDIS_URL (or use `lrpseg serve`, which embeds one)")
        return self.redis_url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
