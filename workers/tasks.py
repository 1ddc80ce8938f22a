"""Celery tasks: thin wrappers over ``models.pipeline.fit_stage`` / ``inpaint_stage``.

Each task only translates between Celery and the pipeline: it marks the job
running, forwards stage progress into the job store, records seconds per stage,
and turns failures into a job error with a stable code:

- ``PipelineError`` that is not transient (bad input): job failed with its code, no retry;
- transient ``PipelineError`` or a lost connection to Redis: retried up to
  ``task_max_retries`` with exponential backoff (``task_retry_delay_s`` doubling, with
  jitter, at most ``task_retry_max_delay_s``), then failed;
- the soft time limit: job failed with ``timeout`` (no retry: it would time out again);
- anything else: job failed with ``internal_error`` and a generic message; the
  traceback goes to the worker log, never to the client.

Faults: a job store (Redis) that goes away for a moment is waited for
(``store_outage_wait_s``); if it stays away, the message is handed back to the broker
(rejected with requeue; if the broker is down too, it stays unacked and comes back
after the visibility timeout), never dropped. Celery's own retry is used only while
the broker answers: a retry that cannot be published would drop the message.
Each delivery of a stage is counted in the job store first. A delivery that
never finished (its worker was killed: acks_late puts the message back) shows up as
one more delivery than retries explain; after ``task_max_deliveries`` of those the
job fails with ``worker_crashed`` and the message is acknowledged, so a photo that
kills workers cannot loop forever. A cancelled job (``DELETE /v1/jobs/{id}``) makes
the next progress write raise ``JobCancelledError``: the stage stops there and the
chain ends.

A failed stage raises ``Ignore`` so the message is acknowledged and the chain stops
(the inpaint stage never runs after a failed fit). ``models`` is imported inside the
task, so importing this module (the gateway never does) does not import torch.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from celery import Task
from celery.exceptions import Ignore, Reject, Retry, SoftTimeLimitExceeded
from celery.signals import worker_process_init, worker_ready, worker_shutdown

from workers.celery_app import FIT_QUEUE, FIT_TASK, INPAINT_QUEUE, INPAINT_TASK, app
from workers.heartbeat import HeartbeatWriter
from workers.jobs import (
    STAGE_SPANS,
    JobCancelledError,
    JobError,
    JobNotFoundError,
    JobState,
    JobStore,
    make_job_store,
    overall_progress,
)
from workers.observability import (
    JOB_FAILURES,
    JOB_STAGE_SECONDS,
    JOBS_FINISHED,
    TASK_DELIVERIES,
    job_context,
)
from workers.recovery import recover_orphaned_jobs
from workers.settings import Settings, get_settings
from workers.storage import AvatarStorage

log = logging.getLogger(__name__)

INTERNAL_ERROR_MESSAGE = "The avatar could not be built because of an internal error."

#: Least time between two progress writes of one task (the last write of a stage
#: always goes through).
PROGRESS_INTERVAL_S = 0.25


@dataclass(frozen=True)
class WorkerContext:
    settings: Settings
    storage: AvatarStorage
    jobs: JobStore


@lru_cache(maxsize=1)
def worker_context() -> WorkerContext:
    """Storage and job store of this worker process, built once on first use."""
    settings = get_settings()
    return WorkerContext(settings, AvatarStorage(settings.avatars_dir), make_job_store(settings))


class ProgressReporter:
    """The ``progress(stage, fraction)`` callback handed to the pipeline.

    Writes are throttled and never go backwards within one task run. A job store
    hiccup is logged, not raised (it must not fail an otherwise good stage); a
    cancelled job raises ``JobCancelledError`` so the stage stops.
    """

    def __init__(self, jobs: JobStore, job_id: str, stages: tuple[str, ...]) -> None:
        self.jobs = jobs
        self.job_id = job_id
        self.stages = stages
        self.best = 0.0
        self.stage: str | None = None
        self.last_write = 0.0
        self.lock = threading.Lock()

    def __call__(self, stage: str, fraction: float) -> None:
        if stage not in STAGE_SPANS:
            log.debug("ignoring progress for unknown stage %r", stage)
            return
        with self.lock:
            value = max(self.best, overall_progress(stage, fraction))
            now = time.monotonic()
            changed_stage = stage != self.stage
            if not changed_stage and fraction < 1.0 and now - self.last_write < PROGRESS_INTERVAL_S:
                return
            self.best, self.stage, self.last_write = value, stage, now
            try:
                self.jobs.update(self.job_id, stage=stage, progress=value)
            except JobCancelledError:
                raise
            except Exception:
                log.warning("progress update failed for job %s", self.job_id, exc_info=True)


StageFn = Callable[[Path, Callable[[str, float], None]], dict[str, float]]


def retry_delay(settings: Settings, retries: int) -> float:
    """Exponential backoff with jitter: delay * 2**retries * [0.5, 1.0], capped."""
    base = settings.task_retry_delay_s * (2**retries)
    return min(settings.task_retry_max_delay_s, base * random.uniform(0.5, 1.0))


def _transient_infra_errors() -> tuple[type[BaseException], ...]:
    """Errors of the job store's transport that a retry may fix."""
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError
    except ImportError:  # pragma: no cover - redis is a dependency
        return ()
    return (RedisConnectionError, RedisTimeoutError)


