"""Production shape, for real: redis-server + an ``avatars worker`` process + the gateway.

A photo of a synthetic person goes in through ``POST /v1/avatars``; the worker runs
the real pipeline (``models.pipeline``) through Redis; the job is polled to
``succeeded``; the avatar is streamed and downloaded. A photo without a person
must fail with ``no_person_detected`` and leave no bundle or half-written file.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from conftest import wait_until
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from workers.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

JOB_TIMEOUT_S = 300
STAGES = {"detect", "fit", "texture", "inpaint", "bake"}


def worker_log(worker) -> str:
    return Path(worker.log_path).read_text(errors="replace")[-4000:]


def poll_job(client: TestClient, job_id: str, worker, timeout_s: float = JOB_TIMEOUT_S):
    """Poll a job until it finishes; returns (final job, every progress value seen)."""
    seen: list[float] = []

    def finished():
        job = client.get(f"/v1/jobs/{job_id}").json()
        seen.append(job["progress"])
        return job if job["state"] in ("succeeded", "failed") else None

    try:
        job = wait_until(finished, timeout_s, interval_s=0.5, what=f"job {job_id}")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\nworker log:\n{worker_log(worker)}") from exc
    return job, seen


def split_mjpeg(body: bytes, boundary: str = "frame") -> list[bytes]:
    """JPEG payloads of a multipart/x-mixed-replace body, using Content-Length."""
    frames = []
    marker = f"--{boundary}\r\n".encode()
    pos = 0
    while (start := body.find(marker, pos)) != -1:
        header_end = body.index(b"\r\n\r\n", start)
        headers = body[start + len(marker) : header_end].decode("ascii").split("\r\n")
        length = int(
            next(h for h in headers if h.lower().startswith("content-length")).split(":")[1]
        )
        payload = body[header_end + 4 : header_end + 4 + length]
        frames.append(payload)
        pos = header_end + 4 + length
    return frames


def leftover_temp_files(avatar_dir: Path) -> list[str]:
    return [
        str(p.relative_to(avatar_dir))
        for p in avatar_dir.rglob("*")
        if p.name.startswith(".") or p.name.endswith(".tmp")
    ]


@pytest.fixture
def gateway(redis_server: str, data_dir: Path):
    settings = Settings(data_dir=data_dir, redis_url=redis_server, allow_anonymous=True)
    with TestClient(create_app(settings)) as client:
        yield client


def test_photo_to_streamed_avatar(gateway: TestClient, worker_process, data_dir, person_photo):
    ready = gateway.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["mode"] == "redis"

    response = gateway.post(
        "/v1/avatars", files=[("photos", ("person.png", person_photo, "image/png"))]
    )
    assert response.status_code == 202, response.text
    created = response.json()
    avatar_id = created["avatar_id"]

    job, seen = poll_job(gateway, created["job_id"], worker_process)
    assert job["state"] == "succeeded", f"{job}\n{worker_log(worker_process)}"
    assert job["error"] is None
    assert job["progress"] == 1.0
    assert set(job["stage_seconds"]) == STAGES
    assert all(s >= 0 for s in job["stage_seconds"].values())
    assert seen == sorted(seen), "progress went backwards"

    avatar = gateway.get(f"/v1/avatars/{avatar_id}").json()
    assert avatar["state"] == "succeeded" and avatar["ready"] is True
    assert avatar["quality"] is not None

    glb = gateway.get(f"/v1/avatars/{avatar_id}/avatar.glb")
    assert glb.status_code == 200
    assert glb.headers["content-type"] == "model/gltf-binary"
    assert glb.content[:4] == b"glTF"
    assert glb.content == (data_dir / "avatars" / avatar_id / "avatar.glb").read_bytes()

    started = time.monotonic()
    with gateway.stream(
        "GET",
        f"/v1/avatars/{avatar_id}/stream",
        params={"motion": "turntable", "size": 256, "fps": 30, "frames": 60, "pace": "false"},
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"] == "multipart/x-mixed-replace; boundary=frame"
        body = stream.read()
    elapsed = time.monotonic() - started
    frames = split_mjpeg(body)
    assert len(frames) == 60
    assert body.endswith(b"--frame--\r\n")
    for jpeg in (frames[0], frames[30], frames[-1]):
        image = Image.open(io.BytesIO(jpeg), formats=["JPEG"])
        image.load()
        assert image.size == (256, 256)
    assert frames[0] != frames[15], "the turntable should move"
    print(f"streamed 60 frames of 256 px in {elapsed:.2f} s ({60 / elapsed:.1f} fps unpaced)")

    assert leftover_temp_files(data_dir / "avatars" / avatar_id) == []
    # the pool process loaded its models when it started, not during the first job
    assert worker_log(worker_process).count("models loaded in") == 1  # one pool process, once
    from models.inpaint.registry import inpaint_method

    assert avatar["quality"]["inpaint"]["method"] == inpaint_method()


def test_photo_without_person_fails_cleanly(
    gateway: TestClient, worker_process, data_dir, no_person_photo
):
    response = gateway.post(
        "/v1/avatars", files=[("photos", ("gradient.png", no_person_photo, "image/png"))]
    )
    assert response.status_code == 202, response.text
    created = response.json()
    avatar_id = created["avatar_id"]

    job, _ = poll_job(gateway, created["job_id"], worker_process)
    assert job["state"] == "failed", job
    assert job["error"]["code"] == "no_person_detected"
    assert job["error"]["message"]
    assert "Traceback" not in job["error"]["message"]

    avatar_dir = data_dir / "avatars" / avatar_id
    assert not (avatar_dir / "avatar.glb").exists()
    assert leftover_temp_files(avatar_dir) == []
    error = gateway.get(f"/v1/avatars/{avatar_id}/avatar.glb").json()["error"]
    assert error["code"] == "avatar_not_ready"
    assert error["details"]["state"] == "failed"
    avatar = gateway.get(f"/v1/avatars/{avatar_id}").json()
    assert avatar["state"] == "failed" and avatar["ready"] is False


def _pool_children(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in children.read_text().split()] if children.exists() else []


def test_worker_process_lost_mid_stage_is_redelivered(
    gateway: TestClient, worker_process, person_photo
):
    """acks_late + reject_on_worker_lost: a pool process killed during the fit stage
    does not lose the job; the stage runs again and the job still succeeds."""
    import os
    import signal

    response = gateway.post(
        "/v1/avatars", files=[("photos", ("person.png", person_photo, "image/png"))]
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]

    def running_fit():
        job = gateway.get(f"/v1/jobs/{job_id}").json()
        return job["state"] == "running" and job["stage"] in ("detect", "fit")

    wait_until(running_fit, 120, interval_s=0.1, what="the fit stage to start")
    children = _pool_children(worker_process.pid)
    assert children, "expected a prefork pool process"
    for child in children:
        os.kill(child, signal.SIGKILL)

    job, _ = poll_job(gateway, job_id, worker_process)
    assert job["state"] == "succeeded", f"{job}\n{worker_log(worker_process)}"
    full_log = Path(worker_process.log_path).read_text(errors="replace")  # JSON lines are long
    assert "WorkerLostError" in full_log or "signal 9" in full_log
