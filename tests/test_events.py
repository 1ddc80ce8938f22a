"""Job events (Server-Sent Events) and job cancel: the gateway side, the store side and
the worker side (a cancelled job stops at its next progress report)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from tests.conftest import small_jpeg, stored_job
from workers.jobs import (
    JobCancelledError,
    JobError,
    JobState,
    JobStore,
    RedisJobStore,
    SQLiteJobStore,
)
from workers.settings import Settings
from workers.storage import new_id


def parse_sse(body: str) -> list[dict]:
    """Events of an SSE body: dicts with event, id, data (parsed JSON) or comment."""
    events = []
    for block in body.split("\n\n"):
        if not block.strip():
            continue
        event: dict = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                event["comment"] = line[1:].strip()
            elif line.startswith("data: "):
                event["data"] = json.loads(line[6:])
            elif ": " in line:
                name, _, value = line.partition(": ")
                event[name] = value
        events.append(event)
    return events


@pytest.fixture
def fast_events(data_dir: Path) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=data_dir, allow_anonymous=True, events_poll_s=0.05, events_heartbeat_s=0.2,
        events_max_s=30,
    )
    with TestClient(create_app(settings)) as client:
        yield client


def _upload(client: TestClient) -> tuple[str, str]:
    response = client.post("/v1/avatars", files=[("photos", ("a.jpg", small_jpeg(), "image/jpeg"))])
    assert response.status_code == 202, response.text
    return response.json()["avatar_id"], response.json()["job_id"]


# --------------------------------------------------------------------- events
def test_events_follow_the_job_until_it_is_final(fast_events: TestClient) -> None:
    _, job_id = _upload(fast_events)
    jobs = fast_events.app.state.services.jobs

    def work() -> None:
        time.sleep(0.3)
        jobs.update(job_id, state=JobState.RUNNING, stage="detect", progress=0.05)
        time.sleep(0.5)  # long enough for a heartbeat
        jobs.update(job_id, stage="fit", progress=0.3)
        time.sleep(0.2)
        jobs.update(job_id, state=JobState.SUCCEEDED, stage=None, progress=1.0,
                    stage_seconds={"detect": 0.1, "fit": 0.2})

    worker = threading.Thread(target=work)
    worker.start()
    started = time.monotonic()
    response = fast_events.get(f"/v1/jobs/{job_id}/events")
    worker.join()
    assert time.monotonic() - started < 10
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-store"
    events = parse_sse(response.text)
    assert events[0] == {"retry": "2000"}
    jobs_seen = [e["data"] for e in events if e.get("event") == "job"]
    assert [j["state"] for j in jobs_seen] == ["queued", "running", "running", "succeeded"]
    assert [j["stage"] for j in jobs_seen] == [None, "detect", "fit", None]
    assert jobs_seen[-1]["progress"] == 1.0 and jobs_seen[-1]["id"] == job_id
    ids = [int(e["id"]) for e in events if e.get("event") == "job"]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert any(e.get("comment") == "keep-alive" for e in events)
    assert events[-1]["event"] == "job"  # the final state ends the stream


def test_events_are_bounded_in_time(data_dir: Path) -> None:
    settings = Settings(
        data_dir=data_dir, allow_anonymous=True, events_poll_s=0.05, events_heartbeat_s=0.1,
        events_max_s=0.5,
    )
    with TestClient(create_app(settings)) as client:
        _, job_id = _upload(client)  # no worker: it stays queued
        started = time.monotonic()
        events = parse_sse(client.get(f"/v1/jobs/{job_id}/events").text)
    assert time.monotonic() - started < 5
    assert [e["data"]["state"] for e in events if e.get("event") == "job"] == ["queued"]
    assert sum(e.get("comment") == "keep-alive" for e in events) >= 2
    assert events[-1]["event"] == "timeout" and events[-1]["data"] == {"reconnect": True}


def test_events_of_unknown_job_is_404_json(fast_events: TestClient) -> None:
    response = fast_events.get(f"/v1/jobs/{new_id()}/events")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "job_not_found"


# --------------------------------------------------------------------- cancel
def test_cancel_queued_job(fast_events: TestClient) -> None:
    avatar_id, job_id = _upload(fast_events)
    response = fast_events.delete(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "cancelled"
    again = fast_events.delete(f"/v1/jobs/{job_id}")
    assert again.status_code == 200 and again.json()["state"] == "cancelled"
    assert fast_events.get(f"/v1/jobs/{job_id}").json()["state"] == "cancelled"
    assert fast_events.get(f"/v1/avatars/{avatar_id}").json()["state"] == "cancelled"
    events = parse_sse(fast_events.get(f"/v1/jobs/{job_id}/events").text)
    assert [e["data"]["state"] for e in events if e.get("event") == "job"] == ["cancelled"]


def test_cancel_finished_job_is_409(fast_events: TestClient) -> None:
    _, job_id = _upload(fast_events)
    fast_events.app.state.services.jobs.update(job_id, state=JobState.SUCCEEDED, progress=1.0)
    response = fast_events.delete(f"/v1/jobs/{job_id}")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "job_finished"
    assert response.json()["error"]["details"]["state"] == "succeeded"


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    if request.param == "sqlite":
        job_store: JobStore = SQLiteJobStore(tmp_path / "jobs.sqlite")
    else:
        job_store = RedisJobStore(request.getfixturevalue("redis_server"), prefix=f"t:{new_id()}:")
    yield job_store
    job_store.close()


def test_cancelled_is_final_in_the_store(store: JobStore) -> None:
    job_id = new_id()
    store.create(job_id, new_id(), "acme")
    store.update(job_id, state=JobState.RUNNING, stage="fit", progress=0.3)
    cancelled = store.cancel(job_id)
    assert cancelled.state is JobState.CANCELLED and cancelled.tenant == "acme"
    assert cancelled.stage == "fit"
    with pytest.raises(JobCancelledError):
        store.update(job_id, progress=0.4)
    with pytest.raises(JobCancelledError):
        store.update(job_id, state=JobState.SUCCEEDED)
    assert store.get(job_id).state is JobState.CANCELLED
    assert store.get(job_id).finished
    # a finished job is not cancelled
    done = new_id()
    store.create(done, new_id())
    store.update(done, state=JobState.FAILED, error=JobError("x", "y"))
    assert store.cancel(done).state is JobState.FAILED


def test_delivery_counts(store: JobStore) -> None:
    job_id = new_id()
    store.create(job_id, new_id())
    assert [store.count_delivery(job_id, "fit") for _ in range(3)] == [1, 2, 3]
    assert store.count_delivery(job_id, "inpaint") == 1
    from workers.jobs import JobNotFoundError

    with pytest.raises(JobNotFoundError):
        store.count_delivery(new_id(), "fit")


# ------------------------------------------------------------- worker side


def test_worker_stops_at_the_next_progress_report(task_env, monkeypatch) -> None:
    """A job cancelled while its stage runs: the next progress write raises, the stage
    stops, the message is acked (IGNORED) and the job stays cancelled."""
    import models.pipeline
    from workers import tasks

    monkeypatch.setattr(tasks, "PROGRESS_INTERVAL_S", 0.0)
    avatar_id, job_id = stored_job(task_env)
    calls = []

    def fake_fit_stage(avatar_dir, progress):
        for i in range(100):
            calls.append(i)
            progress("fit", i / 100)
            if i == 3:
                task_env.jobs.cancel(job_id)
        return {"detect": 0.0, "fit": 0.0}

    monkeypatch.setattr(models.pipeline, "fit_stage", fake_fit_stage)
    result = tasks.fit_avatar.apply(args=(avatar_id, job_id))
    assert result.state == "IGNORED"
    assert len(calls) == 5  # stopped at the first report after the cancel
    assert task_env.jobs.get(job_id).state is JobState.CANCELLED
    # a later delivery of the chain (inpaint) does nothing
    assert tasks.inpaint_avatar.apply(args=(avatar_id, job_id)).state == "IGNORED"


def test_cancelled_before_start_never_runs(task_env, monkeypatch) -> None:
    import models.pipeline
    from workers import tasks

    avatar_id, job_id = stored_job(task_env)
    task_env.jobs.cancel(job_id)
    monkeypatch.setattr(models.pipeline, "fit_stage", lambda *a: pytest.fail("ran"))
    assert tasks.fit_avatar.apply(args=(avatar_id, job_id)).state == "IGNORED"
