"""One typed settings object for the gateway, the workers and the CLI.

Every knob is read from the environment with the ``AVATARS_`` prefix (for example
``AVATARS_DATA_DIR``, ``AVATARS_REDIS_URL``), so the gateway and the Celery workers,
which run in different processes, see the same configuration without passing it
around. ``get_settings()`` caches the object per process; tests build their own
``Settings(...)`` and hand it to ``service.app.create_app`` instead.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Configuration of the avatar service (environment prefix ``AVATARS_``)."""

    model_config = SettingsConfigDict(env_prefix="AVATARS_", extra="ignore")

    data_dir: Path = Field(
        default=Path("./data"),
        description="Root of all state: avatars/, jobs.sqlite, queue/ (embedded mode).",
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis URL (broker + job store). Unset: embedded mode "
        "(filesystem queue + SQLite job store, one worker child of `avatars serve`).",
    )
    host: str = Field(default="127.0.0.1", description="Address `avatars serve` binds.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port `avatars serve` binds.")

    max_upload_mb: float = Field(
        default=20, gt=0, description="Largest accepted upload request body, in MiB (all photos)."
    )
    max_pixels: int = Field(
        default=50_000_000, gt=0, description="Largest accepted photo, width x height."
    )
    max_photos: int = Field(default=8, ge=1, description="Most photos per avatar.")
    max_concurrent_decodes: int = Field(
        default=2,
        ge=1,
        description="Uploaded photos decoded at once for validation (bounds memory: a "
        "50 MP photo takes ~150 MB while it is checked).",
    )

    stream_max_frames: int = Field(
        default=10_000, ge=1, description="Largest `frames=N` a stream request may ask for."
    )
    stream_jpeg_quality: int = Field(default=85, ge=1, le=95, description="JPEG quality.")
    player_cache_size: int = Field(
        default=4, ge=1, description="Loaded avatars kept in memory by the stream endpoint."
    )

    task_max_retries: int = Field(
        default=2, ge=0, description="Retries of a stage after a transient pipeline error."
    )
    task_retry_delay_s: float = Field(default=5.0, ge=0, description="Delay before a retry.")
    task_retry_max_delay_s: float = Field(
        default=300.0, ge=0, description="Longest delay between retries (exponential backoff)."
    )
    redis_visibility_timeout_s: int = Field(
        default=3600,
        ge=5,
        description="Redis: a task neither acked nor rejected within this time (its worker "
        "vanished) is handed to another worker. Must exceed the slowest stage.",
    )
    task_time_limit_s: float | None = Field(
        default=None,
        gt=0,
        description="Hard time limit of one stage (the pool process is killed). Default: "
        "90 % of the visibility timeout; must stay below it.",
    )
    store_outage_wait_s: float = Field(
        default=60.0, ge=0, description="How long a worker waits for the job store (Redis) "
        "to come back before handing its message back to the broker.",
    )
    task_max_deliveries: int = Field(
        default=3,
        ge=1,
        description="Deliveries of one stage of a job that did not end (its worker died) "
        "before the job fails with worker_crashed: a photo that kills workers cannot loop.",
    )

    allow_anonymous: bool | None = Field(
        default=None,
        description="Serve requests without an API key (tenant 'anonymous'). Unset: only "
        "in the embedded mode and only when the gateway binds a loopback address.",
    )
    auth_cache_s: float = Field(
        default=5.0, ge=0, description="How long a gateway caches a looked-up API key "
        "(a revoked key stops working within this time; 0: look up on every request).",
    )
    rate_limit_per_s: float = Field(
        default=50.0, gt=0, description="Sustained requests per second per API key."
    )
    rate_limit_burst: int = Field(
        default=100, ge=1, description="Requests per API key allowed at once above the rate."
    )
    max_streams_per_key: int = Field(
        default=4, ge=1, description="Concurrent streams (MJPEG, MP4 renders, live sockets) per key."
    )
    idempotency_ttl_s: int = Field(
        default=86400, ge=60, description="How long an Idempotency-Key is remembered."
    )
    events_max_s: float = Field(
        default=600.0, gt=0, description="Longest life of one job event stream (SSE); "
        "clients reconnect for more."
    )
    events_heartbeat_s: float = Field(
        default=15.0, gt=0, description="Comment line sent on an idle event stream."
    )
    events_poll_s: float = Field(
        default=0.5, gt=0, description="How often an event stream looks at its job."
    )
    log_format: Literal["json", "text"] = Field(
        default="json", description="Log lines of `avatars serve` and `avatars worker`."
    )
    access_log: bool = Field(default=True, description="One log line per HTTP request.")
    warm_models: bool = Field(
        default=True,
        description="Workers load the body and inpainting models when they start, not on the first job.",
    )
    worker_heartbeat_s: float = Field(
        default=2.0, gt=0, description="How often an embedded worker refreshes its heartbeat."
    )
    worker_stale_s: float = Field(
        default=15.0, gt=0, description="Heartbeat age after which /readyz calls a worker dead."
    )

    @field_validator("redis_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        """`AVATARS_REDIS_URL=` (empty) means embedded mode, like leaving it unset."""
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @model_validator(mode="after")
    def _time_limit_below_visibility(self) -> Settings:
        if self.task_time_limit_s is not None and (
            self.task_time_limit_s >= self.redis_visibility_timeout_s
        ):
            raise ValueError(
                "task_time_limit_s must be below redis_visibility_timeout_s, or a task still "
                "running would be handed to a second worker"
            )
        return self

    @property
    def time_limit_s(self) -> float:
        """Hard time limit of one stage: below the visibility timeout."""
        if self.task_time_limit_s is not None:
            return self.task_time_limit_s
        return 0.9 * self.redis_visibility_timeout_s

    @property
    def soft_time_limit_s(self) -> float:
        """Soft limit: the stage is told to stop (job fails with ``timeout``) first."""
        hard = self.time_limit_s
        return max(hard * 0.5, hard - max(5.0, 0.05 * hard))

    @property
    def anonymous_allowed(self) -> bool:
        """Requests without a key are served (see ``allow_anonymous``)."""
        if self.allow_anonymous is not None:
            return self.allow_anonymous
        return self.embedded and is_loopback_host(self.host)

    @property
    def embedded(self) -> bool:
        """True when no Redis is configured: filesystem queue and SQLite job store."""
        return self.redis_url is None

    @property
    def avatars_dir(self) -> Path:
        return self.data_dir / "avatars"

    @property
    def queue_dir(self) -> Path:
        return self.data_dir / "queue"

    @property
    def jobs_db_path(self) -> Path:
        return self.data_dir / "jobs.sqlite"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def is_loopback_host(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this process, read once from the environment."""
    return Settings()
