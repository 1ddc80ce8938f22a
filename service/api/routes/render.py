"""``POST /v1/avatars/{id}/render``: render an avatar with an uploaded pose sequence.

The motion is a multipart file ``motion`` (AMASS / SMPL-X ``.npz``, ``.bvh`` or the JSON
pose sequence of models/animation/sequence.py; the format is recognised from the
content) or a form field ``motion_name`` naming a built-in motion. The answer is an
H.264 MP4 (default) or an MJPEG stream (``format=mjpeg``) of one loop of the motion
(or ``frames`` frames).

Errors: 400 ``invalid_motion`` (the file cannot be parsed; the message says why),
400 ``unknown_motion``, 404 unknown avatar, 409 not built yet, 413 upload too large,
422 out-of-range ``size`` / ``fps`` / ``frames`` or neither/both motion inputs.
Parsing and rendering run in worker threads; the gateway never imports torch.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi.responses import FileResponse, StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from service.api.deps import (
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
from service.api.schemas import ErrorResponse
from service.limits import hold_while
from service.streaming import MEDIA_TYPE, mjpeg_stream
from service.uploads import LimitedBodyRoute

log = logging.getLogger(__name__)

router = APIRouter(
    prefix="/v1/avatars",
    tags=["avatars"],
    route_class=LimitedBodyRoute,
    dependencies=[Depends(authenticate)],
)

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 409, 413, 422, 429, 503)
}
MP4_MEDIA_TYPE = "video/mp4"


def _load_uploaded(data: bytes, filename: str | None, face_forward: bool) -> Any:
    from models.animation.importers import MotionImportError, load_motion

    try:
        return load_motion(data, filename=filename, face_forward=face_forward)
    except MotionImportError as exc:
        raise ApiError(400, "invalid_motion", str(exc), {"filename": filename}) from None


def _builtin_duration(name: str) -> float:
    from models.animation.motions import MOTIONS

    motion = MOTIONS.get(name)
    if motion is None:
        raise ApiError(
            400, "unknown_motion", f"Unknown motion {name!r}.", {"motions": sorted(MOTIONS)}
        )
    return float(motion.duration_s)


def _loop_frames(duration_s: float, fps: int) -> int:
    """Frames of one loop of a motion lasting ``duration_s`` at ``fps``."""
    return max(1, math.ceil(duration_s * fps - 1e-6))


def _encode_mp4(player: Any, motion: Any, size: int, fps: int, frames: int) -> str:
    """Render and encode an H.264 MP4 into a temporary file; returns its path."""
    import av

    fd, path = tempfile.mkstemp(prefix="avatars-render-", suffix=".mp4")
    os.close(fd)
    try:
        with av.open(path, "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width = stream.height = size
            stream.pix_fmt = "yuv420p"
            stream.options = {"preset": "veryfast", "crf": "20"}
            for bgr in player.frames_from(motion, size, fps, frames, bgr=True):
                frame = av.VideoFrame.from_ndarray(bgr, format="bgr24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    except BaseException:
        os.unlink(path)
        raise
    return path


def _jpeg_frames(player: Any, motion: Any, size: int, fps: int, frames: int, quality: int):
    from models.render.player import encode_jpeg

    for bgr in player.frames_from(motion, size, fps, frames, bgr=True):
        yield encode_jpeg(bgr, quality)


@router.post(
    "/{avatar_id}/render",
    response_class=FileResponse,
    responses={200: {"content": {MP4_MEDIA_TYPE: {}, MEDIA_TYPE: {}}}, **_ERRORS},
    summary="Render the avatar with an uploaded pose sequence or a built-in motion",
)
async def render_avatar(
    avatar: ExistingAvatar,
    services: ServicesDep,
    principal: CurrentTenant,
    storage: StorageDep,
    jobs: JobStoreDep,
    players: PlayersDep,
    settings: SettingsDep,
    motion: Annotated[
        UploadFile | None,
        File(
            description="A pose sequence: AMASS / SMPL-X .npz (poses, trans, mocap_framerate), "
            '.bvh, or JSON {"fps": 30, "frames": [{"rotations": {"left_elbow": [ax, ay, az]}, '
            '"root_translation": [x, y, z]}]} (axis-angle radians, canonical joint names).'
        ),
    ] = None,
    motion_name: Annotated[
        str | None, Form(description="A built-in motion from GET /v1/motions instead of a file.")
    ] = None,
    size: Annotated[int, Form(ge=64, le=2048, description="Frame width and height.")] = 512,
    fps: Annotated[int, Form(ge=1, le=60, description="Frames per second of the output.")] = 30,
    frames: Annotated[
        int | None, Form(ge=1, description="Number of frames; default: one loop of the motion.")
    ] = None,
    video_format: Annotated[
        Literal["mp4", "mjpeg"], Form(alias="format", description="mp4 (default) or mjpeg.")
    ] = "mp4",
    face_forward: Annotated[
        bool, Form(description="Turn an uploaded motion so its first frame faces the camera.")
    ] = False,
    pace: Annotated[bool, Form(description="mjpeg: send frames no faster than fps.")] = True,
):
    """Render the avatar playing a motion; returns ``video/mp4`` or an MJPEG stream."""
    has_file = motion is not None and bool(motion.filename or motion.size)
    if has_file and motion_name:
        raise ApiError(
            422, "invalid_request", "Send either a motion file or motion_name, not both."
        )
    if not has_file and not motion_name:
        raise ApiError(422, "invalid_request", "Send a motion file ('motion') or a 'motion_name'.")
    if frames is not None and frames > settings.stream_max_frames:
        raise ApiError(
            422,
            "invalid_request",
            f"frames must be at most {settings.stream_max_frames}.",
            {"max_frames": settings.stream_max_frames},
        )

    if has_file:
        assert motion is not None
        data = await motion.read()
        if not data:
            raise ApiError(
                400, "invalid_motion", "The motion file is empty.", {"filename": motion.filename}
            )
        # a MotionSequence: played frame by frame
        playable = await run_in_threadpool(_load_uploaded, data, motion.filename, face_forward)
        del data
        duration_s = playable.duration_s
    else:
        playable = str(motion_name)  # a built-in, by name: its poses are cached per player
        duration_s = await run_in_threadpool(_builtin_duration, playable)
    if frames is None:
        frames = min(settings.stream_max_frames, _loop_frames(duration_s, fps))

    glb = await run_in_threadpool(storage.glb_if_ready, avatar.id)
    if glb is None:
        job = await run_in_threadpool(jobs.get, avatar.meta.get("job_id", ""))
        raise ApiError(
            409,
            "avatar_not_ready",
            "The avatar is not built yet; poll its job.",
            {"avatar_id": avatar.id, "state": job.state.value if job else None},
        )
    player = await run_in_threadpool(players.get, avatar.id, glb)
    headers = {"Cache-Control": "no-store", "X-Frame-Count": str(frames)}
    slot = await acquire_stream_slot(services, principal)

    if video_format == "mjpeg":
        frame_iter = _jpeg_frames(player, playable, size, fps, frames, settings.stream_jpeg_quality)
        return StreamingResponse(
            hold_while(slot, mjpeg_stream(frame_iter, fps, pace, label=f"render of {avatar.id}")),
            media_type=MEDIA_TYPE,
            headers={**headers, "X-Accel-Buffering": "no"},
        )

    out_size = size + size % 2  # yuv420p needs even dimensions
    try:
        path = await run_in_threadpool(_encode_mp4, player, playable, out_size, fps, frames)
    except OSError as exc:
        log.exception("could not write the MP4 of avatar %s", avatar.id)
        raise ApiError(503, "storage_unavailable", "The video could not be written.") from exc
    finally:
        with anyio.CancelScope(shield=True):
            await slot.release()
    return FileResponse(
        path,
        media_type=MP4_MEDIA_TYPE,
        filename=f"{avatar.id}.mp4",
        headers=headers,
        background=BackgroundTask(os.unlink, path),
    )
