"""``/v1/avatars``: upload photos, read an avatar, download its glb, stream it.

Every route needs an API key (or anonymous access, where allowed) and sees only its
tenant's avatars. ``POST`` honours ``Idempotency-Key``; streams hold one of the key's
``max_streams_per_key`` slots while they run.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends, File, Form, Header, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from service.api.deps import (
    CeleryDep,
    CurrentTenant,
    ExistingAvatar,
    JobStoreDep,
    PlayersDep,
    ServicesDep,
    SettingsDep,
    StorageDep,
    acquire_stream_slot,
    authenticate,
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
from service.idempotency import Reservation, valid_key
from service.limits import hold_while
from service.streaming import MEDIA_TYPE, mjpeg_stream, start_render_warm_up
from service.uploads import LimitedBodyRoute, validate_photo
from workers.observability import JOB_ID
from workers.storage import new_id
from workers.submit import enqueue_avatar

log = logging.getLogger(__name__)

@asynccontextmanager
async def _warm_render_path(_: Any) -> AsyncIterator[None]:
    """Router lifespan: load the render kernels when the app starts, so that the first
    frame a fresh gateway serves costs what any uncached avatar costs. Start-up waits
    for it at most ``WARM_UP_WAIT_S`` (about 1 s with numba's on-disk cache; compiling
    without it takes longer and then finishes in the background)."""
    thread = start_render_warm_up()
    await anyio.to_thread.run_sync(thread.join, WARM_UP_WAIT_S)
    yield


router = APIRouter(
    prefix="/v1/avatars",
    tags=["avatars"],
    route_class=LimitedBodyRoute,
    lifespan=_warm_render_path,
    dependencies=[Depends(authenticate)],
)

_ERRORS = {
    400: {"model": ErrorResponse},
    401: {"model": ErrorResponse},
    404: {"model": ErrorResponse},
    409: {"model": ErrorResponse},
    413: {"model": ErrorResponse},
    415: {"model": ErrorResponse},
    422: {"model": ErrorResponse},
    429: {"model": ErrorResponse},
    503: {"model": ErrorResponse},
}

#: Frames of a stream with neither ``frames`` nor ``loop`` when the motion has no
#: known duration.
_DEFAULT_SECONDS = 4.0
#: Longest start-up wait for the render path to be loaded (see ``_warm_render_path``).
WARM_UP_WAIT_S = 5.0
#: Bounds of one MP4 (``render.mp4``): it is rendered completely before it is sent.
MP4_MAX_FRAMES = 900
MP4_MAX_SIZE = 1024
PNG_MEDIA_TYPE = "image/png"
MP4_MEDIA_TYPE = "video/mp4"


# ------------------------------------------------------------------ view parameters
class ViewQuery(BaseModel):
    """Camera and background of a rendered frame (query parameters)."""

    yaw: float = Field(
        0.0, ge=-360, le=360, allow_inf_nan=False,
        description="Orbit angle around the avatar in degrees (0: from the front, 90: from its left).",
    )
    elevation: float = Field(
        5.0, ge=-89, le=89, allow_inf_nan=False, description="Camera elevation in degrees."
    )
    distance: float | None = Field(
        None, ge=0.3, le=50, allow_inf_nan=False,
        description="Camera distance in metres; default: frame the whole body.",
    )
    fov: float = Field(
        30.0, ge=5, le=120, allow_inf_nan=False, description="Vertical field of view, degrees."
    )
    background: str = Field(
        "ffffff", pattern=r"^#?[0-9a-fA-F]{6}$",
        description="Background colour as 6 hex digits (RRGGBB), e.g. ffffff.",
    )

    def view(self) -> Any:
        from models.render.player import View

        return View(self.yaw, self.elevation, self.distance, self.fov, parse_hex_colour(self.background))


def parse_hex_colour(text: str) -> tuple[int, int, int]:
    """'ffffff' or '#ffffff' -> (255, 255, 255); the pattern is checked by the schema."""
    text = text.lstrip("#")
    return (int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16))


class StreamViewQuery(StreamQuery, ViewQuery):
    """Query of ``GET /v1/avatars/{id}/stream``: motion, size, timing, camera."""


class FrameQuery(ViewQuery):
    """Query of ``GET /v1/avatars/{id}/frame.png``."""

    motion: str = Field("turntable", description="A motion name from GET /v1/motions.")
    t: float = Field(0.0, ge=0, le=86400, allow_inf_nan=False, description="Time in seconds.")
    size: int = Field(512, ge=64, le=2048, description="Width and height in pixels.")
    transparent: bool = Field(
        False, description="RGBA with a transparent background (alpha = coverage)."
    )


class Mp4Query(ViewQuery):
    """Query of ``GET /v1/avatars/{id}/render.mp4``."""

    motion: str = Field("turntable", description="A motion name from GET /v1/motions.")
    size: int = Field(
        512, ge=64, le=MP4_MAX_SIZE, description="Width and height (odd sizes are rounded up)."
    )
    fps: int = Field(30, ge=1, le=60, description="Frames per second.")
    frames: int | None = Field(
        None, ge=1, le=MP4_MAX_FRAMES, description="Number of frames; default: one cycle of the motion."
    )


def avatar_links(avatar_id: str, job_id: str) -> AvatarLinks:
    base = f"/v1/avatars/{avatar_id}"
    return AvatarLinks(
        job=f"/v1/jobs/{job_id}",
        avatar=base,
        glb=f"{base}/avatar.glb",
        stream=f"{base}/stream?motion=turntable",
    )


def _fingerprint(photos: list[Any], extras: dict[str, bytes] | None = None) -> str:
    """What makes two uploads "the same request": their photos, in order (as stored:
    photos that differ only in metadata are the same photos), and any fit inputs."""
    import hashlib

    lines = [p.sha256 for p in photos]
    lines += [f"{name}:{hashlib.sha256(data).hexdigest()}" for name, data in sorted((extras or {}).items())]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


#: Largest uploaded keypoints file (OpenPose JSON of one photo).
MAX_KEYPOINTS_BYTES = 2 * 1024 * 1024


def _fit_inputs(
    keypoints: list[UploadFile] | None,
    masks: list[UploadFile] | None,
    photos: list[Any],
    strict: bool,
    max_bytes: int,
    max_pixels: int,
) -> dict[str, bytes]:
    """Check the optional per-photo keypoints and masks; -> files for ``originals/``.
    Blocking (reads and decodes): call it from a thread."""
    import io

    from PIL import Image

    from models.detect.keypoint_formats import parse_openpose
    from models.errors import PipelineError

    extras: dict[str, bytes] = {}
    for field, parts in (("keypoints", keypoints), ("masks", masks)):
        if parts and len(parts) != len(photos):
            raise ApiError(
                400, "misaligned_upload",
                f"Send one '{field}' part per photo, in the photos' order (an empty part for "
                f"a photo without): got {len(parts)} for {len(photos)} photos.",
            )
    for i, part in enumerate(keypoints or []):
        data = part.file.read(MAX_KEYPOINTS_BYTES + 1)
        if not data:
            continue
        if len(data) > MAX_KEYPOINTS_BYTES:
            raise ApiError(413, "upload_too_large", "A keypoints file is larger than 2 MiB.", {"photo": i})
        try:
            parse_openpose(data)
        except PipelineError as exc:
            raise ApiError(422, exc.code, exc.message, {"photo": i}) from exc
        extras[f"keypoints_{i}.json"] = data
    for i, part in enumerate(masks or []):
        data = part.file.read(max_bytes + 1)
        if not data:
            continue
        bad = ApiError(422, "invalid_mask", "A person mask is not a readable PNG, JPEG or WebP image.",
                       {"photo": i})
        try:
            with Image.open(io.BytesIO(data), formats=["PNG", "JPEG", "WEBP"]) as im:
                if im.width * im.height > max_pixels:
                    raise ApiError(413, "image_too_large", "A person mask is too large.", {"photo": i})
                has_alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
                gray = im.convert("RGBA").getchannel("A") if has_alpha else im.convert("L")
        except ApiError:
            raise
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad mask
            raise bad from exc
        w, h = photos[i].width, photos[i].height
        if abs(gray.width / gray.height - w / h) > 0.02 * w / h:
            raise ApiError(
                422, "invalid_mask",
                f"A person mask is {gray.width}x{gray.height}; its photo is {w}x{h} (upright): "
                "the aspect ratios differ.", {"photo": i},
            )
        out = io.BytesIO()
        gray.save(out, format="PNG")
        extras[f"mask_{i}.png"] = out.getvalue()
    if strict:
        extras["options.json"] = b'{"strict": true}'
    return extras


def _created_response(avatar_id: str, job_id: str, replayed: bool = False) -> JSONResponse:
    body = AvatarCreated(avatar_id=avatar_id, job_id=job_id, links=avatar_links(avatar_id, job_id))
    headers = {"Location": body.links.job}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(status_code=202, content=body.model_dump(), headers=headers)


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
    principal: CurrentTenant,
    photos: Annotated[
        list[UploadFile] | None,
        File(description="1..max_photos JPEG, PNG or WebP photos of one person."),
    ] = None,
    keypoints: Annotated[
        list[UploadFile] | None,
        File(description="Optional, one part per photo in the photos' order (an empty part for "
             "a photo without): OpenPose JSON keypoints (BODY_25 or COCO-18 body, face, hands) in "
             "the pixels of the photo as displayed (EXIF orientation applied)."),
    ] = None,
    masks: Annotated[
        list[UploadFile] | None,
        File(description="Optional, one part per photo in the photos' order (an empty part for "
             "a photo without): the person's mask (white = person, or the image's alpha), the "
             "photo's aspect ratio. With keypoints and a mask, detection is skipped."),
    ] = None,
    strict: Annotated[
        bool,
        Form(description="Several people in a photo fail the job (multiple_people) instead of "
             "using the largest one with a warning."),
    ] = False,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Any string of 1..255 visible ASCII characters. The same key with the "
            "same photos returns the same avatar and job (for 24 h by default); with other "
            "photos it is 422 idempotency_key_reused.",
        ),
    ] = None,
) -> JSONResponse:
    if idempotency_key is not None and not valid_key(idempotency_key):
        raise ApiError(
            400, "invalid_idempotency_key",
            "Idempotency-Key must be 1..255 visible ASCII characters.",
        )
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
            max_bytes=settings.max_upload_bytes,
        )
        validated.append(await anyio.to_thread.run_sync(check, limiter=services.decode_limiter()))
    extras = None
    if keypoints or masks or strict:
        extras = await anyio.to_thread.run_sync(
            partial(_fit_inputs, keypoints, masks, validated, strict, settings.max_upload_bytes,
                    settings.max_pixels),
            limiter=services.decode_limiter(),
        )

    avatar_id, job_id = new_id(), new_id()
    tenant = principal.tenant
    if idempotency_key is not None:
        reservation = Reservation(_fingerprint(validated, extras), avatar_id, job_id)
        try:
            held = await run_in_threadpool(
                services.idempotency.reserve, tenant, idempotency_key, reservation
            )
        except Exception as exc:
            log.exception("idempotency store unavailable")
            raise ApiError(503, "job_store_unavailable", "The job store is unavailable.") from exc
        if held is not None:
            if held.fingerprint != reservation.fingerprint:
                raise ApiError(
                    422, "idempotency_key_reused",
                    "This Idempotency-Key was used with other photos.",
                )
            if held.state != "done" and await _job_missing(services, held.job_id, tenant):
                raise ApiError(
                    409, "idempotency_in_progress",
                    "A request with this Idempotency-Key is still being processed.",
                    headers={"Retry-After": "1"},
                )
            JOB_ID.set(held.job_id)
            return _created_response(held.avatar_id, held.job_id, replayed=True)
    JOB_ID.set(job_id)
    try:
        await _store_and_enqueue(services, validated, avatar_id, job_id, tenant, extras)
    except BaseException:
        if idempotency_key is not None:
            with anyio.CancelScope(shield=True):
                try:
                    await run_in_threadpool(services.idempotency.release, tenant, idempotency_key)
                except Exception:  # noqa: BLE001 - the reservation then expires
                    log.warning("could not release Idempotency-Key of avatar %s", avatar_id)
        raise
    if idempotency_key is not None:
        try:
            await run_in_threadpool(
                services.idempotency.complete, tenant, idempotency_key, reservation
            )
        except Exception:  # noqa: BLE001 - a retry still finds the job (see _job_missing)
            log.warning("could not mark Idempotency-Key of avatar %s done", avatar_id)
    log.info("avatar %s created with job %s (%d photos)", avatar_id, job_id, len(validated))
    return _created_response(avatar_id, job_id)


async def _job_missing(services: Any, job_id: str, tenant: str) -> bool:
    """True unless the job a pending reservation names exists (then the request that
    reserved it got as far as creating it: its answer can be replayed)."""
    try:
        job = await services.get_job(job_id)
    except Exception:  # noqa: BLE001 - cannot tell: say "in progress"
        return True
    return job is None or job.tenant != tenant


async def _store_and_enqueue(
    services: Any, validated: list[Any], avatar_id: str, job_id: str, tenant: str,
    extras: dict[str, bytes] | None = None,
) -> None:
    """Store the photos, record the job, send it (one worker thread for the three)."""
    await run_in_threadpool(
        _store_and_enqueue_blocking, services, validated, avatar_id, job_id, tenant, extras
    )


def _store_and_enqueue_blocking(
    services: Any, validated: list[Any], avatar_id: str, job_id: str, tenant: str,
    extras: dict[str, bytes] | None = None,
) -> None:
    """Blocking part of ``_store_and_enqueue``; undoes what was done on failure (503)."""
    storage, jobs, celery = services.storage, services.jobs, services.celery
    try:
        storage.create(validated, job_id=job_id, avatar_id=avatar_id, tenant=tenant, extras=extras)
    except OSError as exc:
        log.exception("could not store avatar %s", avatar_id)
        raise ApiError(503, "storage_unavailable", "The photos could not be stored.") from exc
    try:
        jobs.create(job_id, avatar_id, tenant)
    except Exception as exc:
        log.exception("job store unavailable; dropping avatar %s", avatar_id)
        storage.delete(avatar_id)
        raise ApiError(503, "job_store_unavailable", "The job store is unavailable.") from exc
    try:
        enqueue_avatar(avatar_id, job_id, celery)
    except Exception as exc:
        log.exception("broker unavailable; dropping avatar %s", avatar_id)
        jobs.delete(job_id)
        storage.delete(avatar_id)
        raise ApiError(503, "queue_unavailable", "The job queue is unavailable.") from exc


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


@router.get(
    "/{avatar_id}/texture.png",
    response_class=FileResponse,
    responses={200: {"content": {PNG_MEDIA_TYPE: {}}}, **_ERRORS},
)
async def download_texture(avatar: ExistingAvatar, storage: StorageDep, jobs: JobStoreDep):
    """The avatar's RGB texture (UV atlas of the body, unseen parts filled in) as PNG
    (409 until the build succeeded)."""
    glb = await _ready_glb(avatar, storage, jobs)
    texture = glb.parent / "texture" / "inpainted.png"
    if not await run_in_threadpool(texture.is_file):
        raise ApiError(404, "texture_not_found", "This avatar has no texture file.")
    return FileResponse(texture, media_type=PNG_MEDIA_TYPE, filename=f"{avatar.id}-texture.png")


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


async def _check_motion(name: str) -> None:
    names = await run_in_threadpool(_motion_names)
    if name not in names:
        raise ApiError(400, "unknown_motion", f"Unknown motion {name!r}.", {"motions": sorted(names)})


async def _default_frames(motion: str, fps: int, limit: int) -> int:
    """Frames of one cycle of the motion (or a few seconds), at most ``limit``."""
    duration = await run_in_threadpool(_motion_duration, motion) or _DEFAULT_SECONDS
    return min(limit, max(1, math.ceil(duration * fps)))


@router.get(
    "/{avatar_id}/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {MEDIA_TYPE: {}}}, **_ERRORS},
)
async def stream_avatar(
    avatar: ExistingAvatar,
    services: ServicesDep,
    principal: CurrentTenant,
    storage: StorageDep,
    jobs: JobStoreDep,
    players: PlayersDep,
    settings: SettingsDep,
    query: Annotated[StreamViewQuery, Query()],
) -> StreamingResponse:
    """MJPEG (``multipart/x-mixed-replace``) frames of the avatar in a motion, seen from
    the camera the view parameters describe. Rendering stops as soon as the client
    disconnects."""
    if query.loop and query.frames is not None:
        raise ApiError(422, "invalid_request", "Give either frames or loop=true, not both.")
    if query.frames is not None and query.frames > settings.stream_max_frames:
        raise ApiError(
            422,
            "invalid_request",
            f"frames must be at most {settings.stream_max_frames}.",
            {"max_frames": settings.stream_max_frames},
        )
    await _check_motion(query.motion)
    frames = query.frames
    if frames is None and not query.loop:
        frames = await _default_frames(query.motion, query.fps, settings.stream_max_frames)

    glb = await _ready_glb(avatar, storage, jobs)
    player = await run_in_threadpool(players.get, avatar.id, glb)
    slot = await acquire_stream_slot(services, principal)
    frame_iter = player.jpeg_frames(
        query.motion,
        query.size,
        query.fps,
        frames,
        quality=settings.stream_jpeg_quality,
        view=query.view(),
    )
    return StreamingResponse(
        hold_while(
            slot, mjpeg_stream(frame_iter, query.fps, query.pace, label=f"stream of {avatar.id}")
        ),
        media_type=MEDIA_TYPE,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/{avatar_id}/frame.png",
    response_class=Response,
    responses={200: {"content": {PNG_MEDIA_TYPE: {}}}, **_ERRORS},
)
async def frame_png(
    avatar: ExistingAvatar,
    storage: StorageDep,
    jobs: JobStoreDep,
    players: PlayersDep,
    query: Annotated[FrameQuery, Query()],
) -> Response:
    """One frame of a motion at time ``t`` as PNG; ``transparent=true`` gives RGBA with a
    transparent background and the antialiased silhouette coverage as alpha."""
    await _check_motion(query.motion)
    glb = await _ready_glb(avatar, storage, jobs)
    player = await run_in_threadpool(players.get, avatar.id, glb)
    png = await run_in_threadpool(
        player.frame_png, query.motion, query.t, query.size, query.view(), query.transparent
    )
    return Response(png, media_type=PNG_MEDIA_TYPE, headers={"Cache-Control": "no-store"})


async def _watch_disconnect(request: Request, stop: threading.Event, slot: Any = None) -> None:
    """Set ``stop`` when the client goes away (polled while an MP4 renders); keeps the
    stream slot's lease fresh meanwhile."""
    while not stop.is_set():
        if await request.is_disconnected():
            stop.set()
            return
        if slot is not None:
            await slot.refresh_if_due()
        await anyio.sleep(0.2)


