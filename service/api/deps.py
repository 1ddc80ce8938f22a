"""Shared route dependencies, with short aliases so route signatures read like prose.

``CurrentTenant`` authenticates the request (API key in ``Authorization: Bearer`` or
``X-API-Key``; anonymous only where allowed) and charges it to the key's rate limit.
The existence checks (``ExistingAvatar``, ``ExistingJob``) are written once here: an
id from the URL is validated by regex and looked up before any handler runs, and a
miss, or an avatar or job of another tenant, is a 404 JSON error with a stable code
(never 403: other tenants' ids are not even confirmed to exist).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from celery import Celery
from fastapi import Depends, Path, Request
from fastapi.security import APIKeyHeader, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers

from service.api.errors import ApiError
from service.auth import CachedKeys
from service.limits import StreamSlot
from service.observability import bind_tenant
from service.state import Services
from service.streaming import PlayerCache
from workers.jobs import ANONYMOUS_TENANT, Job, JobStore
from workers.settings import Settings
from workers.storage import AvatarStorage, is_valid_id


def services_of(request: Request) -> Services:
    return request.app.state.services


# Dependencies are ``async def`` although they do no I/O: FastAPI runs plain ``def``
# dependencies in a worker thread, a thread hop per dependency per request.
async def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_settings_dep(services: ServicesDep) -> Settings:
    return services.settings


async def get_storage(services: ServicesDep) -> AvatarStorage:
    return services.storage


async def get_jobs(services: ServicesDep) -> JobStore:
    return services.jobs


async def get_celery(services: ServicesDep) -> Celery:
    return services.celery


async def get_players(services: ServicesDep) -> PlayerCache:
    return services.players


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
StorageDep = Annotated[AvatarStorage, Depends(get_storage)]
JobStoreDep = Annotated[JobStore, Depends(get_jobs)]
CeleryDep = Annotated[Celery, Depends(get_celery)]
PlayersDep = Annotated[PlayerCache, Depends(get_players)]

# ------------------------------------------------------------------------ auth
#: Only for the OpenAPI schema (and the "Authorize" button of /docs): the headers are
#: read by ``authenticate`` itself.
_bearer_scheme = HTTPBearer(
    auto_error=False, bearerFormat="avk_...", description="An API key from `avatars keys create`."
)
_header_scheme = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="The same API key, in its own header."
)


@dataclass(frozen=True)
class Principal:
    """Who is asking: the tenant, the key (None when anonymous) and the rate-limit bucket."""

    tenant: str
    key_id: str | None
    bucket: str


def presented_key(headers: Headers) -> str | None:
    """The API key of a request, or None when it has none.

    Raises 401 for an ``Authorization`` header that is not ``Bearer <key>``.
    """
    key = headers.get("x-api-key")
    if key is not None:
        return key.strip()
    authorization = headers.get("authorization")
    if authorization is None:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise unauthorized("invalid_api_key", "Send the API key as 'Authorization: Bearer <key>'.")
    return credentials.strip()


def unauthorized(code: str, message: str) -> ApiError:
    return ApiError(401, code, message, headers={"WWW-Authenticate": 'Bearer realm="avatars"'})


async def resolve_principal(services: Services, key: str | None, client_host: str | None) -> Principal:
    """The principal of a key (None: anonymous); raises 401. Used by HTTP and WebSocket."""
    if key is None:
        if not services.settings.anonymous_allowed:
            raise unauthorized(
                "api_key_required",
                "An API key is required: 'Authorization: Bearer <key>' or 'X-API-Key: <key>'.",
            )
        return Principal(ANONYMOUS_TENANT, None, f"anon:{client_host or '-'}")
    keys: CachedKeys = services.keys
    record = keys.get(key)
    if record is CachedKeys.MISSING:
        try:
            record = await run_in_threadpool(keys.lookup, key)
        except Exception as exc:
            raise ApiError(503, "auth_unavailable", "API keys cannot be checked now.") from exc
    if record is None:
        raise unauthorized("invalid_api_key", "The API key is not valid (unknown or revoked).")
    return Principal(record.tenant, record.id, f"key:{record.id}")  # type: ignore[union-attr]


async def charge_rate(services: Services, principal: Principal) -> None:
    """Count one request against the principal's rate; 429 with Retry-After when over."""
    decision = await services.rate_limiter.hit(principal.bucket)
    if not decision.allowed:
        raise ApiError(
            429,
            "rate_limited",
            "Too many requests for this API key; retry after the time in Retry-After.",
            {"retry_after_s": round(decision.retry_after_s, 3)},
            headers={"Retry-After": decision.retry_after_header},
        )


