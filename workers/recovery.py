"""Re-enqueue jobs orphaned by a crashed embedded worker.

With Redis, a message being worked on stays in Redis until it is acked, so a worker
that dies mid-stage loses nothing (``task_acks_late`` + ``task_reject_on_worker_lost``).
kombu's filesystem transport keeps an unacked message only in the consumer's
memory: if the embedded worker is killed mid-stage, the message is gone and the
job would stay ``running`` forever. So when an embedded worker starts and no other
embedded worker is alive, every ``running`` job is an orphan: it is sent again,
from the stage it was in (stages are idempotent, so repeating work is safe).
``queued`` jobs are left alone: their messages are still in the queue folder.
"""

from __future__ import annotations

import logging
import os

from celery import Celery

from workers.heartbeat import live_workers
from workers.jobs import JobState, JobStore
from workers.settings import Settings
from workers.storage import AvatarStorage
from workers.submit import avatar_chain, inpaint_signature

log = logging.getLogger(__name__)

FIT_STAGES = ("detect", "fit")


def recover_orphaned_jobs(
    settings: Settings, storage: AvatarStorage, jobs: JobStore, celery: Celery
) -> list[str]:
    """Re-send the running jobs of a dead embedded worker; returns their ids."""
    if not settings.embedded:
        return []
    others = [w for w in live_workers(settings) if w.get("pid") != os.getpid()]
    if others:
        log.info("not recovering jobs: %d other embedded worker(s) alive", len(others))
        return []
    recovered = []
    for job in jobs.list_unfinished():
        if job.state is not JobState.RUNNING:
            continue
        if not storage.exists(job.avatar_id):
            continue  # the task itself will mark it failed when it runs; nothing to send
        if job.stage in FIT_STAGES or job.stage is None:
            avatar_chain(celery, job.avatar_id, job.id).apply_async()
        else:
            inpaint_signature(celery, job.avatar_id, job.id).apply_async()
        log.warning("re-enqueued job %s (was running %s)", job.id, job.stage)
        recovered.append(job.id)
    return recovered
