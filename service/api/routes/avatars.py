"""``/v1/avatars``: upload photos, read an avatar, download its glb, stream it."""

from __future__ import annotations

import logging
import math
from functools import partial
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, File, Query, UploadFile
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from service.api.deps import (
    CeleryDep,
    ExistingAvatar,
    JobStoreDep,
    PlayersDep,
    ServicesDep,
    SettingsDep,
    StorageDep,
)
from service.api.errors import ApiError
from service.api.schemas import (
    AvatarCreated,
    AvatarLinks,
    AvatarPublic,
    ErrorResponse,
    JobPublic,
    PhotoPublic,
    StreamQuery,
)
from service.streaming import MEDIA_TYPE, mjpeg_stream
from service.uploads import LimitedBodyRoute, validate_photo
from workers.storage import new_id
from workers.submit import enqueue_avatar

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/avatars", tags=["avatars"], route_class=LimitedBodyRoute)

_ERRORS = {
    400: {"model": ErrorResponse},
    404: {"model": ErrorResponse},
    409: {"model": ErrorResponse},
    413: {"model": ErrorResponse},
    415: {"model": ErrorResponse},
    422: {"model": ErrorResponse},
    503: {"model": ErrorResponse},
}

#: Frames of a stream with neither ``frames`` nor ``loop`` when the motion has no
#: known duration.
_DEFAULT_SECONDS = 4.0


def avatar_links(avatar_id: str, job_id: str) -> AvatarLinks:
    base = f"/v1/avatars/{avatar_id}"
    return AvatarLinks(
        job=f"/v1/jobs/{job_id}",
        avatar=base,
        glb=f"{base}/avatar.glb",
        stream=f"{base}/stream?motion=turntable",
    )


@router.post(
    "",
    status_code=202,
    response_model=AvatarCreated,
    responses=_ERRORS,
    summary="Upload photo(s) of a person; starts building the avatar",
)
async def create_avatar(
    services: ServicesDep,
    settings: SettingsDep,
    storage: StorageDep,
    jobs: JobStoreDep,
    celery: CeleryDep,
    photos: Annotated[
        list[UploadFile] | None,
        File(description="1..max_photos JPEG, PNG or WebP photos of one person."),
    ] = None,
) -> JSONResponse:
    uploads = photos or []
    if not uploads:
        raise ApiError(400, "empty_upload", "Send at least one photo in the 'photos' field.")
    if len(uploads) > settings.max_photos:
        raise ApiError(
            400,
            "too_many_photos",
            f"At most {settings.max_photos} photos per avatar.",
            {"max_photos": settings.max_photos, "received": len(uploads)},
        )
    validated = []
    for index, upload in enumerate(uploads):
        check = partial(
            validate_photo,
            upload.file,
            max_pixels=settings.max_pixels,
            index=index,
            filename=upload.filename,
        )
        validated.append(await anyio.to_thread.run_sync(check, limiter=services.decode_limiter()))

    avatar_id, job_id = new_id(), new_id()
    try:
        await run_in_threadpool(storage.create, validated, job_id=job_id, avatar_id=avatar_id)
    except OSError as exc:
        log.exception("could not store avatar %s", avatar_id)
        raise ApiError(503, "storage_unavailable", "The photos could not be stored.") from exc
    try:
        await run_in_threadpool(jobs.create, job_id, avatar_id)
    except Exception as exc:
        log.exception("job store unavailable; dropping avatar %s", avatar_id)
        await run_in_threadpool(storage.delete, avatar_id)
        raise ApiError(503, "job_store_unavailable", "The job store is unavailable.") from exc
    try:
        await run_in_threadpool(enqueue_avatar, avatar_id, job_id, celery)
    except Exception as exc:
        log.exception("broker unavailable; dropping avatar %s", avatar_id)
        await run_in_threadpool(jobs.delete, job_id)
        await run_in_threadpool(storage.delete, avatar_id)
        raise ApiError(503, "queue_unavailable", "The job queue is unavailable.") from exc

    body = AvatarCreated(avatar_id=avatar_id, job_id=job_id, links=avatar_links(avatar_id, job_id))
    return JSONResponse(
        status_code=202,
        content=body.model_dump(),
        headers={"Location": body.links.job},
    )


