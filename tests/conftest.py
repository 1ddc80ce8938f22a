"""Shared fixtures: temporary data dirs, a gateway test client, a real redis-server,
a real ``avatars worker`` process, and a synthetic person photo made by the project.

Every wait here is bounded in time; every process started here is stopped here.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from workers.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout_s: float, interval_s: float = 0.2, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def stop_process(proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """SIGTERM (graceful), then SIGKILL after ``timeout_s``; only this process."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def avatars_command(*args: str) -> list[str]:
    """Command line of the ``avatars`` entry point of this environment."""
    script = Path(sys.executable).with_name("avatars")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "service.cli", *args]


def service_env(data_dir: Path, redis_url: str | None) -> dict[str, str]:
    """Environment for a service subprocess: only our AVATARS_* settings apply."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AVATARS_")}
    env["AVATARS_DATA_DIR"] = str(data_dir)
    if redis_url:
        env["AVATARS_REDIS_URL"] = redis_url
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    """Embedded-mode settings on a temporary data dir (small upload limit for tests);
    anonymous access on explicitly (tests/test_auth.py covers keys)."""
    return Settings(
        data_dir=data_dir, redis_url=None, max_upload_mb=2, max_photos=3, allow_anonymous=True
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    from service.app import create_app

    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free port in a temporary dir; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
    workdir = tmp_path_factory.mktemp("redis")
    port = free_port()
    log = open(workdir / "redis.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(workdir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=0.5)

        def pong() -> bool:
            if proc.poll() is not None:
                raise RuntimeError((workdir / "redis.log").read_text(errors="replace"))
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_until(pong, 15, what="redis-server to answer PING")
        client.close()
        yield url
    finally:
        stop_process(proc, timeout_s=10)
        log.close()


@pytest.fixture
def worker_process(redis_server: str, data_dir: Path, tmp_path: Path) -> Iterator[subprocess.Popen]:
    """A real ``avatars worker --queues fit,inpaint`` on ``redis_server`` and ``data_dir``."""
    log_path = tmp_path / "worker.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        avatars_command("worker", "--queues", "fit,inpaint"),
        env=service_env(data_dir, redis_server),
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def ready() -> bool:
            text = log_path.read_text(errors="replace")
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited with {proc.returncode}:\n{text}")
            return " ready." in text

        wait_until(ready, 120, what="the Celery worker to be ready")
        proc.log_path = log_path  # type: ignore[attr-defined]
        yield proc
    finally:
        stop_process(proc, timeout_s=60)
        log.close()


def png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def person_photo() -> bytes:
    """PNG bytes of a synthetic person rendered by the project (models.synth.quick)."""
    from models.synth.quick import person_photo as make_person_photo

    return png_bytes(make_person_photo(seed=0, size=512))


@pytest.fixture(scope="session")
def no_person_photo() -> bytes:
    """PNG bytes of a plain gradient: nothing a detector could call a person."""
    from PIL import Image

    gradient = Image.linear_gradient("L").resize((512, 512)).convert("RGB")
    return png_bytes(gradient)


def small_jpeg() -> bytes:
    """A valid 64x48 JPEG (a gradient): enough for the gateway's checks, no person in it."""
    from PIL import Image

    buf = io.BytesIO()
    Image.linear_gradient("L").resize((64, 48)).convert("RGB").save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture
def task_env_overrides() -> dict[str, str]:
    """Extra AVATARS_* settings for ``task_env`` (a test module may override this fixture)."""
    return {}


@pytest.fixture
def task_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, task_env_overrides: dict[str, str]):
    """The worker's context (storage + SQLite job store) on a temporary data dir, without
    any process: for calling task code directly."""
    from workers.settings import get_settings
    from workers.tasks import worker_context

    monkeypatch.setenv("AVATARS_DATA_DIR", str(tmp_path / "data"))
    for name, value in task_env_overrides.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AVATARS_REDIS_URL", raising=False)
    get_settings.cache_clear()
    worker_context.cache_clear()
    yield worker_context()
    get_settings.cache_clear()
    worker_context.cache_clear()


def stored_job(ctx) -> tuple[str, str]:
    """A stored avatar (one small JPEG) and its queued job in ``ctx`` -> (avatar id, job id)."""
    from workers.storage import NewPhoto, new_id

    job_id = new_id()
    meta = ctx.storage.create([NewPhoto(io.BytesIO(small_jpeg()), "JPEG", 64, 48)], job_id=job_id)
    ctx.jobs.create(job_id, meta["id"])
    return meta["id"], job_id
