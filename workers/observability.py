"""Logs and metrics shared by the gateway and the workers.

Logs: one JSON object per line (``AVATARS_LOG_FORMAT=json``, the default of ``avatars
serve`` and ``avatars worker``) with the time, level, logger and message, plus the
request id, tenant and job id of the context the line was written in (context
variables, so they follow a request into its worker threads and a task through its
stage).

Metrics (Prometheus, ``prometheus_client``): the objects are module-level, one set per
process. When ``PROMETHEUS_MULTIPROC_DIR`` is set before this module is imported,
``prometheus_client`` keeps the values in files there, so the gateway's ``/metrics``
also shows what the embedded worker (or several gateway processes) recorded;
``avatars serve`` sets it for itself and its worker child.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

REQUEST_ID: ContextVar[str | None] = ContextVar("avatars_request_id", default=None)
TENANT: ContextVar[str | None] = ContextVar("avatars_tenant", default=None)
JOB_ID: ContextVar[str | None] = ContextVar("avatars_job_id", default=None)

# ------------------------------------------------------------------------ metrics
HTTP_REQUEST_SECONDS = Histogram(
    "avatars_http_request_duration_seconds",
    "Time from request to the end of the response, by route template.",
    ["method", "route", "status"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
HTTP_ERRORS = Counter(
    "avatars_http_errors_total", "Error responses of the API, by error code.", ["status", "code"]
)
JOB_STAGE_SECONDS = Histogram(
    "avatars_job_stage_seconds",
    "Seconds a pipeline stage of a job took (successful runs).",
    ["stage"],
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
)
JOB_FAILURES = Counter(
    "avatars_job_failures_total", "Jobs that failed, by error code.", ["code"]
)
JOBS_FINISHED = Counter(
    "avatars_jobs_finished_total", "Jobs that reached a final state.", ["state"]
)
TASK_DELIVERIES = Counter(
    "avatars_task_deliveries_total",
    "Stage tasks handed to a worker (redeliveries after a lost worker included).",
    ["task"],
)
STREAM_FRAMES = Counter(
    "avatars_stream_frames_total",
    "Frames sent to clients (rate() gives frames per second), by kind of stream.",
    ["kind"],
)
STREAMS_ACTIVE = Gauge(
    "avatars_streams_active",
    "Streams being served now, by kind.",
    ["kind"],
    multiprocess_mode="livesum",
)


# --------------------------------------------------------------------------- logs
def bind_tenant(tenant: str | None, key_id: str | None = None) -> None:
    """Record the request's tenant for its log lines (set inside the request's context)."""
    TENANT.set(tenant if key_id is None else f"{tenant}/{key_id}")


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Log lines written inside carry ``job_id``."""
    token = JOB_ID.set(job_id)
    try:
        yield
    finally:
        JOB_ID.reset(token)


_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message", "asctime", "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record; context ids and ``extra=`` fields included."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, var in (("request_id", REQUEST_ID), ("tenant", TENANT), ("job_id", JOB_ID)):
            value = var.get()
            if value is not None:
                data[name] = value
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_") and key not in data:
                data[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        if record.exc_info:
            data["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return json.dumps(data, ensure_ascii=False)


class ContextTextFormatter(logging.Formatter):
    """The plain text format, with the context ids appended when there are any."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = [
            f"{name}={var.get()}"
            for name, var in (("request_id", REQUEST_ID), ("job_id", JOB_ID))
            if var.get() is not None
        ]
        return f"{text} [{' '.join(ids)}]" if ids else text


def configure_logging(fmt: str = "json", level: int = logging.INFO) -> None:
    """Root logger -> stderr in ``fmt`` ("json" or "text"); replaces earlier handlers."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            ContextTextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # uvicorn's own loggers propagate to ours instead of printing their own format
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


def serve_metrics(port: int, host: str = "0.0.0.0") -> None:
    """Serve this process's metrics (all processes', in multiprocess mode) over HTTP."""
    import os

    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.registry import REGISTRY

    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    start_http_server(port, addr=host, registry=registry)
