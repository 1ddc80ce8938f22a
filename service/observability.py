"""Request ids, access logs and ``/metrics`` of the gateway.

``RequestContextMiddleware`` (plain ASGI, so it costs microseconds): takes the
client's ``X-Request-ID`` when it is a sane token (else makes one), binds it to the
request's log lines, echoes it in the response, records the request's latency under
its route template (never the raw path: bounded label values) and writes one access
log line.

``metrics_text`` renders the process's metrics (or, in multiprocess mode, those of
every process sharing ``PROMETHEUS_MULTIPROC_DIR``) plus the queue depth, read from
the broker when scraped.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workers.observability import (
    HTTP_REQUEST_SECONDS,
    REQUEST_ID,
    TENANT,
    bind_tenant,
)

__all__ = ["RequestContextMiddleware", "bind_tenant", "metrics_text", "queue_depths"]

log = logging.getLogger("service.access")

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID_RE = re.compile(r"\A[A-Za-z0-9._:@/+=-]{1,128}\Z")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _client_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            try:
                text = value.decode("ascii")
            except UnicodeDecodeError:
                return None
            return text if _REQUEST_ID_RE.match(text) else None
    return None


class RequestContextMiddleware:
    """Request id in and out, latency by route, one access log line per request."""

    def __init__(self, app: ASGIApp, access_log: bool = True) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = _client_request_id(scope) or os.urandom(16).hex()
        token = REQUEST_ID.set(request_id)
        tenant_token = TENANT.set(None)
        status = 0
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append("X-Request-ID", request_id)
            elif message["type"] == "websocket.accept":
                status = 101
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            status = status or 500
            raise
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "WS")
            HTTP_REQUEST_SECONDS.labels(method, template, str(status)).observe(elapsed)
            if self.access_log:
                log.info(
                    "%s %s %d %.1f ms",
                    method,
                    scope.get("path", ""),
                    status,
                    elapsed * 1000,
                    extra={"status": status, "route": template, "duration_ms": round(elapsed * 1000, 2)},
                )
            TENANT.reset(tenant_token)
            REQUEST_ID.reset(token)


# ------------------------------------------------------------------------ metrics
def queue_depths(services: Any) -> dict[str, int]:
    """Messages waiting in each queue (blocking: Redis lists or queue files)."""
    from workers.celery_app import FIT_QUEUE, INPAINT_QUEUE

    queues = (FIT_QUEUE, INPAINT_QUEUE)
    if services.redis is not None:
        pipe = services.redis.pipeline(transaction=False)
        for queue in queues:
            pipe.llen(queue)
        return {q: int(n) for q, n in zip(queues, pipe.execute(), strict=True)}
    folder = services.settings.queue_dir / "messages"
    counts = dict.fromkeys(queues, 0)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return counts
    for name in names:
        if name.startswith("."):
            continue
        queue = name.partition(".")[2].removesuffix(".msg")
        if queue in counts:
            counts[queue] += 1
    return counts


class _QueueCollector:
    def __init__(self, services: Any) -> None:
        self.services = services

    def collect(self):
        family = GaugeMetricFamily(
            "avatars_queue_depth", "Messages waiting in each queue.", labels=["queue"]
        )
        up = GaugeMetricFamily("avatars_broker_up", "1 when the broker answered the last scrape.")
        try:
            depths = queue_depths(self.services)
        except Exception:  # noqa: BLE001 - a scrape must not fail because Redis is down
            up.add_metric([], 0)
        else:
            up.add_metric([], 1)
            for queue, depth in depths.items():
                family.add_metric([queue], depth)
        yield family
        yield up


def _process_registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def metrics_text(services: Any) -> bytes:
    """The Prometheus text exposition of this gateway (blocking)."""
    per_app = CollectorRegistry()
    per_app.register(_QueueCollector(services))
    return generate_latest(_process_registry()) + generate_latest(per_app)
