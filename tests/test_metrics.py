"""Observability: /metrics (Prometheus), request ids in and out, JSON logs with request
and job ids, and /readyz seeing workers through Redis."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from tests.conftest import REPO_ROOT, small_jpeg
from workers.observability import JsonFormatter
from workers.settings import Settings
from workers.storage import new_id


def sample(text: str, name: str, **labels: str) -> float | None:
    """Value of one sample of a Prometheus text exposition (None when absent)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        match = re.match(r"([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(3) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(4))
    return None


def test_metrics_cover_routes_errors_and_queue(client: TestClient) -> None:
    created = client.post("/v1/avatars", files=[("photos", ("a.jpg", small_jpeg(), "image/jpeg"))])
    job_id = created.json()["job_id"]
    for _ in range(3):
        assert client.get(f"/v1/jobs/{job_id}").status_code == 200
    assert client.get(f"/v1/jobs/{new_id()}").status_code == 404
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    count = sample(
        text, "avatars_http_request_duration_seconds_count",
        method="GET", route="/v1/jobs/{job_id}", status="200",
    )
    assert count is not None and count >= 3
    assert sample(
        text, "avatars_http_request_duration_seconds_count",
        method="POST", route="/v1/avatars", status="202",
    )
    assert sample(text, "avatars_http_errors_total", status="404", code="job_not_found") >= 1
    assert sample(text, "avatars_queue_depth", queue="fit") == 1
    assert sample(text, "avatars_queue_depth", queue="inpaint") == 0
    assert sample(text, "avatars_broker_up") == 1
    for family in ("avatars_job_stage_seconds", "avatars_job_failures_total",
                   "avatars_stream_frames_total", "avatars_streams_active"):
        assert f"# TYPE {family.removesuffix('_total')}" in text, family
    # unknown paths share one label value: no unbounded cardinality
    client.get(f"/no/such/{new_id()}")
    assert sample(client.get("/metrics").text, "avatars_http_request_duration_seconds_count",
                  route="unmatched", status="404") >= 1


def test_request_id_in_and_out(client: TestClient) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": "req-123.abc"})
    assert response.headers["x-request-id"] == "req-123.abc"
    generated = client.get("/healthz").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    for bad in ("has space", "x" * 200, "semi;colon"):
        echoed = client.get("/healthz", headers={"X-Request-ID": bad}).headers["x-request-id"]
        assert echoed != bad and re.fullmatch(r"[0-9a-f]{32}", echoed)
    error = client.get(f"/v1/jobs/{new_id()}", headers={"X-Request-ID": "r-404"})
    assert error.headers["x-request-id"] == "r-404"


def test_json_logs_carry_request_and_job_ids(client: TestClient) -> None:
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        created = client.post(
            "/v1/avatars", headers={"X-Request-ID": "upload-1"},
            files=[("photos", ("a.jpg", small_jpeg(), "image/jpeg"))],
        )
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    job_id = created.json()["job_id"]
    records = [json.loads(line) for line in lines]
    mine = [r for r in records if r.get("request_id") == "upload-1"]
    assert any(r.get("job_id") == job_id and "created" in r["message"] for r in mine), records
    access = [r for r in mine if r["logger"] == "service.access"]
    assert access and access[0]["status"] == 202 and access[0]["route"] == "/v1/avatars"
    assert all({"ts", "level", "logger", "message"} <= set(r) for r in records)


def test_json_formatter_includes_exceptions() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed %s", ("here",),
                                   sys.exc_info())
    data = json.loads(JsonFormatter().format(record))
    assert data["message"] == "failed here" and "ValueError: boom" in data["exception"]


