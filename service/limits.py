"""Per-key request rate and concurrent streams.

Rate: GCRA (the generic cell rate algorithm, a token bucket kept as one timestamp per
key): ``rate_limit_per_s`` sustained, ``rate_limit_burst`` at once. With Redis the
state is one key per API key, updated by a Lua script using Redis's clock, so every
gateway process shares it; a gateway takes up to ``burst // 8`` (at most 16) tokens per
round trip and spends them within a second, so a busy key costs a Redis call every few
requests, not every request (unspent tokens lapse: the limit can only get stricter).
In the embedded mode (one gateway process) the state lives in memory. A Redis outage
does not take the API down with it: the limiter then lets requests through and logs a
warning (the job store answers 503 anyway).

Streams: a slot per running stream (MJPEG, MP4 render, live socket). With Redis the
slots of a key are members of a sorted set scored by a lease expiry that the stream
refreshes while it runs, so a crashed gateway's slots free themselves; in the
embedded mode a counter in memory.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio

log = logging.getLogger(__name__)

#: Seconds between two warnings about an unreachable Redis.
_WARN_EVERY_S = 10.0


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: float = 0.0

    @property
    def retry_after_header(self) -> str:
        return str(max(1, math.ceil(self.retry_after_s)))


class _Throttled:
    def __init__(self) -> None:
        self.last = 0.0

    def warn(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self.last >= _WARN_EVERY_S:
            self.last = now
            log.warning(message, *args)


class AsyncRedis:
    """A ``redis.asyncio`` client bound to the event loop that uses it.

    TestClient (and some servers) run an app's lifespans on different loops; a client
    made on one loop must not be used on another, so a new loop gets a new client.
    """

    def __init__(self, url: str, timeout_s: float = 1.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            import redis.asyncio

            self._client = redis.asyncio.Redis.from_url(
                self.url,
                socket_connect_timeout=self.timeout_s,
                socket_timeout=self.timeout_s,
                decode_responses=True,
            )
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._client = None


# ------------------------------------------------------------------------- rate
class MemoryRateLimiter:
    """GCRA in one process's memory (embedded mode)."""

    def __init__(self, rate_per_s: float, burst: int, capacity: int = 100_000) -> None:
        self.interval = 1.0 / rate_per_s
        self.burst = burst
        self.capacity = capacity
        self._tat: dict[str, float] = {}
        self._lock = threading.Lock()

    def hit_now(self, key: str, now: float | None = None) -> Decision:
        now = time.monotonic() if now is None else now
        with self._lock:
            tat = max(self._tat.get(key, now), now)
            new_tat = tat + self.interval
            allow_at = new_tat - self.burst * self.interval
            if allow_at > now:
                return Decision(False, allow_at - now)
            if len(self._tat) >= self.capacity and key not in self._tat:
                # forget buckets that are full again (their TAT is in the past)
                for stale in [k for k, v in self._tat.items() if v <= now]:
                    del self._tat[stale]
            self._tat[key] = new_tat
            return Decision(True)

    async def hit(self, key: str) -> Decision:
        return self.hit_now(key)

    async def aclose(self) -> None:
        return None


# Takes up to ARGV[3] tokens at once; returns {granted, seconds until the next token}.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local available = math.floor((now + burst * interval - tat) / interval + 1e-9)
if available < 1 then
  return {0, tostring(tat + interval - burst * interval - now)}
