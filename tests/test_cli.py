"""The ``avatars`` command line, including the one-command embedded mode.

``test_serve_embedded_mode`` is the laptop story end to end: ``avatars serve`` with no
Redis starts the gateway and its own worker process, the real pipeline builds an
avatar from a synthetic person photo, a looping stream is read and dropped, and
SIGTERM stops both processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from conftest import REPO_ROOT, avatars_command, free_port, service_env, stop_process, wait_until

from service.cli import main

JOB_TIMEOUT_S = 300


def test_help_lists_commands() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "worker", "create", "render", "models"):
        assert command in result.output
    result = CliRunner().invoke(main, ["models", "--help"])
    assert result.exit_code == 0 and "prepare" in result.output


def test_worker_rejects_unknown_queue() -> None:
    result = CliRunner().invoke(main, ["worker", "--queues", "fit,bogus"])
    assert result.exit_code != 0
    assert "bogus" in result.output


def test_create_needs_existing_photos(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["create", str(tmp_path / "missing.jpg"), "-o", str(tmp_path)]
    )
    assert result.exit_code != 0
    assert "does not exist" in result.output


def test_render_unknown_motion_is_a_clear_error(tmp_path: Path) -> None:
    """Depends on models.animation.motions."""
    bundle = tmp_path / "avatar.glb"
    bundle.write_bytes(b"glTF")
    result = CliRunner().invoke(
        main, ["render", str(bundle), "--motion", "moonwalk", "-o", str(tmp_path / "o.mp4")]
    )
    assert result.exit_code != 0
    assert "unknown motion" in result.output and "turntable" in result.output


def test_render_missing_glb_in_directory(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["render", str(tmp_path), "-o", str(tmp_path / "o.mp4")])
    assert result.exit_code != 0
    assert "no avatar.glb" in result.output


@pytest.mark.slow
def test_create_and_render_with_the_real_pipeline(tmp_path: Path, person_photo: bytes) -> None:
    photo = tmp_path / "person.png"
    photo.write_bytes(person_photo)
    out = tmp_path / "bundle"
    result = CliRunner().invoke(main, ["create", str(photo), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "fit" in result.output and "bake" in result.output
    glb = Path(result.output.strip().splitlines()[-1])
    assert glb.is_file() and glb.read_bytes()[:4] == b"glTF"

    mp4 = tmp_path / "turntable.mp4"
    args = ["render", str(out), "--motion", "turntable", "-o", str(mp4)]
    result = CliRunner().invoke(main, [*args, "--size", "128", "--fps", "10", "--frames", "10"])
    assert result.exit_code == 0, result.output
    assert mp4.stat().st_size > 0


@pytest.mark.slow
def test_create_without_person_exits_non_zero(tmp_path: Path, no_person_photo: bytes) -> None:
    photo = tmp_path / "gradient.png"
    photo.write_bytes(no_person_photo)
    result = CliRunner().invoke(main, ["create", str(photo), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "no_person_detected" in result.output
    assert "Traceback" not in result.output


def _read_frames(response: httpx.Response, wanted: int) -> int:
    """Count MJPEG parts until ``wanted`` arrived (a looping stream never ends)."""
    body = b""
    for chunk in response.iter_bytes():
        body += chunk
        if body.count(b"--frame\r\n") > wanted:  # the wanted-th part is complete
            break
    return body.count(b"--frame\r\n") - 1


@pytest.mark.integration
@pytest.mark.slow
def test_serve_embedded_mode(tmp_path: Path, data_dir: Path, person_photo: bytes) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            avatars_command("serve", "--port", str(port)),
            env=service_env(data_dir, redis_url=None),
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            with httpx.Client(base_url=base, timeout=30) as http:

                def ready() -> bool:
                    if proc.poll() is not None:
                        raise RuntimeError(log_path.read_text(errors="replace"))
                    try:
                        return http.get("/readyz").status_code == 200
                    except httpx.TransportError:
                        return False

                wait_until(ready, 90, interval_s=0.5, what="/readyz of avatars serve")
                checks = http.get("/readyz").json()
                assert checks["mode"] == "embedded"
                worker_pids = [w["pid"] for w in checks["checks"]["broker"]["detail"]["workers"]]
                assert worker_pids and proc.pid not in worker_pids

                files = [("photos", ("person.png", person_photo, "image/png"))]
                created = http.post("/v1/avatars", files=files)
                assert created.status_code == 202, created.text
                job_url = created.json()["links"]["job"]
                avatar_id = created.json()["avatar_id"]

                def finished():
                    job = http.get(job_url).json()
                    return job if job["state"] in ("succeeded", "failed") else None

                job = wait_until(finished, JOB_TIMEOUT_S, interval_s=0.5, what="the job")
                assert job["state"] == "succeeded", (job, log_path.read_text(errors="replace"))

                params = {"motion": "walk", "size": 128, "fps": 30, "loop": "true"}
                with http.stream("GET", f"/v1/avatars/{avatar_id}/stream", params=params) as s:
                    assert s.status_code == 200
                    assert _read_frames(s, 60) >= 60
                # rendering stops once the client is gone, and the server carries on
                wait_until(
                    lambda: "ended after" in log_path.read_text(errors="replace"),
                    30,
                    what="the looping stream to stop after the client left",
                )
                assert "(client gone)" in log_path.read_text(errors="replace")
                assert http.get("/healthz").status_code == 200
                glb = http.get(f"/v1/avatars/{avatar_id}/avatar.glb")
                assert glb.status_code == 200 and glb.content[:4] == b"glTF"
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            finally:
                stop_process(proc, timeout_s=5)

    output = log_path.read_text(errors="replace")
    assert proc.returncode == 0, output
    assert f"data dir: {data_dir}" in output
    # the worker child stopped with the gateway and removed its heartbeat
    for pid in worker_pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    heartbeats = list((data_dir / "queue" / "workers").glob("*.json"))
    assert heartbeats == [], [json.loads(p.read_text()) for p in heartbeats]


@pytest.mark.integration
@pytest.mark.slow
def test_serve_recovers_a_job_when_its_worker_is_killed(
    tmp_path: Path, data_dir: Path, person_photo: bytes
) -> None:
    """The embedded worker dies mid-stage (SIGKILL): ``avatars serve`` restarts it, the
    orphaned job is sent again, and it still succeeds."""
    port = free_port()
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            avatars_command("serve", "--port", str(port)),
            env=service_env(data_dir, redis_url=None),
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:

                def ready():
                    if proc.poll() is not None:
                        raise RuntimeError(log_path.read_text(errors="replace"))
                    try:
                        response = http.get("/readyz")
                    except httpx.TransportError:
                        return None
                    return response.json() if response.status_code == 200 else None

                status = wait_until(ready, 90, interval_s=0.5, what="/readyz")
                first_pid = status["checks"]["broker"]["detail"]["workers"][0]["pid"]

                files = [("photos", ("person.png", person_photo, "image/png"))]
                job_url = http.post("/v1/avatars", files=files).json()["links"]["job"]

                def in_fit() -> bool:
                    job = http.get(job_url).json()
                    return job["state"] == "running" and job["stage"] in ("detect", "fit")

                wait_until(in_fit, 120, interval_s=0.1, what="the fit stage to start")
                os.kill(first_pid, signal.SIGKILL)

                def finished():
                    job = http.get(job_url).json()
                    return job if job["state"] in ("succeeded", "failed") else None

                job = wait_until(finished, JOB_TIMEOUT_S, interval_s=0.5, what="the job")
                output = log_path.read_text(errors="replace")
                assert job["state"] == "succeeded", (job, output)
                assert "re-enqueued job" in output
                status = http.get("/readyz").json()
                assert first_pid not in [
                    w["pid"] for w in status["checks"]["broker"]["detail"]["workers"]
                ]
        finally:
            stop_process(proc, timeout_s=60)
