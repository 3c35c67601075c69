"""All service and worker settings, read once from the environment (prefix LRPSEG_).

`REDIS_URL` is also read as-is (the docker-compose / Heroku convention); with none,
`lrpseg serve` starts an embedded Redis and passes its URL on.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote, unquote, urlsplit

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.security import (
    ANONYMOUS,
    KeyConfigError,
    configured_keys,
    dicomweb_url_problem,
    is_loopback,
    parse_ae,
    parse_host_rule,
)

# Peak bytes a worker job takes per image pixel (CPU, shipped U-Net), rounded up from
# benchmarks/memory.py for every composite: the default's windowed sweep takes 184 B/px at 2048²,
# but composites with relative ε (ours, montavon) run whole-image, ~530 B/px (docs/operations.md).
WORKER_BYTES_PER_PIXEL = 1000


@dataclass(frozen=True)
class StoreLocation:
    """A parsed LRPSEG_ARTIFACT_STORE (core.artifacts opens it; parsed here so Settings stays a leaf)."""

    kind: str  # redis | file | s3
    path: Path | None = None
    bucket: str = ""
    prefix: str = ""


def parse_location(value: str) -> StoreLocation:
    """`redis`, `file:///absolute/path` or `s3://bucket[/prefix]`; ValueError says what is wrong."""
    if value == "redis":
        return StoreLocation("redis")
    parts = urlsplit(value)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValueError(f"artifact store {value!r}: a file store is file:///absolute/path")
        return StoreLocation("file", path=Path(unquote(parts.path)))
    if parts.scheme == "s3":
        if not parts.netloc or parts.query or parts.fragment:
            raise ValueError(f"artifact store {value!r}: an S3 store is s3://bucket or s3://bucket/prefix")
        return StoreLocation("s3", bucket=parts.netloc, prefix=parts.path.strip("/"))
    raise ValueError(f"artifact store {value!r}: use redis, file:///path or s3://bucket/prefix")


# the DICOM attributes a routing rule may match (docs/pacs.md, "Routing")
ROUTE_ATTRIBUTES = ("Modality", "BodyPartExamined", "SeriesDescription")
AE_TITLE = re.compile(r"[ -~]{1,16}")  # 1-16 printable ASCII characters (DICOM AE value representation)


class DicomRoute(BaseModel):
    """One routing rule of LRPSEG_DICOM_ROUTES: a received series whose attributes match every
    pattern of `match` (case-insensitive shell globs, e.g. "CT", "CHEST*") goes to `model`.
    An empty `match` matches every series (a default as the last rule)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    match: dict[str, str] = Field(default_factory=dict)
    model: str = Field(min_length=1, description="name@version (or name: its newest version) in the registry")

    @field_validator("match")
    @classmethod
    def _attributes(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(ROUTE_ATTRIBUTES))
        if unknown:
            raise ValueError(f"a route matches on {', '.join(ROUTE_ATTRIBUTES)} only, not {', '.join(unknown)}")
        return value


