"""FastAPI app factory of the gateway.

``create_app(settings)`` builds everything a gateway process needs (storage, job
store, Celery client, player cache) from one settings object and hangs it on
``app.state.services``; nothing lives in module globals, so tests can build apps
against temporary data dirs side by side.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from service.api.errors import install_error_handlers
from service.observability import RequestContextMiddleware
from service.api.routes import live
from service.api.routes import avatars, health, jobs, motions, render
from service.state import Services
from service.web.router import router as web_router
from workers.settings import Settings, get_settings

log = logging.getLogger(__name__)

API_DESCRIPTION = """
Turn one photo (or a few) of a person into an animatable full-body avatar, then
stream it posed and moving. Upload with `POST /v1/avatars`, poll `GET /v1/jobs/{id}`,
then download `avatar.glb` or stream MJPEG frames.

Every error is `{"error": {"code", "message", "details"}}` with a stable `code`.

Authenticate with an API key (`avatars keys create --tenant NAME`) in
`Authorization: Bearer <key>` or `X-API-Key: <key>`. Each key belongs to a tenant and
sees only that tenant's avatars and jobs. Requests are rate-limited per key (429 with
`Retry-After`); `POST /v1/avatars` honours `Idempotency-Key`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """The gateway app for ``settings`` (default: from the environment)."""
    settings = settings or get_settings()
    services = Services.build(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        removed = await run_in_threadpool(services.storage.sweep_incomplete)
        if removed:
            log.info("removed %d incomplete upload(s) left by a crash", removed)
        if settings.anonymous_allowed:
            log.warning(
                "anonymous access is ON (%s): requests without an API key act as tenant "
                "'anonymous'; set AVATARS_ALLOW_ANONYMOUS=false to require keys",
                "AVATARS_ALLOW_ANONYMOUS=true" if settings.allow_anonymous
                else f"embedded mode on loopback address {settings.host}",
            )
        try:
            yield
        finally:
            await services.aclose()
            services.close()

    app = FastAPI(
        title="Avatars",
        version="0.1.0",
        description=API_DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.services = services
    app.add_middleware(RequestContextMiddleware, access_log=settings.access_log)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(avatars.router)
    app.include_router(live.router)
    app.include_router(jobs.router)
    app.include_router(motions.router)
    app.include_router(render.router)
    app.include_router(web_router)  # the web page at / and its assets at /static/
    return app
