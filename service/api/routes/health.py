"""``/healthz`` (the process answers), ``/readyz`` (it can do useful work), ``/metrics``.

Readiness checks, each bounded in time:
- storage: a file can be created, synced and removed under ``data_dir/avatars``;
- jobs: the job store answers;
- broker: with Redis, a ``PING``; then every queue (fit, inpaint) must have at least
  one worker with a fresh heartbeat (Redis: workers on any machine, seen through
  Redis; embedded: the worker child of ``avatars serve``). Jobs would otherwise wait
  forever, so no worker means "not ready".

``/metrics`` is the Prometheus text format (see ``service.observability``); like the
health routes it needs no API key (keep it off the public network).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
from fastapi import APIRouter
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from service.api.deps import ServicesDep
from service.api.errors import error_response
from service.api.schemas import CheckResult, ErrorResponse, Health, Readiness
from service.observability import CONTENT_TYPE, metrics_text
from workers.celery_app import FIT_QUEUE, INPAINT_QUEUE
from workers.heartbeat import live_workers

router = APIRouter(tags=["health"])

CHECK_TIMEOUT_S = 3.0
QUEUES = (FIT_QUEUE, INPAINT_QUEUE)


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    return Health(status="ok")


async def _check(fn: Callable[[], Any]) -> CheckResult:
    try:
        with anyio.fail_after(CHECK_TIMEOUT_S):
            detail = await run_in_threadpool(fn)
    except TimeoutError:
        return CheckResult(ok=False, detail="timed out")
    except Exception as exc:  # noqa: BLE001 - a failed check is a result, not an error
        return CheckResult(ok=False, detail=f"{type(exc).__name__}: {exc}")
    if isinstance(detail, CheckResult):
        return detail
    return CheckResult(ok=True, detail=detail)


@router.get("/readyz", response_model=Readiness, responses={503: {"model": ErrorResponse}})
async def readyz(services: ServicesDep):
    settings = services.settings

    def broker() -> Any:
        """The broker answers and every queue has a live worker."""
        if services.redis is not None:
            services.redis.ping()
        found = live_workers(settings, services.redis)
        per_queue = {q: sum(q in w.get("queues", ()) for w in found) for q in QUEUES}
        detail: dict[str, Any] = {
            "broker": "redis ping ok" if services.redis is not None else "filesystem queue",
            "workers": [
                {"pid": w["pid"], "host": w.get("hostname"), "queues": w["queues"]} for w in found
            ],
            "queues": per_queue,
        }
        missing = [q for q, n in per_queue.items() if n == 0]
        if missing:
            what = "embedded worker" if settings.embedded else "worker"
            detail["error"] = f"no {what} with a fresh heartbeat for queue(s) {', '.join(missing)}"
            return CheckResult(ok=False, detail=detail)
        return detail

    checks = {
        "storage": await _check(services.storage.check_writable),
        "jobs": await _check(services.jobs.ping),
        "broker": await _check(broker),
    }
    mode = "embedded" if settings.embedded else "redis"
    if all(c.ok for c in checks.values()):
        return Readiness(status="ready", mode=mode, checks=checks)
    return error_response(
        503,
        "not_ready",
        "The service is not ready.",
        {"mode": mode, "checks": {k: v.model_dump() for k, v in checks.items()}},
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}}},
    summary="Prometheus metrics",
)
async def metrics(services: ServicesDep) -> Response:
    """Request latency by route, job seconds by stage, queue depth, stream frames,
    failures by code (Prometheus text format)."""
    body = await run_in_threadpool(metrics_text, services)
    return Response(body, media_type=CONTENT_TYPE)