def parse_ae_entry(entry: str) -> tuple[str, str | None]:
    """`AE` or `AE=key-name` of LRPSEG_DIMSE_ALLOWED_AES: (AE title, the key name owning its jobs)."""
    title, _, owner = entry.partition("=")
    title, owner = title.strip(), owner.strip()
    if not AE_TITLE.fullmatch(title) or title != title.strip() or "\\" in title:
        raise ValueError(f"LRPSEG_DIMSE_ALLOWED_AES entry {entry!r}: an AE title is 1-16 printable characters")
    if "=" in entry and not owner:
        raise ValueError(f"LRPSEG_DIMSE_ALLOWED_AES entry {entry!r}: name the API key after '='")
    return title, owner or None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LRPSEG_", populate_by_name=True, extra="ignore")

    # Redis / RQ
    redis_url: str | None = Field(None, validation_alias=AliasChoices("LRPSEG_REDIS_URL", "REDIS_URL", "redis_url"))
    # Redis through Sentinel (instead of REDIS_URL; takes precedence when both are set)
    redis_sentinels: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="host:port,host:port,... of the Sentinels that watch the master"
    )
    redis_master: str | None = Field(None, description="the master's name in Sentinel (sentinel monitor NAME ...)")
    redis_password: SecretStr | None = Field(None, description="password of the Redis master and replicas (AUTH)")
    redis_sentinel_password: SecretStr | None = Field(None, description="password of the Sentinels, if they have one")
    redis_wait_replicas: int = Field(
        0, ge=0, description="replicas that must have a job before its 202 (Redis WAIT); 1 with Sentinel"
    )
    redis_wait_timeout: float = Field(1.0, gt=0, description="seconds the API waits for those replicas, else 503")
    redis_password_file: Path | None = Field(
        None, description="file holding Redis's AUTH password (a compose/k8s secret); added to REDIS_URL"
    )
    key_redis_url: str | None = Field(
        None,
        description="Redis for the per-job data keys (core.sealing); run it without persistence so a deleted "
        "key leaves no copy on disk; default: REDIS_URL",
    )
    queue_name: str = "lrpseg"
    key_prefix: str = "lrpseg"
    result_ttl: int = Field(24 * 3600, gt=0, description="seconds results and artifacts are kept")
    failure_ttl: int = Field(3600, gt=0, description="seconds failed jobs are kept (short: patient data)")
    tombstone_ttl: int = Field(7 * 24 * 3600, gt=0, description="seconds an expired job id answers 410, not 404")
    job_timeout: int = Field(300, gt=0, description="seconds a job may run before the worker stops it")
    job_retries: int = Field(1, ge=0, description="re-runs of a job whose worker died under it")
    max_queue: int = Field(256, gt=0, description="queued jobs beyond which submissions get 503")
    retry_after: int = Field(1, gt=0, description="seconds suggested in Retry-After")
    # Faults (docs/operations.md): a job whose worker stops renewing its claim for
    # `job_lost_after` s is re-queued (retries left) or failed as worker_lost by the next
    # registry clean-up, run every `maintenance_interval` s: detected within their sum.
    job_lost_after: int = Field(30, ge=3, description="seconds without a claim renewal before a job counts as lost")
    maintenance_interval: int = Field(10, gt=0, description="seconds between abandoned-job clean-ups")
    redis_timeout: float = Field(5.0, gt=0, description="socket timeout of the API's Redis client (dead Redis: 503)")
    shutdown_grace: float = Field(15.0, ge=0, description="seconds `lrpseg serve` lets a stopping worker finish")

    # Artifacts (core/artifacts.py; docs/operations.md, "Running on several machines")
    artifact_store: str = Field(
        "redis", description="redis | file:///path | s3://bucket/prefix (S3: the standard AWS_* variables)"
    )
    artifact_redirect: bool = Field(
        False, description="artifact GETs answer 307 to a presigned URL of the object store (S3 only)"
    )
    artifact_url_ttl: int = Field(300, gt=0, le=7 * 24 * 3600, description="seconds a presigned artifact URL works")

    # API
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_upload_bytes: int = Field(64 * 1024 * 1024, gt=0)
    body_timeout: float = Field(30.0, gt=0, description="seconds a request body may go without bytes before 408")
    max_pixels: int = Field(8192 * 8192, gt=0, description="pixels per image; lowered to fit worker_memory")
    max_side: int = Field(16384, gt=0)
    max_voxels: int = Field(256**3, gt=0, description="voxels (D*H*W) of one volume; more is a 413")
    max_wait: float = Field(60.0, ge=0, description="longest ?wait= accepted by POST /v1/explain")

    # Auth and limits (docs/security.md)
    auth: Literal["auto", "on", "off"] = Field(
        "auto", description="auto: keys required when any are configured; off is refused off-loopback unless explicit"
    )
    api_keys: str | None = Field(None, description="name:sha256hex,... (lrpseg keys new NAME)")
    api_keys_file: Path | None = Field(None, description="one 'name sha256hex' per line, # comments")
    metrics_auth: bool = Field(False, description="/metrics needs an API key too")
    max_jobs_per_key: int = Field(128, gt=0, description="queued + started jobs per key beyond which it gets 429")
    rate_limit: float = Field(50.0, ge=0, description="requests per second per key under /v1 (token refill); 0 = off")
    rate_burst: int = Field(200, gt=0, description="token bucket size: requests a key may make at once")
    unauth_rate_limit: float = Field(
        2.0, ge=0, description="requests per second per client address that carry no valid key (401s); 0 = off"
    )
    unauth_rate_burst: int = Field(20, gt=0, description="token bucket size for requests without a valid key")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated origins allowed by CORS; empty = CORS off"
    )
    access_log: bool = Field(True, description="one log line per request: method, route template, status, duration")

    # Batches and callbacks (docs/interop.md)
    max_batch_images: int = Field(64, gt=0, description="images in one POST /v1/batches")
    max_archive_members: int = Field(256, gt=0, description="entries a batch zip may list (checked before reading)")
    max_archive_bytes: int = Field(128 * 1024 * 1024, gt=0, description="total uncompressed size of a batch zip")
    callback_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated hosts callbacks may go to: names, *.suffix, IPs, CIDRs; empty = callbacks off",
    )
    callback_require_https: bool = False
    callback_secret: SecretStr | None = Field(None, description="HMAC-SHA256 key that signs callback bodies")
    callback_attempts: int = Field(6, ge=1, le=50, description="deliveries tried before a callback is failed")
    callback_base_delay: float = Field(2.0, gt=0, description="seconds before the 2nd attempt; doubles each time")
    callback_max_delay: float = Field(600.0, gt=0, description="longest wait between two attempts")
    callback_timeout: float = Field(5.0, gt=0, description="seconds one HTTP attempt may take (connect + answer)")
    callback_lease: float = Field(30.0, gt=0, description="seconds a claimed delivery stays claimed before retry")
    callback_poll: float = Field(0.5, gt=0, description="longest sleep of a deliverer between checks")

    # Receiving DICOM (docs/pacs.md, "Receiving studies"): STOW-RS and the DIMSE C-STORE SCP
    series_quiet_seconds: float = Field(
        10.0, gt=0, description="seconds without a new instance after which a received series becomes a job"
    )
    series_sweep_interval: float = Field(1.0, gt=0, description="seconds between the API's checks for quiet series")
    series_ttl: int = Field(
        3600, gt=0, description="seconds an unfinished received series is kept after its last instance, then destroyed"
    )
    series_max_instances: int = Field(2048, gt=0, description="instances one received series may hold")
    series_max_open: int = Field(
        64, gt=0, description="series one API key (or calling AE) may have open at once; more: FailureReason A700"
    )
    series_max_bytes: int = Field(
        512 * 1024 * 1024, gt=0, description="bytes of DICOM one received series may hold (sealed in Redis)"
    )
    dicom_routes: Annotated[list[DicomRoute], NoDecode] = Field(
        default_factory=list,
        description='JSON list of {"match": {"Modality": "CT", ...}, "model": "name@version"}; first match wins',
    )
    dimse_ae_title: str = Field("LRPSEG", description="the C-STORE SCP's own AE title (`lrpseg dimse`)")
    dimse_host: str = Field("127.0.0.1", description="address the C-STORE SCP listens on")
    dimse_port: int = Field(11112, ge=0, le=65535, description="port of the C-STORE SCP")
    dimse_allowed_aes: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated calling AE titles allowed to send, each AE or AE=key-name (the API key "
        "whose jobs its series become); empty = every association is rejected",
    )

    # DICOM outputs and sending them to a PACS (docs/pacs.md); attempts and backoff as for callbacks
    dicom_series_base: int = Field(
        1000, ge=0, le=2**30, description="output SeriesNumber = base + 10 x source SeriesNumber + 1 (SEG) / 2 (map)"
    )
    dicomweb_destination: str | None = Field(None, description="DICOMweb root URL results are STOW-RS'd to")
    dicomweb_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated hosts DICOMweb may reach (destination, per-job destination, pull sources)",
    )
    dicomweb_token: SecretStr | None = Field(None, description="Bearer token sent to DICOMweb servers")
    dicomweb_username: str | None = Field(None, description="HTTP Basic user for DICOMweb servers")
    dicomweb_password: SecretStr | None = None
    dimse_destination: str | None = Field(None, description="AE results are C-STOREd to: AET@host:port")
    # (lrpseg's own AE title when it C-STOREs results: dimse_ae_title, the SCP's)
    dicom_send_timeout: float = Field(20.0, gt=0, description="seconds one STOW-RS or C-STORE attempt may take")

    # Worker
    worker_memory: int = Field(
        8 * 1024**3,
        gt=0,
        description="bytes one job may take in a worker; max_pixels is capped at worker_memory / WORKER_BYTES_PER_PIXEL",
    )
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    torch_threads: int | None = Field(None, gt=0, description="torch intra-op threads per worker; default torch's")
    preload: Literal["all", "default"] = "all"
    deterministic: bool = Field(True, description="CUDA: deterministic cuDNN/cuBLAS kernels (docs/interop.md)")
    worker_name: str | None = None
    parent_pid: int | None = Field(None, description="set by `lrpseg serve`: a worker whose parent dies stops")
    worker_heartbeat: float = Field(5.0, gt=0, description="seconds between a worker's announcements")
    heartbeat_file: Path | None = Field(
        None, description="a file the worker touches on each heartbeat; `lrpseg worker --check` reads its age"
    )
    batch_max: int = Field(
        1,
        ge=1,
        le=64,
        description="queued jobs of one model, shape and pass params a worker runs as one batch; 1 = off",
    )  # off by default: a batched result differs from a single one in the last bits (docs/service.md, Batching)

    # Embedded default (`lrpseg serve` without REDIS_URL)
    data_dir: Path = Path("var")
    workers: int = Field(1, ge=0)

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "text"] = Field(
        "auto", description="auto: text on a terminal, JSON otherwise (a pipe, a file, a container's log)"
    )

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("REDIS_URL must start with redis://, rediss:// or unix://")
        return value

    @field_validator("redis_sentinels", mode="before")
    @classmethod
    def _split_sentinels(cls, value: object) -> object:
        if isinstance(value, str):
            return [h.strip() for h in value.split(",") if h.strip()]
        return value

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinel_addresses(cls, value: list[str]) -> list[str]:
        for entry in value:
            host, _, port = entry.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"LRPSEG_REDIS_SENTINELS entry {entry!r} must be host:port")
        return value

    @model_validator(mode="after")
    def _sentinel_master(self) -> Settings:
        if self.redis_sentinels and not self.redis_master:
            raise ValueError("LRPSEG_REDIS_SENTINELS needs LRPSEG_REDIS_MASTER (the name the Sentinels monitor)")
        return self

    @model_validator(mode="after")
    def _wait_inside_socket_timeout(self) -> Settings:
        # A WAIT longer than the socket timeout times out client-side and its late reply would be
        # read by the connection's next command.
        if self.redis_wait_replicas > 0 and self.redis_wait_timeout >= self.redis_timeout:
            raise ValueError(
                f"LRPSEG_REDIS_WAIT_TIMEOUT ({self.redis_wait_timeout} s) must be below LRPSEG_REDIS_TIMEOUT "
                f"({self.redis_timeout} s)"
            )
        return self

    @field_validator("artifact_store")
    @classmethod
    def _artifact_store(cls, value: str) -> str:
        parse_location(value)  # ValueError says what is wrong
        return value

    @field_validator("callback_allowed_hosts", mode="before")
    @classmethod
    def _hosts(cls, value: object) -> object:
        if isinstance(value, str):
            value = [h for h in (part.strip() for part in value.split(",")) if h]
        return value

    @field_validator("callback_allowed_hosts")
    @classmethod
    def _valid_hosts(cls, value: list[str]) -> list[str]:
        for entry in value:
            parse_host_rule(entry)  # the one parser of these entries; ValueError names the bad entry
        return [entry.lower() for entry in value]

    @field_validator("dicomweb_allowed_hosts", mode="before")
    @classmethod
    def _dicomweb_hosts(cls, value: object) -> object:
        return cls._hosts(value)

    @field_validator("dicomweb_allowed_hosts")
    @classmethod
    def _valid_dicomweb_hosts(cls, value: list[str]) -> list[str]:
        return cls._valid_hosts(value)

    @model_validator(mode="after")
    def _pacs_out(self) -> Settings:
        """A configured destination must be one the allow-list admits, and an AE must parse."""
        if self.dicomweb_destination is not None:
            problem = dicomweb_url_problem(self.dicomweb_destination, self.dicomweb_allowed_hosts)
            if problem:
                raise ValueError(f"dicomweb_destination: {problem}")
        if self.dimse_destination is not None:
            parse_ae(self.dimse_destination)  # ValueError says what is wrong
        if self.callback_lease <= self.dicom_send_timeout:
            raise ValueError("callback_lease must exceed dicom_send_timeout (a claimed send must end inside its lease)")
        return self

    @field_validator("dicom_routes", mode="before")
    @classmethod
    def _routes_json(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return json.loads(value) if value.strip() else []
            except json.JSONDecodeError as exc:
                raise ValueError(f"LRPSEG_DICOM_ROUTES is not JSON: {exc}") from None
        return value

    @field_validator("dimse_ae_title")
    @classmethod
    def _own_ae_title(cls, value: str) -> str:
        if not AE_TITLE.fullmatch(value) or value != value.strip():
            raise ValueError("LRPSEG_DIMSE_AE_TITLE must be 1-16 printable characters without edge spaces")
        return value

    @field_validator("dimse_allowed_aes", mode="before")
    @classmethod
    def _split_aes(cls, value: object) -> object:
        if isinstance(value, str):
            return [e.strip() for e in value.split(",") if e.strip()]
        return value

    @field_validator("dimse_allowed_aes")
    @classmethod
    def _valid_aes(cls, value: list[str]) -> list[str]:
        titles = [parse_ae_entry(entry)[0] for entry in value]
        if len(set(titles)) != len(titles):
            raise ValueError("LRPSEG_DIMSE_ALLOWED_AES names an AE title twice")
        return value

    @model_validator(mode="after")
    def _dimse_owners(self) -> Settings:
        """With API keys, each calling AE must name the key whose jobs its series become."""
        if self.auth_required:
            anonymous = [e for e in self.dimse_allowed_aes if parse_ae_entry(e)[1] is None]
            if anonymous:
                raise ValueError(
                    f"LRPSEG_DIMSE_ALLOWED_AES {anonymous}: with API keys, write AE=key-name (whose jobs they become)"
                )
        return self

    def dimse_owners(self) -> dict[str, str]:
        """Calling AE title -> the principal owning its series (`anonymous` when auth is off)."""
        return {title: owner or ANONYMOUS for title, owner in map(parse_ae_entry, self.dimse_allowed_aes)}

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [o.strip() for o in value.split(",") if o.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+", origin):
                raise ValueError(f"CORS origin {origin!r} must be scheme://host[:port] (no path) or *")
        return value

    @model_validator(mode="after")
    def _auth(self) -> Settings:
        """Fail start-up on a malformed key, and on an open API reachable from other machines."""
        try:
            keys = configured_keys(self.api_keys, self.api_keys_file)
        except KeyConfigError as exc:
            raise ValueError(str(exc)) from None
        if self.auth == "on" and not keys:
            raise ValueError("LRPSEG_AUTH=on but no API keys are configured (LRPSEG_API_KEYS or LRPSEG_API_KEYS_FILE)")
        if self.auth == "auto" and not keys and not is_loopback(self.host):
            raise ValueError(
                f"the API would listen on {self.host} without authentication: configure API keys "
                "(lrpseg keys new NAME; LRPSEG_API_KEYS or LRPSEG_API_KEYS_FILE) or set LRPSEG_AUTH=off explicitly"
            )
        return self

    @property
    def auth_required(self) -> bool:
        if self.auth == "off":
            return False
        return self.auth == "on" or bool(self.api_keys and self.api_keys.strip()) or self.api_keys_file is not None

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value not in ("auto", "cpu", "cuda") and not (value.startswith("cuda:") and value[5:].isdigit()):
            raise ValueError("device must be auto, cpu, cuda or cuda:N")
        return value

    @model_validator(mode="after")
    def _redirect_needs_urls(self) -> Settings:
        if self.artifact_redirect and parse_location(self.artifact_store).kind != "s3":
            raise ValueError("artifact_redirect needs an s3:// artifact store (only it has presigned URLs)")
        return self

    @model_validator(mode="after")
    def _ttls(self) -> Settings:
        if self.failure_ttl > self.result_ttl:
            raise ValueError("failure_ttl must not exceed result_ttl")
        if self.tombstone_ttl < self.result_ttl:
            raise ValueError("tombstone_ttl must be at least result_ttl")
        if self.callback_lease <= self.callback_timeout:
            raise ValueError("callback_lease must exceed callback_timeout (a claimed send must end inside its lease)")
        if self.callback_allowed_hosts and self.callback_secret is None:
            raise ValueError("callback_allowed_hosts needs callback_secret: every callback is signed")
        return self

    @property
    def pixel_limit(self) -> int:
        """The pixels one image may have: max_pixels, capped by what a worker's memory budget holds
        (benchmarks/memory.py measures the bytes per pixel; docs/operations.md, "Memory")."""
        return max(1, min(self.max_pixels, self.worker_memory // WORKER_BYTES_PER_PIXEL))

    @property
    def worker_max_age(self) -> float:
        """A worker not heard from for this long counts as gone."""
        return 3 * self.worker_heartbeat

    @property
    def claim_renewal(self) -> float:
        """A running job's claim is renewed this often: two renewals may be late before it counts as lost."""
        return self.job_lost_after / 3

    @property
    def redis_configured(self) -> bool:
        """A Redis to use is named (a URL or Sentinels); else `lrpseg serve` embeds one."""
        return bool(self.redis_url or self.redis_sentinels)

    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [(host.strip("[]"), int(port)) for host, _, port in (e.rpartition(":") for e in self.redis_sentinels)]

    def require_redis_url(self) -> str:
        """REDIS_URL, with the password from `redis_password_file` when one is configured."""
        if not self.redis_url:
            raise RuntimeError("no Redis configured: set REDIS_URL (or use `lrpseg serve`, which embeds one)")
        if self.redis_password_file is None:
            return self.redis_url
        password = quote(self.redis_password_file.read_text().strip(), safe="")
        scheme, rest = self.redis_url.split("://", 1)
        if scheme == "unix":
            return f"{self.redis_url}{'&' if '?' in rest else '?'}password={password}"
        return f"{scheme}://:{password}@{rest.rsplit('@', 1)[-1]}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
