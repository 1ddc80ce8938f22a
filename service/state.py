"""The objects a gateway process shares between requests, built once per app."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio
from celery import Celery
from starlette.concurrency import run_in_threadpool

from service.auth import CachedKeys, make_key_store
from service.idempotency import IdempotencyStore, make_idempotency_store
from service.limits import (
    AsyncRedis,
    MemoryRateLimiter,
    MemoryStreamSlots,
    RedisRateLimiter,
    RedisStreamSlots,
)
from service.streaming import PlayerCache
from workers.celery_app import create_celery_app, ensure_queue_folders
from workers.jobs import Job, JobStore, RedisJobStore, make_job_store
from workers.settings import Settings
from workers.storage import AvatarStorage, is_valid_id


@dataclass
class Services:
    """Settings, storage, job store, Celery client, player cache, API keys and limits
    of one app."""

    settings: Settings
    storage: AvatarStorage
    jobs: JobStore
    celery: Celery
    players: PlayerCache
    keys: CachedKeys
    idempotency: IdempotencyStore
    rate_limiter: MemoryRateLimiter | RedisRateLimiter
    stream_slots: MemoryStreamSlots | RedisStreamSlots
    redis: Any = None  # redis.Redis for /readyz, only when AVATARS_REDIS_URL is set
    redis_async: AsyncRedis | None = None  # for the limiters, only with Redis
    _decode_limiter: anyio.CapacityLimiter | None = field(default=None, repr=False)

    def decode_limiter(self) -> anyio.CapacityLimiter:
        """Caps concurrent photo decodes; made on first use, inside the event loop."""
        if self._decode_limiter is None:
            self._decode_limiter = anyio.CapacityLimiter(self.settings.max_concurrent_decodes)
        return self._decode_limiter

    @classmethod
    def build(cls, settings: Settings) -> Services:
        redis_client = None
        redis_async = None
        rate_limiter: MemoryRateLimiter | RedisRateLimiter
        stream_slots: MemoryStreamSlots | RedisStreamSlots
        if settings.redis_url:
            import redis

            redis_client = redis.Redis.from_url(
                settings.redis_url, socket_connect_timeout=2, socket_timeout=2
            )
            redis_async = AsyncRedis(settings.redis_url)
            rate_limiter = RedisRateLimiter(
                redis_async, settings.rate_limit_per_s, settings.rate_limit_burst
            )
            stream_slots = RedisStreamSlots(redis_async, settings.max_streams_per_key)
        else:
            rate_limiter = MemoryRateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
            stream_slots = MemoryStreamSlots(settings.max_streams_per_key)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        ensure_queue_folders(settings)
        return cls(
            settings=settings,
            storage=AvatarStorage(settings.avatars_dir),
            jobs=make_job_store(settings),
            celery=create_celery_app(settings),
            players=PlayerCache(settings.player_cache_size),
            keys=CachedKeys(make_key_store(settings), settings.auth_cache_s),
            idempotency=make_idempotency_store(settings),
            rate_limiter=rate_limiter,
            stream_slots=stream_slots,
            redis=redis_client,
            redis_async=redis_async,
        )

    async def get_job(self, job_id: str) -> Job | None:
        """A job, read without a thread hop where the store allows (Redis: async client)."""
        if not is_valid_id(job_id):
            return None
        if self.redis_async is not None and isinstance(self.jobs, RedisJobStore):
            data = await self.redis_async.get().hgetall(self.jobs.key(job_id))
            return RedisJobStore.job_from_hash(data)
        return await run_in_threadpool(self.jobs.get, job_id)

    async def aclose(self) -> None:
        """Close the async clients (on the loop that used them)."""
        if self.redis_async is not None:
            await self.redis_async.aclose()

    def close(self) -> None:
        self.jobs.close()
        self.keys.store.close()
        self.idempotency.close()
        if self.redis is not None:
            self.redis.close()
        self.celery.close()