@router.get(
    "/{avatar_id}/render.mp4",
    response_class=FileResponse,
    responses={200: {"content": {MP4_MEDIA_TYPE: {}}}, **_ERRORS},
)
async def render_avatar_mp4(
    request: Request,
    avatar: ExistingAvatar,
    services: ServicesDep,
    principal: CurrentTenant,
    storage: StorageDep,
    jobs: JobStoreDep,
    players: PlayersDep,
    query: Annotated[Mp4Query, Query()],
) -> Response:
    """An H.264 MP4 of the avatar in a motion (at most ``MP4_MAX_FRAMES`` frames, size up
    to ``MP4_MAX_SIZE``). Rendered into a temporary file, then sent; rendering stops if
    the client disconnects first."""
    from models.render.player import RenderCancelled, render_mp4

    await _check_motion(query.motion)
    frames = query.frames or await _default_frames(query.motion, query.fps, MP4_MAX_FRAMES)
    glb = await _ready_glb(avatar, storage, jobs)
    player = await run_in_threadpool(players.get, avatar.id, glb)

    slot = await acquire_stream_slot(services, principal)
    tmp_dir = Path(tempfile.mkdtemp(prefix="avatars-mp4-"))
    out = tmp_dir / "render.mp4"
    stop = threading.Event()
    render = partial(
        render_mp4, glb, out, motion=query.motion, size=query.size, fps=query.fps,
        frames=frames, view=query.view(), player=player, should_stop=stop.is_set,
    )
    error: Exception | None = None
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_watch_disconnect, request, stop, slot)
            try:
                await anyio.to_thread.run_sync(render)
            except Exception as exc:  # handled below, outside the task group
                error = exc
            finally:
                stop.set()  # also ends the watcher, and a render still running
                tg.cancel_scope.cancel()
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    finally:
        with anyio.CancelScope(shield=True):
            await slot.release()
    if error is not None:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if isinstance(error, RenderCancelled):
            log.info("render.mp4 of %s cancelled: client gone", avatar.id)
            return Response(status_code=499)
        if isinstance(error, OSError):
            log.error("could not write the MP4 of avatar %s: %s", avatar.id, error)
            raise ApiError(503, "storage_unavailable", "The video could not be written.") from error
        raise error
    return FileResponse(
        out,
        media_type=MP4_MEDIA_TYPE,
        filename=f"{avatar.id}-{query.motion}.mp4",
        headers={"Cache-Control": "no-store", "X-Frame-Count": str(frames)},
        background=BackgroundTask(shutil.rmtree, tmp_dir, ignore_errors=True),
    )
