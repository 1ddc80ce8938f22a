"""``/healthz`` (the process answers) and ``/readyz`` (it can do useful work).

Readiness checks, each bounded in time:
- storage: a file can be created, synced and removed under ``data_dir/avatars``;
- jobs: the job store answers;
- broker: with Redis, a ``PING``; in the embedded mode, at least one worker has a
  fresh heartbeat (the worker child of ``avatars serve`` is alive and consuming).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from service.api.deps import ServicesDep
from service.api.errors import error_response
from service.api.schemas import CheckResult, ErrorResponse, Health, Readiness
from workers.heartbeat import live_workers

router = APIRouter(tags=["health"])

CHECK_TIMEOUT_S = 3.0


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
        if services.redis is not None:
            services.redis.ping()
            return "redis ping ok"
        workers = live_workers(settings)
        if not workers:
            return CheckResult(ok=False, detail="no embedded worker with a fresh heartbeat")
        return {"workers": [{"pid": w["pid"], "queues": w["queues"]} for w in workers]}

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
