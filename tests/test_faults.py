"""Jobs that survive faults, and tenants that stay apart, on the production shape:
a real redis-server (append-only file on), two real ``avatars worker`` processes and the
gateway, all on loopback.

- a worker killed outright (SIGKILL to its whole process group) in the middle of a fit:
  the message comes back after the (short) visibility timeout, the other worker runs
  it, the job succeeds, one bundle, nothing half-written;
- Redis killed and restarted while jobs are queued: /readyz goes red, then green, and
  every job completes;
- tenant B can neither read, stream, download nor cancel tenant A's avatar or job;
- without processes: the delivery cap (a photo that kills workers ends as
  ``worker_crashed``), retry backoff, Idempotency-Key, stage time limits.

Every wait is bounded; every process started here is stopped here (by its own pid).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.auth import make_key_store
from tests.conftest import (
    REPO_ROOT,
    avatars_command,
    free_port,
    service_env,
    small_jpeg,
    stored_job,
    wait_until,
)
from workers.jobs import JobState, SQLiteJobStore
from workers.settings import Settings
from workers.storage import new_id

pytestmark = pytest.mark.faults

#: Broker visibility timeout of this module's workers: longer than one stage takes here
#: (fit ~20-40 s on a busy 2-core machine), short enough to wait for in a test.
VISIBILITY_S = 75
JOB_TIMEOUT_S = 420


# ---------------------------------------------------------------------- processes
class RedisProcess:
    """A redis-server with an append-only file (fsync always) that can be killed and
    started again on the same port and directory."""

    def __init__(self, workdir: Path) -> None:
        self.binary = shutil.which("redis-server")
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.workdir / "redis.log", "ab")  # noqa: SIM115 - closed right after
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.workdir), "--appendonly", "yes", "--appendfsync", "always",
             "--save", "", "--daemonize", "no"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        import redis

        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)

        def pong() -> bool:
            try:
                return bool(client.ping())
            except redis.exceptions.BusyLoadingError:
                return False
            except redis.ConnectionError:
                return False

        try:
            wait_until(pong, 30, 0.1, what="redis-server to answer")
        finally:
            client.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Worker:
    proc: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill_group(self) -> None:
        """SIGKILL the worker and its pool processes (its own process group)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill_group()


