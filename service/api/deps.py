"""Shared route dependencies, with short aliases so route signatures read like prose.

The existence checks (``ExistingAvatar``, ``ExistingJob``) are written once here:
an id from the URL is validated by regex and looked up before any handler runs,
and a miss is a 404 JSON error with a stable code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from celery import Celery
from fastapi import Depends, Path, Request
from starlette.concurrency import run_in_threadpool

from service.api.errors import ApiError
from service.state import Services
from service.streaming import PlayerCache
from workers.jobs import Job, JobStore
from workers.settings import Settings
from workers.storage import AvatarStorage, is_valid_id


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_settings_dep(services: ServicesDep) -> Settings:
    return services.settings


def get_storage(services: ServicesDep) -> AvatarStorage:
    return services.storage


def get_jobs(services: ServicesDep) -> JobStore:
    return services.jobs


def get_celery(services: ServicesDep) -> Celery:
    return services.celery


def get_players(services: ServicesDep) -> PlayerCache:
    return services.players


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
StorageDep = Annotated[AvatarStorage, Depends(get_storage)]
JobStoreDep = Annotated[JobStore, Depends(get_jobs)]
CeleryDep = Annotated[Celery, Depends(get_celery)]
PlayersDep = Annotated[PlayerCache, Depends(get_players)]

AvatarIdPath = Annotated[str, Path(description="Avatar id (32 hex characters).")]
JobIdPath = Annotated[str, Path(description="Job id (32 hex characters).")]


@dataclass(frozen=True)
class AvatarRecord:
    """A stored avatar: its id and ``avatar.json`` metadata."""

    id: str
    meta: dict[str, Any]


def avatar_not_found(avatar_id: str) -> ApiError:
    return ApiError(404, "avatar_not_found", "No avatar with this id.", {"avatar_id": avatar_id})


async def get_existing_avatar(avatar_id: AvatarIdPath, storage: StorageDep) -> AvatarRecord:
    if not is_valid_id(avatar_id):
        raise avatar_not_found(avatar_id)
    meta = await run_in_threadpool(storage.read_meta, avatar_id)
    if meta is None:
        raise avatar_not_found(avatar_id)
    return AvatarRecord(avatar_id, meta)


async def get_existing_job(job_id: JobIdPath, jobs: JobStoreDep) -> Job:
    job = await run_in_threadpool(jobs.get, job_id) if is_valid_id(job_id) else None
    if job is None:
        raise ApiError(404, "job_not_found", "No job with this id.", {"job_id": job_id})
    return job


ExistingAvatar = Annotated[AvatarRecord, Depends(get_existing_avatar)]
ExistingJob = Annotated[Job, Depends(get_existing_job)]
