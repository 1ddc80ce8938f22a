"""``/v1/motions``: the built-in motions a stream can play."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from service.api.deps import authenticate
from service.api.schemas import ErrorResponse, MotionList, MotionPublic

router = APIRouter(prefix="/v1/motions", tags=["motions"], dependencies=[Depends(authenticate)])


def _list_motions() -> list[dict]:
    from models.animation.motions import list_motions

    return list_motions()


@router.get(
    "",
    response_model=MotionList,
    responses={code: {"model": ErrorResponse} for code in (401, 429, 503)},
)
async def get_motions() -> MotionList:
    motions = await run_in_threadpool(_list_motions)
    return MotionList(motions=[MotionPublic.model_validate(m) for m in motions])
