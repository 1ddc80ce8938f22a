"""Pydantic schemas of the HTTP API: what comes in (``...Query``) and what goes out
(``...Public``), kept apart so internal records never leak fields by accident."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from workers.jobs import Job


# ----------------------------------------------------------------------------- in
class StreamQuery(BaseModel):
    """Query parameters of ``GET /v1/avatars/{id}/stream``.

    Unknown parameters are ignored: browsers showing MJPEG in an ``<img>`` often add
    a cache-busting parameter.
    """

    motion: str = Field("turntable", description="A motion name from GET /v1/motions.")
    size: int = Field(512, ge=64, le=2048, description="Frame width and height in pixels.")
    fps: int = Field(30, ge=1, le=60, description="Frames per second.")
    frames: int | None = Field(
        None, ge=1, description="Number of frames; default: one cycle of the motion."
    )
    loop: bool = Field(False, description="Stream until the client disconnects.")
    pace: bool = Field(True, description="false: send frames as fast as they render.")


# ---------------------------------------------------------------------------- out
class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. avatar_not_found.")
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class AvatarLinks(BaseModel):
    job: str
    avatar: str
    glb: str
    stream: str


class AvatarCreated(BaseModel):
    avatar_id: str
    job_id: str
    links: AvatarLinks


class JobErrorPublic(BaseModel):
    code: str
    message: str


class JobPublic(BaseModel):
    id: str
    avatar_id: str
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    stage: str | None = Field(
        description="Stage running now (detect, fit, texture, inpaint, bake); where it "
        "stopped for a failed job; null when queued or succeeded."
    )
    progress: float = Field(ge=0, le=1)
    stage_seconds: dict[str, float]
    error: JobErrorPublic | None
    created_at: str
    updated_at: str

    @classmethod
    def from_job(cls, job: Job) -> JobPublic:
        return cls.model_validate(job.to_dict())


class PhotoPublic(BaseModel):
    index: int
    format: str
    width: int
    height: int
    bytes: int
    original_filename: str | None = None


class AvatarPublic(BaseModel):
    id: str
    created_at: str
    state: Literal["queued", "running", "succeeded", "failed", "cancelled", "unknown"]
    ready: bool = Field(description="True when avatar.glb can be downloaded.")
    photos: list[PhotoPublic]
    job: JobPublic | None
    quality: dict[str, Any] | None = Field(description="The pipeline's quality.json, if any.")
    links: AvatarLinks


class MotionPublic(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    description: str | None = None
    duration_s: float | None = None


class MotionList(BaseModel):
    motions: list[MotionPublic]


class Health(BaseModel):
    status: Literal["ok"]


class CheckResult(BaseModel):
    ok: bool
    detail: Any = None


class Readiness(BaseModel):
    status: Literal["ready"]
    mode: Literal["embedded", "redis"]
    checks: dict[str, CheckResult]
