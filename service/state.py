"""The objects a gateway process shares between requests, built once per app."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio
from celery import Celery

from service.streaming import PlayerCache
from workers.celery_app import create_celery_app, ensure_queue_folders
from workers.jobs import JobStore, make_job_store
from workers.settings import Settings
from workers.storage import AvatarStorage


@dataclass
class Services:
    """Settings, storage, job store, Celery client and player cache of one app."""

    settings: Settings
    storage: AvatarStorage
    jobs: JobStore
    celery: Celery
    players: PlayerCache
    redis: Any = None  # redis.Redis for /readyz, only when AVATARS_REDIS_URL is set
    _decode_limiter: anyio.CapacityLimiter | None = field(default=None, repr=False)

    def decode_limiter(self) -> anyio.CapacityLimiter:
        """Caps concurrent photo decodes; made on first use, inside the event loop."""
        if self._decode_limiter is None:
            self._decode_limiter = anyio.CapacityLimiter(self.settings.max_concurrent_decodes)
        return self._decode_limiter

    @classmethod
    def build(cls, settings: Settings) -> Services:
        redis_client = None
        if settings.redis_url:
            import redis

            redis_client = redis.Redis.from_url(
                settings.redis_url, socket_connect_timeout=2, socket_timeout=2
            )
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        ensure_queue_folders(settings)
        return cls(
            settings=settings,
            storage=AvatarStorage(settings.avatars_dir),
            jobs=make_job_store(settings),
            celery=create_celery_app(settings),
            players=PlayerCache(settings.player_cache_size),
            redis=redis_client,
        )

    def close(self) -> None:
        self.jobs.close()
        if self.redis is not None:
            self.redis.close()
        self.celery.close()
