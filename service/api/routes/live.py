"""``WebSocket /v1/avatars/{id}/live``: the client sends poses, the gateway answers frames.

Protocol (one JSON text message per pose, one binary JPEG message back per pose)::

    -> {"rotations": {"left_elbow": [ax, ay, az], ...},   # axis-angle, radians
        "root_translation": [x, y, z],                     # optional, metres
        "yaw": 30, "elevation": 5, "distance": 3.5, "fov": 30,   # optional camera
        "size": 512, "background": "ffffff"}               # optional
    <- binary: JPEG of the avatar in that pose

Rotations are local (relative to the parent joint) on the canonical joints of
``models/animation/canonical.py`` (SMPL-style, T-pose world axes); joints not given
stay in the T-pose. Camera, size and background persist for the following messages
until changed. A malformed message is answered with a JSON text message
``{"error": {"code", "message", "details"}}`` and the socket stays open. An unknown
avatar gets that error message, then the socket is closed with code 4404 (4409 while
the avatar is still being built). Frames are rendered only in answer to messages, in a
worker thread, so a client that disconnects stops the rendering at once (at most the
frame being rendered is finished).

Authentication: the API key in ``Authorization: Bearer`` / ``X-API-Key`` or, for
browsers (which cannot set headers on a WebSocket), the query parameter ``api_key``.
A missing or bad key closes the socket with 4401, another tenant's avatar with 4404,
and a key over its rate or its concurrent streams with 4429. A socket holds one of
the key's stream slots while it is open.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, WebSocket
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocketDisconnect, WebSocketState

from service.api.deps import avatar_tenant, charge_rate, presented_key, resolve_principal
from service.api.errors import ApiError, error_body
from workers.observability import STREAM_FRAMES, STREAMS_ACTIVE
from workers.storage import is_valid_id

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/avatars", tags=["avatars"])

#: Close codes (4000-4999 are the application's).
CLOSE_UNAUTHORIZED = 4401
CLOSE_NOT_FOUND = 4404
CLOSE_NOT_READY = 4409
CLOSE_TOO_MANY = 4429
#: Largest JSON message accepted (a full pose is well under 2 KB).
MAX_MESSAGE_BYTES = 64 * 1024
LIVE_MAX_SIZE = 1024

Vec3 = tuple[float, float, float]


class LivePose(BaseModel):
    """One pose message of the live socket."""

    model_config = ConfigDict(extra="forbid")

    rotations: dict[str, Vec3] = Field(
        default_factory=dict,
        description="Canonical joint -> axis-angle rotation (radians), relative to the parent.",
    )
    root_translation: Vec3 | None = Field(None, description="Root offset in metres.")
    yaw: float | None = Field(None, ge=-360, le=360, allow_inf_nan=False)
    elevation: float | None = Field(None, ge=-89, le=89, allow_inf_nan=False)
    distance: float | None = Field(None, ge=0.3, le=50, allow_inf_nan=False)
    fov: float | None = Field(None, ge=5, le=120, allow_inf_nan=False)
    size: int | None = Field(None, ge=64, le=LIVE_MAX_SIZE)
    background: str | None = Field(None, pattern=r"^#?[0-9a-fA-F]{6}$")

    @field_validator("rotations")
    @classmethod
    def _known_finite_joints(cls, value: dict[str, Vec3]) -> dict[str, Vec3]:
        from models.animation.canonical import CANONICAL_NAMES

        unknown = sorted(set(value) - set(CANONICAL_NAMES))
        if unknown:
            raise ValueError(
                f"unknown joints {unknown}; known: {', '.join(CANONICAL_NAMES)}"
            )
        for name, vec in value.items():
            if not all(math.isfinite(x) for x in vec):
                raise ValueError(f"rotation of {name} is not finite")
        return value

    @field_validator("root_translation")
    @classmethod
    def _finite(cls, value: Vec3 | None) -> Vec3 | None:
        if value is not None and not all(math.isfinite(x) and abs(x) <= 100 for x in value):
            raise ValueError("root_translation must be finite metres within +-100")
        return value


class LiveSession:
    """Per-connection state: the camera/size chosen so far and the render scratch."""

    def __init__(self, player: Any, quality: int) -> None:
        from models.render.player import View

        self.player = player
        self.quality = quality
        self.state = player.new_state()
        self.view = View()
        self.size = 512

    def update(self, msg: LivePose) -> None:
        from models.render.player import View

        v = self.view
        background = v.background
        if msg.background is not None:
            text = msg.background.lstrip("#")
            background = (int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16))
        self.view = View(
            v.yaw_deg if msg.yaw is None else msg.yaw,
            v.elevation_deg if msg.elevation is None else msg.elevation,
            v.distance if msg.distance is None else msg.distance,
            v.fov_deg if msg.fov is None else msg.fov,
            background,
        )
        if msg.size is not None:
            self.size = msg.size

    def render(self, msg: LivePose) -> bytes:
        """Blocking: pose -> JPEG (run in a worker thread)."""
        import numpy as np

        from models.animation.motions import MotionFrame
        from models.render.rotations import axis_angle

        rotations = {name: axis_angle(vec) for name, vec in msg.rotations.items()}
        root = np.zeros(3) if msg.root_translation is None else np.asarray(msg.root_translation)
        frame = MotionFrame(rotations, root)
        return self.player.pose_jpeg(frame, self.size, self.view, self.state, self.quality)


def _validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": [str(p) for p in err.get("loc", ())], "msg": str(err.get("msg", "")),
         "type": str(err.get("type", ""))}
        for err in exc.errors()
    ]


def parse_message(message: dict[str, Any]) -> LivePose | dict[str, Any]:
    """A received WebSocket message -> a pose, or an error body to send back."""
    text = message.get("text")
    if text is None:
        return error_body("invalid_message", "Send poses as JSON text messages, not binary.")
    if len(text) > MAX_MESSAGE_BYTES:
        return error_body(
            "message_too_large", f"Messages are limited to {MAX_MESSAGE_BYTES} bytes.",
            {"max_bytes": MAX_MESSAGE_BYTES},
        )
    try:
        data = json.loads(text)
    except ValueError as exc:
        return error_body("invalid_json", "The message is not valid JSON.", {"reason": str(exc)})
    if not isinstance(data, dict):
        return error_body("invalid_message", "The message must be a JSON object.")
    try:
        return LivePose.model_validate(data)
    except ValidationError as exc:
        return error_body("invalid_message", "The pose message is not valid.", _validation_details(exc))


async def _refuse(websocket: WebSocket, code: int, body: dict[str, Any]) -> None:
    await websocket.send_json(body)
    await websocket.close(code=code)


@router.websocket("/{avatar_id}/live")
async def live(websocket: WebSocket, avatar_id: str) -> None:
    """Pose in, JPEG frame out (see the module docstring for the protocol)."""
    services = websocket.app.state.services
    storage, players = services.storage, services.players
    await websocket.accept()
    try:
        key = presented_key(websocket.headers) or websocket.query_params.get("api_key")
        client = websocket.client.host if websocket.client else None
        principal = await resolve_principal(services, key, client)
        await charge_rate(services, principal)
    except ApiError as exc:
        close = CLOSE_TOO_MANY if exc.status_code == 429 else CLOSE_UNAUTHORIZED
        await _refuse(websocket, close, error_body(exc.code, exc.message, exc.details))
        return
    meta = await run_in_threadpool(storage.read_meta, avatar_id) if is_valid_id(avatar_id) else None
    if meta is None or avatar_tenant(meta) != principal.tenant:
        await _refuse(websocket, CLOSE_NOT_FOUND, error_body(
            "avatar_not_found", "No avatar with this id.", {"avatar_id": avatar_id}))
        return
    glb = await run_in_threadpool(storage.glb_if_ready, avatar_id)
    if glb is None:
        await _refuse(websocket, CLOSE_NOT_READY, error_body(
            "avatar_not_ready", "The avatar is not built yet; poll its job.",
            {"avatar_id": avatar_id}))
        return
    slot = await services.stream_slots.acquire(principal.bucket)
    if slot is None:
        limit = services.settings.max_streams_per_key
        await _refuse(websocket, CLOSE_TOO_MANY, error_body(
            "too_many_streams", f"At most {limit} streams at once per API key.",
            {"max_streams": limit}))
        return
    frames = 0
    STREAMS_ACTIVE.labels("live").inc()
    try:
        player = await run_in_threadpool(players.get, avatar_id, glb)
        session = LiveSession(player, services.settings.stream_jpeg_quality)
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            parsed = parse_message(message)
            if isinstance(parsed, dict):
                await websocket.send_json(parsed)
                continue
            session.update(parsed)
            jpeg = await anyio.to_thread.run_sync(session.render, parsed)
            await websocket.send_bytes(jpeg)
            frames += 1
            STREAM_FRAMES.labels("live").inc()
            await slot.refresh_if_due()
    except (WebSocketDisconnect, OSError):  # OSError: uvicorn's ClientDisconnected on send
        pass
    finally:
        STREAMS_ACTIVE.labels("live").dec()
        with anyio.CancelScope(shield=True):
            await slot.release()
        if websocket.client_state == WebSocketState.CONNECTED and \
                websocket.application_state == WebSocketState.CONNECTED:
            try:
                await websocket.close()
            except Exception:  # the peer is gone already
                pass
        log.info("live session of %s ended after %d frames", avatar_id, frames)