@dataclass
class Cluster:
    data_dir: Path
    tmp: Path
    redis: RedisProcess
    gateway: TestClient
    keys: dict[str, str]
    workers: list[Worker] = field(default_factory=list)
    built: dict[str, tuple[str, str]] = field(default_factory=dict)  # tenant -> (avatar, job)

    def env(self) -> dict[str, str]:
        env = service_env(self.data_dir, self.redis.url)
        env.update(
            AVATARS_REDIS_VISIBILITY_TIMEOUT_S=str(VISIBILITY_S),
            AVATARS_WORKER_HEARTBEAT_S="0.5",
            AVATARS_WORKER_STALE_S="3",
        )
        return env

    def start_worker(self) -> Worker:
        log_path = self.tmp / f"worker-{len(self.workers)}.log"
        log = open(log_path, "wb")  # noqa: SIM115 - the child holds it; closed right after
        proc = subprocess.Popen(
            avatars_command("worker", "--queues", "fit,inpaint"),
            env=self.env(), cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        worker = Worker(proc, log_path)
        self.workers.append(worker)
        return worker

    def wait_ready(self, workers: list[Worker]) -> None:
        def ready() -> bool:
            for worker in workers:
                if worker.proc.poll() is not None:
                    raise RuntimeError(f"worker exited:\n{worker.log()[-3000:]}")
            return all(" ready." in w.log() for w in workers)

        wait_until(ready, 180, 0.5, what="the workers to be ready")

    def live_workers(self) -> list[Worker]:
        return [w for w in self.workers if w.proc.poll() is None]

    def headers(self, tenant: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[tenant]}"}

    def upload(self, tenant: str, photo: bytes) -> tuple[str, str]:
        response = self.gateway.post(
            "/v1/avatars", headers=self.headers(tenant),
            files=[("photos", ("person.png", photo, "image/png"))],
        )
        assert response.status_code == 202, response.text
        return response.json()["avatar_id"], response.json()["job_id"]

    def job(self, tenant: str, job_id: str) -> dict:
        return self.gateway.get(f"/v1/jobs/{job_id}", headers=self.headers(tenant)).json()

    def wait_finished(self, tenant: str, job_ids: list[str]) -> dict[str, dict]:
        done: dict[str, dict] = {}

        def finished() -> bool:
            for job_id in job_ids:
                if job_id in done:
                    continue
                try:
                    job = self.job(tenant, job_id)
                except Exception:  # noqa: BLE001 - Redis may be coming back
                    return False
                if job.get("state") in ("succeeded", "failed", "cancelled"):
                    done[job_id] = job
            return len(done) == len(job_ids)

        try:
            wait_until(finished, JOB_TIMEOUT_S, 1.0, what=f"jobs {job_ids}")
        except TimeoutError as exc:
            logs = "\n\n".join(w.log()[-3000:] for w in self.workers)
            raise AssertionError(f"{exc}\n{logs}") from exc
        return done

    def built_avatar(self, tenant: str, photo: bytes) -> tuple[str, str]:
        """A succeeded avatar of ``tenant`` (made once per module)."""
        if tenant not in self.built:
            _ensure_two_workers(self)
            avatar_id, job_id = self.upload(tenant, photo)
            job = self.wait_finished(tenant, [job_id])[job_id]
            assert job["state"] == "succeeded", job
            self.built[tenant] = (avatar_id, job_id)
        return self.built[tenant]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    tmp = tmp_path_factory.mktemp("faults")
    data_dir = tmp / "data"
    data_dir.mkdir()
    redis = RedisProcess(tmp)
    redis.start()
    settings = Settings(
        data_dir=data_dir, redis_url=redis.url, allow_anonymous=False, worker_stale_s=3,
        redis_visibility_timeout_s=VISIBILITY_S,
    )
    store = make_key_store(settings)
    keys = {tenant: store.create(tenant)[1] for tenant in ("tenant-a", "tenant-b")}
    store.close()
    cluster = None
    try:
        with TestClient(create_app(settings)) as gateway:
            cluster = Cluster(data_dir, tmp, redis, gateway, keys)
            cluster.wait_ready([cluster.start_worker(), cluster.start_worker()])
            yield cluster
    finally:
        if cluster is not None:
            for worker in cluster.workers:
                worker.stop()
        redis.stop()


def _ensure_two_workers(cluster: Cluster) -> None:
    live = cluster.live_workers()
    if len(live) < 2:
        new = [cluster.start_worker() for _ in range(2 - len(live))]
        cluster.wait_ready(new)


def _ready(cluster: Cluster) -> bool:
    try:
        return cluster.gateway.get("/readyz").status_code == 200
    except Exception:  # noqa: BLE001
        return False


def _leftovers(avatar_dir: Path) -> list[str]:
    return sorted(
        str(p.relative_to(avatar_dir)) for p in avatar_dir.rglob("*")
        if p.name.startswith(".") or p.name.endswith(".tmp")
    )


def _assert_one_whole_bundle(data_dir: Path, avatar_id: str) -> None:
    avatars = data_dir / "avatars"
    assert not [p.name for p in avatars.iterdir() if p.name.startswith(".incoming-")]
    avatar_dir = avatars / avatar_id
    glbs = sorted(str(p.relative_to(avatar_dir)) for p in avatar_dir.rglob("*.glb"))
    assert glbs == ["avatar.glb"], glbs
    data = (avatar_dir / "avatar.glb").read_bytes()
    assert data[:4] == b"glTF"
    version, length = int.from_bytes(data[4:8], "little"), int.from_bytes(data[8:12], "little")
    assert (version, length) == (2, len(data)), "a half-written glb"
    assert _leftovers(avatar_dir) == []


# ------------------------------------------------------------------ the tests
def test_redis_restart_while_jobs_are_queued(cluster: Cluster, person_photo: bytes) -> None:
    """Three jobs for two workers: at least one waits in Redis. Redis is killed (SIGKILL;
    append-only file, fsync always) and started again: /readyz goes red, then green,
    and all three jobs complete."""
    import redis as redis_lib

    _ensure_two_workers(cluster)
    wait_until(lambda: _ready(cluster), 60, 0.5, what="/readyz before the restart")
    jobs = [cluster.upload("tenant-a", person_photo) for _ in range(3)]
    client = redis_lib.Redis.from_url(cluster.redis.url)
    queued = client.llen("fit")
    client.close()

    cluster.redis.kill()
    red = cluster.gateway.get("/readyz")
    assert red.status_code == 503, red.text
    assert not red.json()["error"]["details"]["checks"]["broker"]["ok"]
    time.sleep(2)
    cluster.redis.start()
    wait_until(lambda: _ready(cluster), 60, 0.5, what="/readyz after the restart")

    done = cluster.wait_finished("tenant-a", [job_id for _, job_id in jobs])
    states = {job_id: job["state"] for job_id, job in done.items()}
    assert set(states.values()) == {"succeeded"}, (states, queued)
    for avatar_id, _ in jobs:
        _assert_one_whole_bundle(cluster.data_dir, avatar_id)
    cluster.built.setdefault("tenant-a", jobs[0])
    print(f"{queued} fit message(s) waited in Redis across the restart; all 3 jobs succeeded")


def test_worker_killed_mid_fit_is_finished_by_the_other(
    cluster: Cluster, person_photo: bytes
) -> None:
    import redis as redis_lib

    _ensure_two_workers(cluster)
    avatar_id, job_id = cluster.upload("tenant-a", person_photo)

    def running_fit() -> bool:
        job = cluster.job("tenant-a", job_id)
        return job["state"] == "running" and job["stage"] in ("detect", "fit")

    wait_until(running_fit, 180, 0.2, what="the fit stage to start")
    holders = [w for w in cluster.live_workers() if job_id in w.log()]
    assert len(holders) == 1, "exactly one worker should be running the job"
    victim = holders[0]
    time.sleep(1.0)  # well inside the stage
    killed_at = time.monotonic()
    victim.kill_group()
    survivor = next(w for w in cluster.live_workers())

    done = cluster.wait_finished("tenant-a", [job_id])[job_id]
    assert done["state"] == "succeeded", f"{done}\n{survivor.log()[-4000:]}"
    waited = time.monotonic() - killed_at
    assert waited >= VISIBILITY_S * 0.9, "redelivered only once the visibility timeout passed"
    assert job_id in survivor.log()
    client = redis_lib.Redis.from_url(cluster.redis.url, decode_responses=True)
    counts = client.hmget(f"avatars:job:{job_id}", "n:fit", "n:inpaint")
    client.close()
    assert counts == ["2", "1"], counts  # the fit was delivered twice, the inpaint once
    _assert_one_whole_bundle(cluster.data_dir, avatar_id)
    avatar = cluster.gateway.get(f"/v1/avatars/{avatar_id}", headers=cluster.headers("tenant-a"))
    assert avatar.json()["ready"] is True
    cluster.built.setdefault("tenant-a", (avatar_id, job_id))


def test_tenant_b_cannot_touch_tenant_a(cluster: Cluster, person_photo: bytes) -> None:
    from starlette.websockets import WebSocketDisconnect

    avatar_id, job_id = cluster.built_avatar("tenant-a", person_photo)
    a, b = cluster.headers("tenant-a"), cluster.headers("tenant-b")
    http = cluster.gateway
    base = f"/v1/avatars/{avatar_id}"
    # tenant A can
    assert http.get(base, headers=a).json()["ready"] is True
    assert http.get(f"{base}/avatar.glb", headers=a).content[:4] == b"glTF"
    stream = http.get(f"{base}/stream?frames=2&size=64&pace=false", headers=a)
    assert stream.status_code == 200 and stream.content.count(b"--frame\r\n") == 2
    # tenant B gets 404 for all of it: read, stream, download, render, cancel, events
    for method, path in [
        ("GET", base),
        ("GET", f"{base}/avatar.glb"),
        ("GET", f"{base}/texture.png"),
        ("GET", f"{base}/stream?frames=2&size=64"),
        ("GET", f"{base}/frame.png?size=64"),
        ("GET", f"{base}/render.mp4?frames=2&size=64"),
        ("GET", f"/v1/jobs/{job_id}"),
        ("GET", f"/v1/jobs/{job_id}/events"),
        ("DELETE", f"/v1/jobs/{job_id}"),
    ]:
        response = http.request(method, path, headers=b)
        assert response.status_code == 404, (method, path, response.status_code, response.text)
        assert response.json()["error"]["code"] in ("avatar_not_found", "job_not_found")
    render = http.post(f"{base}/render", headers=b, data={"motion_name": "wave", "size": "64"})
    assert render.status_code == 404
    with http.websocket_connect(f"{base}/live", headers=b) as ws:
        assert ws.receive_json()["error"]["code"] == "avatar_not_found"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 4404
    # and nothing B did changed A's job
    assert cluster.job("tenant-a", job_id)["state"] == "succeeded"


# ------------------------------------------------------ without processes
@pytest.fixture
def task_env_overrides() -> dict[str, str]:
    """``task_env`` (conftest) with a low redelivery cap."""
    return {"AVATARS_TASK_MAX_DELIVERIES": "2"}


def test_a_photo_that_kills_workers_ends_as_worker_crashed(task_env, monkeypatch) -> None:
    """Each delivery is counted before the stage runs; deliveries that never finished
    (the worker died: here simulated by counting without finishing) beyond the cap
    fail the job instead of running it again."""
    import models.pipeline
    from workers.tasks import fit_avatar

    avatar_id, job_id = stored_job(task_env)
    for _ in range(2):  # two deliveries whose workers "died" mid-stage
        task_env.jobs.count_delivery(job_id, "fit")
    monkeypatch.setattr(models.pipeline, "fit_stage", lambda *a: pytest.fail("ran again"))
    assert fit_avatar.apply(args=(avatar_id, job_id)).state == "IGNORED"  # acked: no loop
    job = task_env.jobs.get(job_id)
    assert job.state is JobState.FAILED and job.error.code == "worker_crashed"


def test_one_lost_delivery_is_run_again(task_env, monkeypatch) -> None:
    import models.pipeline
    from workers.tasks import fit_avatar

    avatar_id, job_id = stored_job(task_env)
    task_env.jobs.count_delivery(job_id, "fit")  # one worker died
    monkeypatch.setattr(models.pipeline, "fit_stage", lambda d, p: {"detect": 0.1, "fit": 0.2})
    assert fit_avatar.apply(args=(avatar_id, job_id)).state == "SUCCESS"
    job = task_env.jobs.get(job_id)
    assert job.state is JobState.RUNNING and job.progress == 0.5
    assert job.stage_seconds == {"detect": 0.1, "fit": 0.2}
    # a late duplicate of the finished fit passes the job on without running it again
    monkeypatch.setattr(models.pipeline, "fit_stage", lambda *a: pytest.fail("ran again"))
    assert fit_avatar.apply(args=(avatar_id, job_id)).state == "SUCCESS"


def test_transient_errors_retry_with_backoff_bad_input_does_not(task_env, monkeypatch) -> None:
    import models.pipeline
    from models.errors import PipelineError
    from workers import tasks

    delays = [tasks.retry_delay(task_env.settings, n) for n in range(12)]
    base = task_env.settings.task_retry_delay_s
    assert base * 0.5 <= delays[0] <= base
    assert base * 4 * 0.5 <= delays[3] <= base * 8
    assert max(delays) <= task_env.settings.task_retry_max_delay_s

    avatar_id, job_id = stored_job(task_env)
    calls = []

    def flaky(d, p):
        calls.append(1)
        raise PipelineError("detector_unavailable", "busy", transient=True)

    monkeypatch.setattr(models.pipeline, "fit_stage", flaky)
    # eagerly applied, the retries run inline (without their countdown)
    assert tasks.fit_avatar.apply(args=(avatar_id, job_id)).state == "IGNORED"
    assert len(calls) == 1 + task_env.settings.task_max_retries
    job = task_env.jobs.get(job_id)
    assert job.state is JobState.FAILED and job.error.code == "detector_unavailable"

    avatar_id, job_id = stored_job(task_env)
    calls.clear()

    def bad(d, p):
        calls.append(1)
        raise PipelineError("no_person_detected", "No person.")

    monkeypatch.setattr(models.pipeline, "fit_stage", bad)
    assert tasks.fit_avatar.apply(args=(avatar_id, job_id)).state == "IGNORED"
    assert len(calls) == 1
    assert task_env.jobs.get(job_id).error.code == "no_person_detected"


def test_time_limits_stay_below_the_visibility_timeout() -> None:
    from workers.celery_app import celery_config

    settings = Settings(redis_url="redis://localhost:1/0", redis_visibility_timeout_s=600)
    conf = celery_config(settings)
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["task_soft_time_limit"] < conf["task_time_limit"] < 600
    assert conf["broker_transport_options"]["visibility_timeout"] == 600
    assert conf["broker_transport_options"]["unacked_restore_interval"] <= 60
    with pytest.raises(ValueError, match="below"):
        Settings(redis_visibility_timeout_s=100, task_time_limit_s=100)


# ------------------------------------------------------------- idempotency
@pytest.fixture(params=["sqlite", "redis"])
def idem_client(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[TestClient]:
    redis_url = request.getfixturevalue("redis_server") if request.param == "redis" else None
    settings = Settings(data_dir=data_dir, redis_url=redis_url, allow_anonymous=True)
    with TestClient(create_app(settings)) as client:
        yield client


def _post(client: TestClient, key: str | None, *photos: bytes):
    headers = {"Idempotency-Key": key} if key is not None else {}
    files = [("photos", (f"{i}.jpg", p, "image/jpeg")) for i, p in enumerate(photos)]
    return client.post("/v1/avatars", headers=headers, files=files)


def test_idempotency_key(idem_client: TestClient, data_dir: Path) -> None:
    photo, other = small_jpeg(), small_jpeg()[:-2] + b"\x00\xff\xd9"  # same size, other bytes
    first = _post(idem_client, "order-42", photo)
    assert first.status_code == 202
    again = _post(idem_client, "order-42", photo)
    assert again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    # one avatar, one job
    assert len([p for p in (data_dir / "avatars").iterdir() if not p.name.startswith(".")]) == 1
    reused = _post(idem_client, "order-42", other)
    assert reused.status_code == 422
    assert reused.json()["error"]["code"] == "idempotency_key_reused"
    # another key, or none: new avatars
    assert _post(idem_client, "order-43", photo).json()["avatar_id"] != first.json()["avatar_id"]
    assert _post(idem_client, None, photo).json()["avatar_id"] != first.json()["avatar_id"]
    bad = _post(idem_client, "has space", photo)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_idempotency_key"


def test_idempotency_key_is_per_tenant_and_released_on_failure(data_dir: Path) -> None:
    settings = Settings(data_dir=data_dir, allow_anonymous=True)
    store = make_key_store(settings)
    _, key = store.create("acme")
    with TestClient(create_app(settings)) as client:
        mine = _post(client, "k1", small_jpeg())
        theirs = client.post(
            "/v1/avatars", headers={"Idempotency-Key": "k1", "Authorization": f"Bearer {key}"},
            files=[("photos", ("a.jpg", small_jpeg(), "image/jpeg"))],
        )
        assert theirs.status_code == 202
        assert theirs.json()["avatar_id"] != mine.json()["avatar_id"]
        # a request that fails after reserving the key frees it for the retry
        services = client.app.state.services
        real_create = services.jobs.create
        services.jobs.create = lambda *a, **k: (_ for _ in ()).throw(OSError("down"))
        failed = _post(client, "k2", small_jpeg())
        assert failed.status_code == 503
        services.jobs.create = real_create
        retried = _post(client, "k2", small_jpeg())
        assert retried.status_code == 202 and "idempotent-replayed" not in retried.headers


def test_idempotency_pending_is_409(data_dir: Path) -> None:
    from service.api.routes.avatars import _fingerprint
    from service.idempotency import Reservation, SQLiteIdempotencyStore
    from service.uploads import validate_photo

    settings = Settings(data_dir=data_dir, allow_anonymous=True)
    photo = small_jpeg()
    fingerprint = _fingerprint([validate_photo(io.BytesIO(photo), max_pixels=10**8, index=0)])
    store = SQLiteIdempotencyStore(settings.jobs_db_path, 60)
    avatar_id, job_id = new_id(), new_id()
    assert store.reserve("anonymous", "busy", Reservation(fingerprint, avatar_id, job_id)) is None
    with TestClient(create_app(settings)) as client:
        response = _post(client, "busy", photo)
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "idempotency_in_progress"
        assert response.headers["retry-after"] == "1"
        # the first request got as far as creating its job (then could not mark the key
        # done): a retry gets its answer
        client.app.state.services.jobs.create(job_id, avatar_id, "anonymous")
        replayed = _post(client, "busy", photo)
        assert replayed.status_code == 202
        assert replayed.json()["job_id"] == job_id and replayed.json()["avatar_id"] == avatar_id


def test_sqlite_store_upgrades_an_old_database(tmp_path: Path) -> None:
    """A jobs.sqlite from before tenants and delivery counts gets the new columns."""
    import sqlite3

    path = tmp_path / "jobs.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE jobs (id TEXT PRIMARY KEY, avatar_id TEXT NOT NULL, state TEXT NOT NULL,"
            " stage TEXT, progress REAL NOT NULL DEFAULT 0, stage_seconds TEXT NOT NULL DEFAULT"
            " '{}', error TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL)"
        )
        old = new_id()
        conn.execute(
            "INSERT INTO jobs VALUES (?, ?, 'queued', NULL, 0, '{}', NULL, 'x', 'x')", (old, new_id())
        )
    store = SQLiteJobStore(path)
    assert store.get(old).tenant == "anonymous"
    assert store.count_delivery(old, "fit") == 1
    assert json.loads(json.dumps(store.get(old).to_dict()))["tenant"] == "anonymous"
