"""``/v1/jobs``: build state of an avatar: poll it, follow it as events, cancel it."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from fastapi import APIRouter, Depends
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from service.api.deps import ExistingJob, JobStoreDep, ServicesDep, SettingsDep, authenticate
from service.api.errors import ApiError
from service.api.schemas import ErrorResponse, JobPublic
from workers.jobs import Job, JobNotFoundError, JobState
from workers.observability import JOBS_FINISHED
from workers.settings import Settings

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(authenticate)])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (401, 404, 409, 422, 429, 503)
}
EVENT_STREAM = "text/event-stream"


@router.get("/{job_id}", response_model=JobPublic, responses=_ERRORS)
async def get_job(job: ExistingJob) -> Response:
    """State, stage, progress 0..1, seconds per stage and error of a job."""
    # serialized here, once: the hot path of every polling client
    return Response(JobPublic.from_job(job).model_dump_json(), media_type="application/json")


@router.delete("/{job_id}", response_model=JobPublic, responses=_ERRORS)
async def cancel_job(job: ExistingJob, jobs: JobStoreDep) -> JobPublic:
    """Cancel a queued or running job: its state becomes ``cancelled`` at once and the
    worker stops at its next progress report or stage boundary. Cancelling a cancelled
    job again is fine; a job that already succeeded or failed is 409 ``job_finished``."""
    if job.state is not JobState.CANCELLED:
        try:
            job = await run_in_threadpool(jobs.cancel, job.id)
        except JobNotFoundError:
            raise ApiError(404, "job_not_found", "No job with this id.", {"job_id": job.id}) from None
        if job.state is JobState.CANCELLED:
            JOBS_FINISHED.labels(JobState.CANCELLED.value).inc()
    if job.state is not JobState.CANCELLED:
        raise ApiError(
            409, "job_finished", f"The job has already {job.state.value}.",
            {"job_id": job.id, "state": job.state.value},
        )
    return JobPublic.from_job(job)


def sse(event: str, data: str, event_id: int | None = None) -> bytes:
    """One Server-Sent Event (``data`` is one line of JSON)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n".encode()


def _snapshot(job: Job) -> tuple[Any, ...]:
    return (job.state, job.stage, job.progress, job.error, tuple(sorted(job.stage_seconds)))


async def job_events(
    read: Callable[[str], Awaitable[Job | None]], first: Job, settings: Settings
) -> AsyncIterator[bytes]:
    """Events of one job: an ``job`` event (the job as ``GET /v1/jobs/{id}`` shows it)
    whenever its state, stage, progress or error changes, until it is final; a comment
    line when nothing was sent for ``events_heartbeat_s``; at most ``events_max_s``
    long (then a ``timeout`` event: reconnect for more)."""
    started = last_sent_at = time.monotonic()
    job: Job | None = first
    previous: tuple[Any, ...] | None = None
    event_id = 0
    yield b"retry: 2000\n\n"
    while True:
        now = time.monotonic()
        if job is None:
            body = {"error": {"code": "job_not_found", "message": "The job no longer exists."}}
            yield sse("error", json.dumps(body))
            return
        snapshot = _snapshot(job)
        if snapshot != previous:
            event_id += 1
            yield sse("job", JobPublic.from_job(job).model_dump_json(), event_id)
            previous, last_sent_at = snapshot, now
        if job.finished:
            return
        if now - started >= settings.events_max_s:
            yield sse("timeout", json.dumps({"reconnect": True}))
            return
        if now - last_sent_at >= settings.events_heartbeat_s:
            yield b": keep-alive\n\n"
            last_sent_at = now
        await anyio.sleep(settings.events_poll_s)
        try:
            job = await read(first.id)
        except Exception:  # noqa: BLE001 - store unreachable for a moment: keep waiting
            log.warning("job events: could not read job %s; trying again", first.id)


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {EVENT_STREAM: {"schema": {"type": "string"}}}}, **_ERRORS},
)
async def get_job_events(
    job: ExistingJob, services: ServicesDep, settings: SettingsDep
) -> StreamingResponse:
    """Server-Sent Events of a job: ``event: job`` with the job (as ``GET /v1/jobs/{id}``)
    on every change of state, stage or progress, until the job is final; ``: keep-alive``
    comments while idle; the stream ends after ``events_max_s`` with ``event: timeout``."""
    return StreamingResponse(
        job_events(services.get_job, job, settings),
        media_type=EVENT_STREAM,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