async def authenticate_request(request: Request) -> Principal:
    """Authenticate the request and charge it to its key's rate limit, once per request
    (upload routes call this before reading the body; the dependency then reuses it)."""
    done = getattr(request.state, "principal", None)
    if done is not None:
        return done
    services = services_of(request)
    client = request.client.host if request.client else None
    principal = await resolve_principal(services, presented_key(request.headers), client)
    bind_tenant(principal.tenant, principal.key_id)
    request.state.principal = principal
    await charge_rate(services, principal)
    return principal


async def authenticate(
    request: Request,
    _bearer: Annotated[Any, Depends(_bearer_scheme)] = None,
    _header: Annotated[Any, Depends(_header_scheme)] = None,
) -> Principal:
    """The authenticated principal of the request (see ``authenticate_request``)."""
    return await authenticate_request(request)


CurrentTenant = Annotated[Principal, Depends(authenticate)]


# ------------------------------------------------------------------ resources
AvatarIdPath = Annotated[str, Path(description="Avatar id (32 hex characters).")]
JobIdPath = Annotated[str, Path(description="Job id (32 hex characters).")]


@dataclass(frozen=True)
class AvatarRecord:
    """A stored avatar: its id and ``avatar.json`` metadata."""

    id: str
    meta: dict[str, Any]


def avatar_not_found(avatar_id: str) -> ApiError:
    return ApiError(404, "avatar_not_found", "No avatar with this id.", {"avatar_id": avatar_id})


def avatar_tenant(meta: dict[str, Any]) -> str:
    """Tenant of a stored avatar (avatars stored before tenants: anonymous)."""
    return str(meta.get("tenant") or ANONYMOUS_TENANT)


async def get_existing_avatar(
    avatar_id: AvatarIdPath, storage: StorageDep, principal: CurrentTenant
) -> AvatarRecord:
    if not is_valid_id(avatar_id):
        raise avatar_not_found(avatar_id)
    meta = await run_in_threadpool(storage.read_meta, avatar_id)
    if meta is None or avatar_tenant(meta) != principal.tenant:
        raise avatar_not_found(avatar_id)
    return AvatarRecord(avatar_id, meta)


async def get_existing_job(job_id: JobIdPath, request: Request) -> Job:
    # Plain calls rather than sub-dependencies: this runs on every status poll, and each
    # dependency FastAPI resolves costs more than the call itself.
    principal = await authenticate_request(request)
    job = await services_of(request).get_job(job_id)
    if job is None or job.tenant != principal.tenant:
        raise ApiError(404, "job_not_found", "No job with this id.", {"job_id": job_id})
    return job


ExistingAvatar = Annotated[AvatarRecord, Depends(get_existing_avatar)]
ExistingJob = Annotated[Job, Depends(get_existing_job)]


async def acquire_stream_slot(services: Services, principal: Principal) -> StreamSlot:
    """One of the key's concurrent stream slots, or 429 ``too_many_streams``."""
    slot = await services.stream_slots.acquire(principal.bucket)
    if slot is None:
        limit = services.settings.max_streams_per_key
        raise ApiError(
            429,
            "too_many_streams",
            f"At most {limit} streams at once per API key; close one or retry later.",
            {"max_streams": limit},
            headers={"Retry-After": "5"},
        )
    return slot
