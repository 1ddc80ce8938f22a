"""Enqueue the build of an avatar: a chain fit -> inpaint, sent by task name.

Sending by name means the gateway never imports the task code (nor, through it,
the ML pipeline): it only needs a Celery app configured for the same broker.
"""

from __future__ import annotations

from celery import Celery, Signature, chain

from workers.celery_app import (
    FIT_QUEUE,
    FIT_TASK,
    INPAINT_QUEUE,
    INPAINT_TASK,
    ensure_queue_folders,
)
from workers.settings import get_settings


def fit_signature(celery: Celery, avatar_id: str, job_id: str) -> Signature:
    return celery.signature(FIT_TASK, args=(avatar_id, job_id), immutable=True, queue=FIT_QUEUE)


def inpaint_signature(celery: Celery, avatar_id: str, job_id: str) -> Signature:
    return celery.signature(
        INPAINT_TASK, args=(avatar_id, job_id), immutable=True, queue=INPAINT_QUEUE
    )


def avatar_chain(celery: Celery, avatar_id: str, job_id: str) -> chain:
    """The two-stage chain; immutable signatures so each stage gets only its ids."""
    return chain(
        fit_signature(celery, avatar_id, job_id), inpaint_signature(celery, avatar_id, job_id)
    )


def enqueue_avatar(avatar_id: str, job_id: str, celery: Celery | None = None) -> None:
    """Send fit -> inpaint for an avatar whose originals and job already exist."""
    if celery is None:
        from workers.celery_app import app as celery

        ensure_queue_folders(get_settings())
    avatar_chain(celery, avatar_id, job_id).apply_async()
