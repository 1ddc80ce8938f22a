"""``/v1/jobs``: build state of an avatar, for polling."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import ExistingJob
from service.api.schemas import ErrorResponse, JobPublic

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.get("/{job_id}", response_model=JobPublic, responses={404: {"model": ErrorResponse}})
async def get_job(job: ExistingJob) -> JobPublic:
    """State, stage, progress 0..1, seconds per stage and error of a job."""
    return JobPublic.from_job(job)
