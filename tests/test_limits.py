"""Limits: request rate per key (memory and shared through Redis), concurrent streams per
key, upload size and pixel count; every refusal is a JSON 413 or 429 with Retry-After."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.auth import make_key_store
from service.limits import (
    AsyncRedis,
    MemoryRateLimiter,
    MemoryStreamSlots,
    RedisRateLimiter,
    RedisStreamSlots,
)
from service.streaming import PlayerCache
from tests.conftest import small_jpeg
from workers.settings import Settings
from workers.storage import new_id


def assert_429(response, code: str) -> dict:
    assert response.status_code == 429, response.text
    assert int(response.headers["retry-after"]) >= 1
    error = response.json()["error"]
    assert error["code"] == code
    return error


# ------------------------------------------------------------------------- rate
def test_memory_rate_limiter_gcra() -> None:
    limiter = MemoryRateLimiter(rate_per_s=2, burst=3)
    now = 1000.0
    assert all(limiter.hit_now("k", now).allowed for _ in range(3))
    denied = limiter.hit_now("k", now)
    assert not denied.allowed and 0 < denied.retry_after_s <= 0.5 + 1e-9
    assert denied.retry_after_header == "1"
    assert limiter.hit_now("other", now).allowed  # per key
    assert limiter.hit_now("k", now + 0.5).allowed  # one token back after 1/rate
    assert not limiter.hit_now("k", now + 0.5).allowed


def test_redis_rate_limiter_is_shared(redis_server: str) -> None:
    async def run() -> list[bool]:
        prefix = f"test:{new_id()}:rate:"
        # two limiters = two gateway processes
        a = RedisRateLimiter(AsyncRedis(redis_server), rate_per_s=0.5, burst=3, prefix=prefix)
        b = RedisRateLimiter(AsyncRedis(redis_server), rate_per_s=0.5, burst=3, prefix=prefix)
        results = [(await lim.hit("key")).allowed for lim in (a, b, a, b)]
        last = await a.hit("key")
        assert not last.allowed and last.retry_after_s > 0.5
        assert (await b.hit("another")).allowed
        await a.redis.aclose()
        await b.redis.aclose()
        return results

    assert asyncio.run(run()) == [True, True, True, False]


def test_redis_down_does_not_block_requests() -> None:
    from tests.conftest import free_port

    async def run():
        limiter = RedisRateLimiter(
            AsyncRedis(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2), 1, 1
        )
        return [(await limiter.hit("k")).allowed for _ in range(3)]

    assert asyncio.run(run()) == [True, True, True]


@pytest.fixture
def limited(data_dir: Path) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=data_dir, allow_anonymous=False, rate_limit_per_s=0.2, rate_limit_burst=3,
        max_streams_per_key=2,
    )
    with TestClient(create_app(settings)) as client:
        yield client


def _keys(client: TestClient, n: int) -> list[str]:
    store = make_key_store(client.app.state.services.settings)
    try:
        return [store.create(f"t{i}")[1] for i in range(n)]
    finally:
        store.close()


def test_rate_limit_per_key_is_429_with_retry_after(limited: TestClient) -> None:
    key_a, key_b = _keys(limited, 2)
    a = {"X-API-Key": key_a}
    assert [limited.get("/v1/motions", headers=a).status_code for _ in range(3)] == [200] * 3
    error = assert_429(limited.get("/v1/motions", headers=a), "rate_limited")
    assert error["details"]["retry_after_s"] > 0
    assert limited.get("/v1/motions", headers={"X-API-Key": key_b}).status_code == 200
    assert limited.get("/healthz").status_code == 200  # health is not rate limited
    # an upload over the rate is refused before its body is read
    response = limited.post("/v1/avatars", headers=a, files=[("photos", ("a.jpg", small_jpeg(), "image/jpeg"))])
    assert_429(response, "rate_limited")


# ---------------------------------------------------------------------- streams
def test_memory_stream_slots() -> None:
    async def run() -> None:
        slots = MemoryStreamSlots(limit=2)
        one, two = await slots.acquire("k"), await slots.acquire("k")
        assert one and two and await slots.acquire("k") is None
        assert await slots.acquire("other") is not None
        await one.release()
        await one.release()  # idempotent
        assert slots.held("k") == 1
        assert await slots.acquire("k") is not None

    asyncio.run(run())


def test_redis_stream_slots_are_shared_and_leased(redis_server: str) -> None:
    async def run() -> None:
        prefix = f"test:{new_id()}:streams:"
        a = RedisStreamSlots(AsyncRedis(redis_server), limit=2, lease_s=1.0, prefix=prefix)
        b = RedisStreamSlots(AsyncRedis(redis_server), limit=2, lease_s=1.0, prefix=prefix)
        first = await a.acquire("k")
        second = await b.acquire("k")
        assert first and second and await a.acquire("k") is None
        await second.release()
        third = await a.acquire("k")
        assert third is not None
        # a gateway that died never releases: its lease runs out
        await asyncio.sleep(0.6)
        await first.owner.refresh(first)  # first is still streaming: refreshed
        await asyncio.sleep(0.6)
        assert await b.acquire("k") is not None  # third's lease ran out
        assert await b.acquire("k") is None  # first's did not
        await a.redis.aclose()
        await b.redis.aclose()

    asyncio.run(run())


class _FakePlayer:
    def jpeg_frames(self, *args, **kwargs):
        yield from (b"\xff\xd8fake\xff\xd9" for _ in range(2))


def test_stream_over_the_limit_is_429(limited: TestClient) -> None:
    (key,) = _keys(limited, 1)
    headers = {"X-API-Key": key}
    created = limited.post(
        "/v1/avatars", headers=headers, files=[("photos", ("a.jpg", small_jpeg(), "image/jpeg"))]
    )
    avatar_id = created.json()["avatar_id"]
    services = limited.app.state.services
    services.storage.glb_path(avatar_id).write_bytes(b"glTF")  # "built"
    services.players = PlayerCache(2, loader=lambda _: _FakePlayer())
    bucket = f"key:{key.split('_')[1]}"

    async def hold(n: int):
        return [await services.stream_slots.acquire(bucket) for _ in range(n)]

    held = asyncio.run(hold(2))
    url = f"/v1/avatars/{avatar_id}/stream?frames=2&pace=false"
    error = assert_429(limited.get(url, headers=headers), "too_many_streams")
    assert error["details"]["max_streams"] == 2
    asyncio.run(held[0].release())
    response = limited.get(url, headers=headers)
    assert response.status_code == 200 and response.content.count(b"--frame\r\n") == 2
    # the finished stream gave its slot back
    assert services.stream_slots.held(bucket) == 1


# ------------------------------------------------------------------ uploads
def test_upload_and_pixel_limits_are_413_json(client: TestClient) -> None:
    big = small_jpeg() + b"\x00" * (3 * 1024 * 1024)  # the test settings allow 2 MiB
    response = client.post("/v1/avatars", files=[("photos", ("a.jpg", big, "image/jpeg"))])
    assert response.status_code == 413 and response.json()["error"]["code"] == "upload_too_large"
    from tests.test_api import png_header_only

    response = client.post(
        "/v1/avatars",
        files=[("photos", ("a.png", png_header_only(9000, 9000), "image/png"))],
    )
    assert response.status_code == 413 and response.json()["error"]["code"] == "image_too_large"


def test_limits_are_timely() -> None:
    """The in-memory limiter is cheap enough to sit in front of every request."""
    limiter = MemoryRateLimiter(rate_per_s=1e9, burst=10**9)
    started = time.perf_counter()
    for i in range(20_000):
        limiter.hit_now(f"k{i % 100}")
    assert time.perf_counter() - started < 1.0


def test_redis_rate_limiter_takes_tokens_in_batches(redis_server: str) -> None:
    """Gateways fetch a few tokens per round trip; together they never exceed the burst."""

    async def run() -> int:
        prefix = f"test:{new_id()}:rate:"
        limiters = [
            RedisRateLimiter(AsyncRedis(redis_server), rate_per_s=0.01, burst=64, prefix=prefix)
            for _ in range(3)
        ]
        assert limiters[0].batch == 8
        allowed = 0
        for i in range(120):
            allowed += (await limiters[i % 3].hit("key")).allowed
        for limiter in limiters:
            await limiter.redis.aclose()
        return allowed

    assert asyncio.run(run()) == 64