end
local granted = math.min(want, available)
local new_tat = tat + granted * interval
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil((new_tat - now) * 1000) + 1000)
return {granted, '0'}
"""


class RedisRateLimiter:
    """GCRA in Redis: shared by every gateway process (tokens fetched a few at a time)."""

    #: Seconds a gateway may hold tokens it took but has not spent yet.
    HOLD_S = 1.0

    def __init__(self, redis: AsyncRedis, rate_per_s: float, burst: int,
                 prefix: str = "avatars:rate:", batch: int | None = None) -> None:
        self.redis = redis
        self.interval = 1.0 / rate_per_s
        self.burst = burst
        self.prefix = prefix
        self.batch = batch if batch is not None else max(1, min(16, burst // 8))
        self._tokens: dict[str, tuple[int, float]] = {}
        self._sha: str | None = None
        self._warn = _Throttled()

    async def hit(self, key: str) -> Decision:
        from redis.exceptions import NoScriptError, RedisError

        now = time.monotonic()
        left, until = self._tokens.get(key, (0, 0.0))
        if left > 0 and now < until:
            self._tokens[key] = (left - 1, until)
            return Decision(True)
        client = self.redis.get()
        args = [repr(self.interval), str(self.burst), str(self.batch)]
        try:
            try:
                if self._sha is None:
                    raise NoScriptError("not loaded")
                allowed, wait = await client.evalsha(self._sha, 1, self.prefix + key, *args)
            except NoScriptError:
                self._sha = await client.script_load(_GCRA)
                allowed, wait = await client.evalsha(self._sha, 1, self.prefix + key, *args)
        except (RedisError, OSError) as exc:
            self._warn.warn("rate limiter: Redis unavailable (%s); not limiting", exc)
            return Decision(True)
        granted = int(allowed)
        if granted < 1:
            return Decision(False, float(wait))
        if granted > 1:
            if len(self._tokens) > 100_000:
                self._tokens.clear()
            self._tokens[key] = (granted - 1, now + self.HOLD_S)
        return Decision(True)


# ---------------------------------------------------------------------- streams
class StreamSlot:
    """One held stream slot; ``release`` is idempotent."""

    def __init__(self, owner: Any, key: str, token: str) -> None:
        self.owner = owner
        self.key = key
        self.token = token
        self.refreshed = time.monotonic()
        self.released = False

    async def refresh_if_due(self) -> None:
        if not self.released and time.monotonic() - self.refreshed > self.owner.refresh_s:
            self.refreshed = time.monotonic()
            await self.owner.refresh(self)

    async def release(self) -> None:
        if not self.released:
            self.released = True
            await self.owner.release(self)


class MemoryStreamSlots:
    """Concurrent streams per key in one process's memory (embedded mode)."""

    refresh_s = math.inf

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    async def acquire(self, key: str) -> StreamSlot | None:
        with self._lock:
            held = self._held.get(key, 0)
            if held >= self.limit:
                return None
            self._held[key] = held + 1
        return StreamSlot(self, key, "")

    async def refresh(self, slot: StreamSlot) -> None:
        return None

    async def release(self, slot: StreamSlot) -> None:
        with self._lock:
            left = self._held.get(slot.key, 0) - 1
            if left > 0:
                self._held[slot.key] = left
            else:
                self._held.pop(slot.key, None)

    def held(self, key: str) -> int:
        with self._lock:
            return self._held.get(key, 0)


_ACQUIRE_SLOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])) + 60)
return 1
"""

_REFRESH_SLOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[2])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1])) + 60)
return 1
"""


class RedisStreamSlots:
    """Concurrent streams per key shared by all gateways: leased members of a sorted set."""

    def __init__(self, redis: AsyncRedis, limit: int, lease_s: float = 60.0,
                 prefix: str = "avatars:streams:") -> None:
        self.redis = redis
        self.limit = limit
        self.lease_s = lease_s
        self.refresh_s = lease_s / 3
        self.prefix = prefix
        self._warn = _Throttled()

    async def acquire(self, key: str) -> StreamSlot | None:
        from redis.exceptions import RedisError

        token = uuid.uuid4().hex
        try:
            ok = await self.redis.get().eval(
                _ACQUIRE_SLOT, 1, self.prefix + key, str(self.limit), repr(self.lease_s), token
            )
        except (RedisError, OSError) as exc:
            self._warn.warn("stream slots: Redis unavailable (%s); not limiting", exc)
            return StreamSlot(self, key, "")
        return StreamSlot(self, key, token) if int(ok) else None

    async def refresh(self, slot: StreamSlot) -> None:
        from redis.exceptions import RedisError

        if not slot.token:
            return
        try:
            await self.redis.get().eval(
                _REFRESH_SLOT, 1, self.prefix + slot.key, repr(self.lease_s), slot.token
            )
        except (RedisError, OSError) as exc:
            self._warn.warn("stream slots: could not refresh a lease (%s)", exc)

    async def release(self, slot: StreamSlot) -> None:
        from redis.exceptions import RedisError

        if not slot.token:
            return
        try:
            await self.redis.get().zrem(self.prefix + slot.key, slot.token)
        except (RedisError, OSError, RuntimeError) as exc:
            # RuntimeError: the loop that made the client is gone; the lease expires.
            self._warn.warn("stream slots: could not release a slot (%s)", exc)


async def hold_while(slot: StreamSlot, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Yield ``chunks`` while holding ``slot`` (refreshing its lease); release it at the end,
    however the stream ends (finished, client gone, error)."""
    try:
        async for chunk in chunks:
            await slot.refresh_if_due()
            yield chunk
    finally:
        # Shielded: when the client is gone this runs inside a cancelled scope.
        with anyio.CancelScope(shield=True):
            try:
                aclose = getattr(chunks, "aclose", None)
                if aclose is not None:
                    await aclose()
            finally:
                await slot.release()