@router.get("/{avatar_id}", response_model=AvatarPublic, responses=_ERRORS)
async def get_avatar(
    avatar: ExistingAvatar, storage: StorageDep, jobs: JobStoreDep
) -> AvatarPublic:
    """Metadata, quality report (when built) and build state of an avatar."""
    job_id = avatar.meta.get("job_id", "")
    job = await run_in_threadpool(jobs.get, job_id)
    quality = await run_in_threadpool(storage.read_quality, avatar.id)
    ready = (await run_in_threadpool(storage.glb_if_ready, avatar.id)) is not None
    return AvatarPublic(
        id=avatar.id,
        created_at=avatar.meta.get("created_at", ""),
        state=job.state.value if job else "unknown",
        ready=ready,
        photos=[PhotoPublic.model_validate(p) for p in avatar.meta.get("photos", [])],
        job=JobPublic.from_job(job) if job else None,
        quality=quality,
        links=avatar_links(avatar.id, job_id),
    )


def _not_ready(avatar_id: str, state: str | None) -> ApiError:
    return ApiError(
        409,
        "avatar_not_ready",
        "The avatar is not built yet; poll its job.",
        {"avatar_id": avatar_id, "state": state},
    )


async def _ready_glb(avatar: ExistingAvatar, storage: StorageDep, jobs: JobStoreDep):
    glb = await run_in_threadpool(storage.glb_if_ready, avatar.id)
    if glb is None:
        job = await run_in_threadpool(jobs.get, avatar.meta.get("job_id", ""))
        raise _not_ready(avatar.id, job.state.value if job else None)
    return glb


@router.get(
    "/{avatar_id}/avatar.glb",
    response_class=FileResponse,
    responses={200: {"content": {"model/gltf-binary": {}}}, **_ERRORS},
)
async def download_glb(avatar: ExistingAvatar, storage: StorageDep, jobs: JobStoreDep):
    """The rigged glTF 2.0 binary of the avatar (409 until the build succeeded)."""
    glb = await _ready_glb(avatar, storage, jobs)
    return FileResponse(glb, media_type="model/gltf-binary", filename=f"{avatar.id}.glb")


def _motion_names() -> set[str]:
    from models.animation.motions import MOTION_NAMES

    return set(MOTION_NAMES)


def _motion_duration(name: str) -> float | None:
    from models.animation.motions import list_motions

    for motion in list_motions():
        if motion.get("name") == name:
            duration = motion.get("duration_s")
            return float(duration) if duration else None
    return None


@router.get(
    "/{avatar_id}/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {MEDIA_TYPE: {}}}, **_ERRORS},
)
async def stream_avatar(
    avatar: ExistingAvatar,
    storage: StorageDep,
    jobs: JobStoreDep,
    players: PlayersDep,
    settings: SettingsDep,
    query: Annotated[StreamQuery, Query()],
) -> StreamingResponse:
    """MJPEG (``multipart/x-mixed-replace``) frames of the avatar in a motion."""
    if query.loop and query.frames is not None:
        raise ApiError(422, "invalid_request", "Give either frames or loop=true, not both.")
    if query.frames is not None and query.frames > settings.stream_max_frames:
        raise ApiError(
            422,
            "invalid_request",
            f"frames must be at most {settings.stream_max_frames}.",
            {"max_frames": settings.stream_max_frames},
        )
    names = await run_in_threadpool(_motion_names)
    if query.motion not in names:
        raise ApiError(
            400, "unknown_motion", f"Unknown motion {query.motion!r}.", {"motions": sorted(names)}
        )
    frames = query.frames
    if frames is None and not query.loop:
        duration = await run_in_threadpool(_motion_duration, query.motion) or _DEFAULT_SECONDS
        frames = min(settings.stream_max_frames, max(1, math.ceil(duration * query.fps)))

    glb = await _ready_glb(avatar, storage, jobs)
    player = await run_in_threadpool(players.get, avatar.id, glb)
    frame_iter = player.jpeg_frames(
        query.motion, query.size, query.fps, frames, quality=settings.stream_jpeg_quality
    )
    return StreamingResponse(
        mjpeg_stream(frame_iter, query.fps, query.pace, label=f"stream of {avatar.id}"),
        media_type=MEDIA_TYPE,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