def patiently(settings: Settings, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a job store operation, waiting out a short outage of the store (Redis
    restarting): connection errors are retried with backoff for ``store_outage_wait_s``,
    then raised."""
    deadline = time.monotonic() + settings.store_outage_wait_s
    delay = 0.25
    while True:
        try:
            return fn(*args, **kwargs)
        except _transient_infra_errors() as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("job store unreachable (%s); trying again in %.1f s", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _give_back(exc: BaseException) -> Reject:
    """Hand the message back to the broker (requeue); never drop it."""
    log.error("job store unreachable for too long (%s); handing the message back", exc)
    return Reject(exc, requeue=True)


def _retry(task: Task, exc: BaseException, delay: float) -> BaseException:
    """Celery's retry; if it cannot be published (broker down), requeue instead of the
    drop Celery would do."""
    try:
        return task.retry(exc=exc, countdown=delay)
    except Reject as rejected:
        log.warning("could not schedule a retry (%s); requeueing", rejected.reason)
        return Reject(exc, requeue=True)


def _run_stage(
    task: Task, *, name: str, stages: tuple[str, ...], last: bool, avatar_id: str, job_id: str
) -> dict[str, Any]:
    """Run one pipeline stage for a job; shared by both tasks."""
    with job_context(job_id):
        return _run_stage_in_context(
            task, name=name, stages=stages, last=last, avatar_id=avatar_id, job_id=job_id
        )


def _run_stage_in_context(
    task: Task, *, name: str, stages: tuple[str, ...], last: bool, avatar_id: str, job_id: str
) -> dict[str, Any]:
    ctx = worker_context()
    retries = task.request.retries or 0
    try:
        job = patiently(ctx.settings, ctx.jobs.get, job_id)
    except _transient_infra_errors() as exc:
        raise _give_back(exc) from exc
    if job is None:
        log.warning("%s: job %s does not exist; dropping the message", name, job_id)
        raise Ignore()
    if job.finished:
        log.info("%s: job %s already %s; nothing to do", name, job_id, job.state.value)
        raise Ignore()
    if not last and all(stage in job.stage_seconds for stage in stages):
        # A redelivered message of a stage that finished (its worker died before the
        # ack): pass the job on instead of running the stage again.
        log.info("%s: job %s already did this stage; passing it on", name, job_id)
        return {"avatar_id": avatar_id, "job_id": job_id, "seconds": {}}

    def fail(code: str, message: str) -> None:
        try:
            patiently(
                ctx.settings, ctx.jobs.update, job_id,
                state=JobState.FAILED, error=JobError(code, message),
            )
        except _transient_infra_errors() as exc:
            raise _give_back(exc) from exc
        except JobNotFoundError:
            log.warning("job %s vanished before it could be marked failed", job_id)
            return
        except JobCancelledError:
            log.info("job %s was cancelled; not marking it failed (%s)", job_id, code)
            return
        JOB_FAILURES.labels(code).inc()
        JOBS_FINISHED.labels(JobState.FAILED.value).inc()

    TASK_DELIVERIES.labels(name).inc()
    try:
        deliveries = patiently(ctx.settings, ctx.jobs.count_delivery, job_id, name)
    except _transient_infra_errors() as exc:
        raise _give_back(exc) from exc
    lost = deliveries - 1 - retries
    if lost > 0:
        log.warning(
            "%s: job %s delivered again after %d unfinished run(s) (worker lost)", name, job_id, lost
        )
    log.info("%s: job %s started (delivery %d, retry %d)", name, job_id, deliveries, retries)
    if lost >= ctx.settings.task_max_deliveries:
        log.error("%s: job %s gave up after %d lost runs", name, job_id, lost)
        fail(
            "worker_crashed",
            "The avatar could not be built: the worker stopped while processing it, repeatedly.",
        )
        raise Ignore()

    if not ctx.storage.exists(avatar_id):
        fail("avatar_not_found", "The avatar's photos are no longer stored.")
        raise Ignore()

    try:
        patiently(
            ctx.settings,
            ctx.jobs.update,
            job_id,
            state=JobState.RUNNING,
            stage=stages[0],
            progress=max(job.progress, overall_progress(stages[0], 0.0)),
            error=None,
        )
    except JobCancelledError:
        log.info("%s: job %s was cancelled before it started", name, job_id)
        raise Ignore() from None
    except _transient_infra_errors() as exc:
        raise _give_back(exc) from exc
    from models import pipeline
    from models.errors import PipelineError

    stage_fn: StageFn = getattr(pipeline, f"{name}_stage")
    reporter = ProgressReporter(ctx.jobs, job_id, stages)
    started = time.monotonic()
    try:
        seconds = stage_fn(ctx.storage.avatar_dir(avatar_id), reporter)
    except Retry:
        raise
    except JobCancelledError:
        log.info("%s: job %s cancelled; stopped after %.1f s", name, job_id,
                 time.monotonic() - started)
        raise Ignore() from None
    except SoftTimeLimitExceeded:
        log.error("%s: job %s hit the time limit", name, job_id)
        fail("timeout", "The avatar took too long to build.")
        raise Ignore() from None
    except PipelineError as exc:
        if getattr(exc, "transient", False) and retries < ctx.settings.task_max_retries:
            delay = retry_delay(ctx.settings, retries)
            log.warning(
                "%s: transient error on job %s (%s), retry %d in %.1f s",
                name, job_id, exc.code, retries + 1, delay,
            )
            raise _retry(task, exc, delay) from exc
        log.info("%s: job %s failed: %s: %s", name, job_id, exc.code, exc.message)
        fail(str(exc.code), str(exc.message))
        raise Ignore() from exc
    except _transient_infra_errors() as exc:
        raise _give_back(exc) from exc
    except Exception:
        log.exception("%s: unexpected error on job %s (avatar %s)", name, job_id, avatar_id)
        fail("internal_error", INTERNAL_ERROR_MESSAGE)
        raise Ignore() from None

    seconds = {k: float(v) for k, v in (seconds or {}).items()}
    for stage, value in seconds.items():
        if stage in STAGE_SPANS:
            JOB_STAGE_SECONDS.labels(stage).observe(value)
    log.info("%s: job %s done in %.1f s %s", name, job_id, time.monotonic() - started, seconds)
    end = overall_progress(stages[-1], 1.0)
    try:
        if last:
            patiently(
                ctx.settings, ctx.jobs.update, job_id,
                state=JobState.SUCCEEDED, stage=None, progress=1.0, stage_seconds=seconds,
            )
            JOBS_FINISHED.labels(JobState.SUCCEEDED.value).inc()
        else:
            patiently(
                ctx.settings, ctx.jobs.update, job_id,
                stage=stages[-1], progress=end, stage_seconds=seconds,
            )
    except JobCancelledError:
        log.info("%s: job %s was cancelled while its stage ran", name, job_id)
        raise Ignore() from None
    except _transient_infra_errors() as exc:
        raise _give_back(exc) from exc
    return {"avatar_id": avatar_id, "job_id": job_id, "seconds": seconds}


@app.task(name=FIT_TASK, bind=True, queue=FIT_QUEUE, max_retries=None)
def fit_avatar(self: Task, avatar_id: str, job_id: str) -> dict[str, Any]:
    """Detect the person and fit the body model (``models.pipeline.fit_stage``)."""
    return _run_stage(
        self, name="fit", stages=("detect", "fit"), last=False, avatar_id=avatar_id, job_id=job_id
    )


@app.task(name=INPAINT_TASK, bind=True, queue=INPAINT_QUEUE, max_retries=None)
def inpaint_avatar(self: Task, avatar_id: str, job_id: str) -> dict[str, Any]:
    """Build the texture, inpaint unseen texels and bake the glb (``inpaint_stage``)."""
    return _run_stage(
        self,
        name="inpaint",
        stages=("texture", "inpaint", "bake"),
        last=True,
        avatar_id=avatar_id,
        job_id=job_id,
    )


class _Heartbeat:
    """Holds this worker's heartbeat writer between the ready and shutdown signals."""

    writer: HeartbeatWriter | None = None


#: Set by ``avatars worker`` to its ``--pool``. The prefork and solo pools announce each
#: process that runs tasks (``worker_process_init``); the threads pool does not, so the
#: worker process itself warms up when it is ready.
POOL_SETTING = "AVATARS_WORKER_POOL"
_warm_started = threading.Event()


def warm_models(queues: list[str]) -> None:
    """Load what this worker's tasks need (the body model; the person detector for the fit
    queue; the inpainting model for the inpaint queue) so the first job does not pay for it. Runs in a background thread: a
    task that starts meanwhile waits on the registries' locks, never loads twice. A
    failure is only logged: the task reports it properly when it needs the model."""
    t0 = time.perf_counter()
    try:
        from models.body.registry import get_body

        get_body()
        if FIT_QUEUE in queues:
            from models.detect.mediapipe_detector import warm_up

            warm_up()
        if INPAINT_QUEUE in queues:
            from models.inpaint.registry import get_inpainter, inpaint_method

            if inpaint_method() == "diffusion":
                get_inpainter()
    except Exception as exc:  # noqa: BLE001 - the first task raises it with its job
        log.warning("model warm-up failed (the first job will report it): %s", exc)
        return
    log.info("models loaded in %.1f s", time.perf_counter() - t0)


def _start_warm_up() -> None:
    if not get_settings().warm_models or _warm_started.is_set():
        return
    _warm_started.set()
    queues = sorted(app.amqp.queues.consume_from or app.amqp.queues)
    threading.Thread(target=warm_models, args=(queues,), name="warm-models", daemon=True).start()


@worker_process_init.connect
def _warm_pool_process(**_: Any) -> None:
    _start_warm_up()


@worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    settings = get_settings()
    if os.environ.get(POOL_SETTING, "prefork") == "threads":
        _start_warm_up()
    queues = sorted(app.amqp.queues.consume_from or app.amqp.queues)
    if not settings.embedded:
        import redis

        client = redis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=2, socket_timeout=2
        )
        _Heartbeat.writer = HeartbeatWriter(settings, queues, redis_client=client)
        _Heartbeat.writer.start()
        return
    ctx = worker_context()
    try:
        recover_orphaned_jobs(settings, ctx.storage, ctx.jobs, app)
    except Exception:
        log.exception("could not recover orphaned jobs")
    # The heartbeat starts after recovery: until then /readyz does not count us.
    _Heartbeat.writer = HeartbeatWriter(settings, queues)
    _Heartbeat.writer.start()


@worker_shutdown.connect
def _stop_heartbeat(sender: Any = None, **_: Any) -> None:
    if _Heartbeat.writer is not None:
        _Heartbeat.writer.stop()
        _Heartbeat.writer = None
