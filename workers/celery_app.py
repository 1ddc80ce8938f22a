"""The one Celery app of the project, configured from ``workers.settings``.

The broker follows ``AVATARS_REDIS_URL``:

- set: Redis is the broker (and ``workers.jobs`` keeps job state in Redis too);
- unset (embedded mode): kombu's filesystem transport (``workers.fs_transport``)
  with its folders under ``data_dir/queue``, and job state in SQLite.

Job state lives in our own store, so Celery results are ignored. Tasks are acked
only after they finish (``task_acks_late``) and put back when the worker process
dies (``task_reject_on_worker_lost``); every stage writes atomically, so running a
stage twice is safe. ``worker_prefetch_multiplier=1`` keeps one heavy task per
process instead of hoarding messages that another worker could run.

Time: with Redis a message that is not acked within the visibility timeout is given
to another worker (that is how a job survives a worker killed outright), so every
stage has a hard time limit below it (``Settings.time_limit_s``, default 90 % of it)
and a soft limit a little earlier (the job then fails with ``timeout``). Unacked
messages of vanished workers are looked for every ``visibility/10`` seconds (at most
10 s). ``workers.tasks`` caps how often one job's stage may be redelivered.

``celery -A workers.celery_app worker`` finds the module-level ``app``; the gateway
builds its own app with ``create_celery_app(settings)`` so that tests can point it at
a temporary data dir.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import worker_init
from kombu import Exchange, Queue

from workers.settings import Settings, get_settings

FIT_QUEUE = "fit"
INPAINT_QUEUE = "inpaint"
FIT_TASK = "avatars.fit"
INPAINT_TASK = "avatars.inpaint"

#: Transport class of the embedded mode (kombu's filesystem transport, atomic publish).
EMBEDDED_TRANSPORT = "workers.fs_transport:Transport"


def embedded_queue_folders(settings: Settings) -> dict[str, str]:
    """Folders of the filesystem transport (see ``ensure_queue_folders``)."""
    root = settings.queue_dir
    return {
        "data_folder_in": str(root / "messages"),
        "data_folder_out": str(root / "messages"),
        "control_folder": str(root / "control"),
        "processed_folder": str(root / "claimed"),
    }


def ensure_queue_folders(settings: Settings) -> None:
    """Create the embedded queue's folders; a no-op with Redis.

    Called by whoever is about to use the queue (gateway start, worker start,
    ``enqueue_avatar``), never on import: importing this module must not touch disk.
    """
    if settings.embedded:
        for folder in set(embedded_queue_folders(settings).values()):
            Path(folder).mkdir(parents=True, exist_ok=True)


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery configuration for ``settings`` (pure: no I/O)."""
    conf: dict[str, Any] = {
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": settings.time_limit_s,
        "task_soft_time_limit": settings.soft_time_limit_s,
        "task_ignore_result": True,
        "result_backend": None,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_queues": (
            Queue(FIT_QUEUE, Exchange(FIT_QUEUE, type="direct"), routing_key=FIT_QUEUE),
            Queue(INPAINT_QUEUE, Exchange(INPAINT_QUEUE, type="direct"), routing_key=INPAINT_QUEUE),
        ),
        "task_default_queue": FIT_QUEUE,
        "task_routes": {
            FIT_TASK: {"queue": FIT_QUEUE, "routing_key": FIT_QUEUE},
            INPAINT_TASK: {"queue": INPAINT_QUEUE, "routing_key": INPAINT_QUEUE},
        },
        "broker_connection_retry_on_startup": True,
        # A gateway whose broker is down answers 503 quickly instead of hanging.
        "task_publish_retry_policy": {
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 1,
        },
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
    }
    if settings.redis_url:
        conf["broker_url"] = settings.redis_url
        conf["broker_connection_timeout"] = 5
        visibility = settings.redis_visibility_timeout_s
        conf["broker_transport_options"] = {
            "visibility_timeout": visibility,
            "socket_connect_timeout": 5,
            # sweep for messages of vanished workers every visibility/10 s (1..10 s)
            "unacked_restore_interval": max(1, min(10, visibility // 10)),
            "unacked_restore_throttle": 1,
        }
    else:
        # The scheme names the transport for people reading logs; the class actually
        # used is ``broker_transport`` (kombu prefers it over the URL's scheme).
        conf["broker_url"] = "filesystem://localhost//"
        conf["broker_transport"] = EMBEDDED_TRANSPORT
        conf["broker_transport_options"] = {
            **embedded_queue_folders(settings),
            "polling_interval": 0.5,
        }
        # Remote control needs a broadcast exchange whose per-worker queues would
        # pile up files for workers that are gone; the embedded mode has one worker.
        conf["worker_enable_remote_control"] = False
    return conf


def create_celery_app(settings: Settings | None = None, *, with_tasks: bool = False) -> Celery:
    """A Celery app for ``settings``; ``with_tasks`` also registers ``workers.tasks``."""
    settings = settings or get_settings()
    celery = Celery("avatars", include=["workers.tasks"] if with_tasks else [])
    celery.conf.update(celery_config(settings))
    return celery


#: The worker's app (``celery -A workers.celery_app worker``); tasks register on it.
app = create_celery_app(with_tasks=True)


@worker_init.connect
def _prepare_queue(**_: Any) -> None:
    """A worker started with plain ``celery -A workers.celery_app worker`` works too."""
    ensure_queue_folders(get_settings())