def test_worker_records_stage_seconds_and_failures(tmp_path: Path, monkeypatch) -> None:
    from prometheus_client import REGISTRY

    import models.pipeline
    from models.errors import PipelineError
    from workers.settings import get_settings
    from workers.storage import NewPhoto
    from workers.tasks import fit_avatar, worker_context

    monkeypatch.setenv("AVATARS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("AVATARS_REDIS_URL", raising=False)
    get_settings.cache_clear()
    worker_context.cache_clear()
    ctx = worker_context()
    try:
        def stored() -> tuple[str, str]:
            job_id = new_id()
            meta = ctx.storage.create([NewPhoto(io.BytesIO(small_jpeg()), "JPEG", 64, 48)], job_id=job_id)
            ctx.jobs.create(job_id, meta["id"])
            return meta["id"], job_id

        def value(name: str, **labels: str) -> float:
            return REGISTRY.get_sample_value(name, labels) or 0.0

        before = value("avatars_job_stage_seconds_count", stage="fit")
        monkeypatch.setattr(models.pipeline, "fit_stage", lambda d, p: {"detect": 0.5, "fit": 2.0})
        fit_avatar.apply(args=stored())
        assert value("avatars_job_stage_seconds_count", stage="fit") == before + 1

        failures = value("avatars_job_failures_total", code="no_person_detected")

        def no_person(d, p):
            raise PipelineError("no_person_detected", "No person.")

        monkeypatch.setattr(models.pipeline, "fit_stage", no_person)
        fit_avatar.apply(args=stored())
        assert value("avatars_job_failures_total", code="no_person_detected") == failures + 1
    finally:
        get_settings.cache_clear()
        worker_context.cache_clear()


def test_multiprocess_metrics_add_up(tmp_path: Path) -> None:
    """Gateway and embedded worker share PROMETHEUS_MULTIPROC_DIR: what a worker process
    records shows on the gateway's /metrics."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "PYTHONPATH": str(REPO_ROOT)}
    worker = textwrap.dedent("""
        from workers.observability import JOB_FAILURES, JOB_STAGE_SECONDS
        JOB_FAILURES.labels("worker_crashed").inc(2)
        JOB_STAGE_SECONDS.labels("fit").observe(12.0)
    """)
    gateway = textwrap.dedent(f"""
        from types import SimpleNamespace
        from pathlib import Path
        from service.observability import metrics_text
        services = SimpleNamespace(redis=None, settings=SimpleNamespace(queue_dir=Path({str(tmp_path)!r})))
        print(metrics_text(services).decode())
    """)
    for code in (worker, worker):
        subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60, cwd=REPO_ROOT)
    out = subprocess.run([sys.executable, "-c", gateway], env=env, check=True, timeout=60,
                         capture_output=True, text=True, cwd=REPO_ROOT).stdout
    assert sample(out, "avatars_job_failures_total", code="worker_crashed") == 4
    assert sample(out, "avatars_job_stage_seconds_count", stage="fit") == 2


def test_readyz_sees_workers_through_redis(redis_server: str, data_dir: Path) -> None:
    import redis

    from workers.heartbeat import REDIS_WORKERS_INFO, REDIS_WORKERS_KEY, HeartbeatWriter

    settings = Settings(data_dir=data_dir, redis_url=redis_server, worker_stale_s=2)
    client_redis = redis.Redis.from_url(redis_server)
    client_redis.delete(REDIS_WORKERS_KEY, REDIS_WORKERS_INFO)
    with TestClient(create_app(settings)) as client:
        body = client.get("/readyz").json()
        broker = body["error"]["details"]["checks"]["broker"]
        assert not broker["ok"] and broker["detail"]["queues"] == {"fit": 0, "inpaint": 0}
        fit = HeartbeatWriter(settings, ["fit"], redis_client=client_redis)
        fit.beat()
        broker = client.get("/readyz").json()["error"]["details"]["checks"]["broker"]
        assert broker["detail"]["queues"] == {"fit": 1, "inpaint": 0}  # inpaint missing
        inpaint = HeartbeatWriter(settings, ["inpaint"], redis_client=client_redis)
        inpaint.name += "-2"
        inpaint.beat()
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["broker"]["detail"]["queues"] == {"fit": 1, "inpaint": 1}
        time.sleep(2.5)  # no more beats: stale
        assert client.get("/readyz").status_code == 503
        inpaint.beat()
        fit.beat()
        assert client.get("/readyz").status_code == 200
        fit.stop()
        inpaint.stop()
        assert client.get("/readyz").status_code == 503
    client_redis.close()


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_configure_logging(fmt: str, capsys) -> None:
    from workers.observability import REQUEST_ID, configure_logging

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    token = REQUEST_ID.set("rid-1")
    try:
        configure_logging(fmt)
        logging.getLogger("t").info("hello %d", 5)
    finally:
        REQUEST_ID.reset(token)
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    if fmt == "json":
        assert json.loads(err)["request_id"] == "rid-1"
    else:
        assert err.endswith("hello 5 [request_id=rid-1]")
