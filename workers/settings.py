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

from pydantic import Field, field_validator
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
    redis_visibility_timeout_s: int = Field(
        default=3600,
        ge=60,
        description="Redis: a task neither acked nor rejected within this time (its worker "
        "vanished) is handed to another worker. Must exceed the slowest stage.",
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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this process, read once from the environment."""
    return Settings()
