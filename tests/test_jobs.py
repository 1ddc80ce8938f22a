"""Job state stores: the same behaviour from SQLite (embedded) and Redis (production)."""

from __future__ import annotations

import itertools
import multiprocessing
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from workers.jobs import (
    STAGE_SPANS,
    STAGES,
    JobError,
    JobNotFoundError,
    JobState,
    JobStore,
    RedisJobStore,
    SQLiteJobStore,
    make_job_store,
    overall_progress,
)
from workers.settings import Settings
from workers.storage import new_id


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    if request.param == "sqlite":
        job_store: JobStore = SQLiteJobStore(tmp_path / "jobs.sqlite")
    else:
        url = request.getfixturevalue("redis_server")
        job_store = RedisJobStore(url, prefix=f"test:{new_id()}:")
    yield job_store
    job_store.close()


def test_create_and_get(store: JobStore) -> None:
    job_id, avatar_id = new_id(), new_id()
    created = store.create(job_id, avatar_id)
    fetched = store.get(job_id)
    assert fetched == created
    assert fetched.state is JobState.QUEUED
    assert fetched.stage is None
    assert fetched.progress == 0.0
    assert fetched.stage_seconds == {}
    assert fetched.error is None
    assert fetched.created_at and fetched.updated_at
    assert fetched.to_dict()["state"] == "queued"


def test_missing_and_malformed_ids(store: JobStore) -> None:
    assert store.get(new_id()) is None
    assert store.get("../../x") is None
    with pytest.raises(JobNotFoundError):
        store.update(new_id(), state=JobState.RUNNING)
    with pytest.raises(JobNotFoundError):
        store.update("nope", state=JobState.RUNNING)
    store.delete(new_id())  # no error


def test_update_never_creates(store: JobStore) -> None:
    job_id = new_id()
    with pytest.raises(JobNotFoundError):
        store.update(job_id, progress=0.5)
    assert store.get(job_id) is None


def test_duplicate_create_is_refused(store: JobStore) -> None:
    job_id = new_id()
    store.create(job_id, new_id())
    with pytest.raises(Exception):  # noqa: B017 - sqlite IntegrityError / ValueError
        store.create(job_id, new_id())


def test_lifecycle_and_stage_seconds_merge(store: JobStore) -> None:
    job_id = new_id()
    store.create(job_id, new_id())
    store.update(job_id, state=JobState.RUNNING, stage="detect", progress=0.05)
    store.update(job_id, stage_seconds={"detect": 1.5, "fit": 10.25})
    job = store.update(job_id, stage="texture", progress=0.55, stage_seconds={"texture": 2.0})
    assert job.state is JobState.RUNNING
    assert job.stage == "texture"
    assert job.progress == pytest.approx(0.55)
    assert job.stage_seconds == {"detect": 1.5, "fit": 10.25, "texture": 2.0}
    done = store.update(job_id, state=JobState.SUCCEEDED, stage=None, progress=1.0)
    assert done.state is JobState.SUCCEEDED and done.finished
    assert done.stage is None
    assert store.get(job_id) == done


def test_error_set_and_cleared(store: JobStore) -> None:
    job_id = new_id()
    store.create(job_id, new_id())
    failed = store.update(
        job_id, state=JobState.FAILED, error=JobError("no_person_detected", "No person.")
    )
    assert failed.error == JobError("no_person_detected", "No person.")
    assert store.get(job_id).error == failed.error
    cleared = store.update(job_id, state=JobState.RUNNING, error=None)
    assert cleared.error is None


def test_delete(store: JobStore) -> None:
    job_id = new_id()
    store.create(job_id, new_id())
    store.delete(job_id)
    assert store.get(job_id) is None


def test_ping(store: JobStore) -> None:
    store.ping()


def test_list_unfinished(store: JobStore) -> None:
    ids = {state: new_id() for state in JobState}
    for state, job_id in ids.items():
        store.create(job_id, new_id())
        store.update(job_id, state=state)
    unfinished = {job.id for job in store.list_unfinished()}
    assert {ids[JobState.QUEUED], ids[JobState.RUNNING]} <= unfinished
    assert not {ids[JobState.SUCCEEDED], ids[JobState.FAILED]} & unfinished


def test_concurrent_updates_from_threads_lose_nothing(store: JobStore) -> None:
    job_id = new_id()
    store.create(job_id, new_id())

    def work(index: int) -> None:
        for step in range(10):
            store.update(job_id, progress=step / 10, stage_seconds={f"s{index}_{step}": step})

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(store.get(job_id).stage_seconds) == 40


def _sqlite_worker(path: str, job_id: str, index: int) -> None:
    store = SQLiteJobStore(Path(path))
    for step in range(20):
        store.update(job_id, stage="fit", progress=step / 20, stage_seconds={f"p{index}_{step}": 1})


def test_sqlite_is_safe_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    store = SQLiteJobStore(path)
    job_id = new_id()
    store.create(job_id, new_id())
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_sqlite_worker, args=(str(path), job_id, i)) for i in range(3)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0
    assert len(store.get(job_id).stage_seconds) == 60


def test_sqlite_uses_wal(tmp_path: Path) -> None:
    import sqlite3

    SQLiteJobStore(tmp_path / "jobs.sqlite")
    with sqlite3.connect(tmp_path / "jobs.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_make_job_store_follows_settings(tmp_path: Path, redis_server: str) -> None:
    embedded = make_job_store(Settings(data_dir=tmp_path, redis_url=None))
    assert isinstance(embedded, SQLiteJobStore)
    assert embedded.path == tmp_path / "jobs.sqlite"
    production = make_job_store(Settings(data_dir=tmp_path, redis_url=redis_server))
    assert isinstance(production, RedisJobStore)
    production.close()


def test_overall_progress_spans() -> None:
    assert list(STAGE_SPANS) == list(STAGES)
    assert overall_progress("detect", 0) == 0.0
    assert overall_progress("fit", 1) == 0.5
    assert overall_progress("texture", 0) == 0.5
    assert overall_progress("bake", 1) == 1.0
    assert overall_progress("fit", 2.0) == 0.5  # clamped
    assert overall_progress("inpaint", -1) == overall_progress("inpaint", 0)
    # contiguous, increasing
    ends = [STAGE_SPANS[s] for s in STAGES]
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ends))


# --------------------------------------------------------------- task wrappers
# The Celery tasks run eagerly here (``Task.apply``) against the real pipeline, on a
# temporary embedded-mode data dir; the end-to-end runs through a broker are in
# test_integration_redis.py and test_cli.py.


@pytest.fixture
def task_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Point the tasks' worker context at a fresh data dir (and restore it after)."""
    from workers.settings import get_settings
    from workers.storage import AvatarStorage
    from workers.tasks import worker_context

    data_dir = tmp_path / "data"
    monkeypatch.setenv("AVATARS_DATA_DIR", str(data_dir))
    monkeypatch.delenv("AVATARS_REDIS_URL", raising=False)
    get_settings.cache_clear()
    worker_context.cache_clear()
    ctx = worker_context()
    assert ctx.settings.data_dir == data_dir
    yield ctx.storage, ctx.jobs
    get_settings.cache_clear()
    worker_context.cache_clear()
    assert isinstance(ctx.storage, AvatarStorage)


def _store_avatar(storage, jobs, photo_png: bytes) -> tuple[str, str]:
    import io

    from workers.storage import NewPhoto

    job_id = new_id()
    meta = storage.create(
        [NewPhoto(io.BytesIO(photo_png), "PNG", 512, 512, "p.png")], job_id=job_id
    )
    jobs.create(job_id, meta["id"])
    return meta["id"], job_id


def test_task_for_unknown_job_is_dropped(task_env) -> None:
    from workers.tasks import fit_avatar

    result = fit_avatar.apply(args=(new_id(), new_id()))
    assert result.state == "IGNORED"


def test_task_for_missing_avatar_fails_the_job(task_env) -> None:
    from workers.tasks import fit_avatar

    _, jobs = task_env
    job_id = new_id()
    jobs.create(job_id, new_id())
    assert fit_avatar.apply(args=(new_id(), job_id)).state == "IGNORED"
    job = jobs.get(job_id)
    assert job.state is JobState.FAILED
    assert job.error.code == "avatar_not_found"


def test_finished_job_is_not_run_again(task_env, no_person_photo: bytes) -> None:
    from workers.tasks import inpaint_avatar

    storage, jobs = task_env
    avatar_id, job_id = _store_avatar(storage, jobs, no_person_photo)
    jobs.update(job_id, state=JobState.FAILED, error=JobError("no_person_detected", "x"))
    assert inpaint_avatar.apply(args=(avatar_id, job_id)).state == "IGNORED"
    assert jobs.get(job_id).error == JobError("no_person_detected", "x")


@pytest.mark.slow
def test_fit_task_records_pipeline_error(task_env, no_person_photo: bytes) -> None:
    """Real pipeline: a gradient has no person; bad input is not retried."""
    from workers.tasks import fit_avatar

    storage, jobs = task_env
    avatar_id, job_id = _store_avatar(storage, jobs, no_person_photo)
    result = fit_avatar.apply(args=(avatar_id, job_id))
    assert result.state == "IGNORED"  # acked, chain stopped, no retry
    job = jobs.get(job_id)
    assert job.state is JobState.FAILED
    assert job.stage == "detect"
    assert job.error.code == "no_person_detected"
    assert not (storage.avatar_dir(avatar_id) / "avatar.glb").exists()


@pytest.mark.slow
def test_unexpected_error_is_internal_error_without_details(
    task_env, no_person_photo: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """Real pipeline on a corrupt fit artefact: generic message out, traceback in the log."""
    from workers.storage import atomic_write_json
    from workers.tasks import INTERNAL_ERROR_MESSAGE, inpaint_avatar

    storage, jobs = task_env
    avatar_id, job_id = _store_avatar(storage, jobs, no_person_photo)
    fit_dir = storage.avatar_dir(avatar_id) / "fit"
    fit_dir.mkdir()
    atomic_write_json(fit_dir / "fit.json", {"not": "a fit"})
    with caplog.at_level("ERROR", logger="workers.tasks"):
        assert inpaint_avatar.apply(args=(avatar_id, job_id)).state == "IGNORED"
    job = jobs.get(job_id)
    assert job.state is JobState.FAILED
    assert job.error == JobError("internal_error", INTERNAL_ERROR_MESSAGE)
    assert any(record.exc_info for record in caplog.records)


def test_progress_reporter_is_monotonic_throttled_and_safe(tmp_path: Path) -> None:
    from workers.tasks import ProgressReporter

    store = SQLiteJobStore(tmp_path / "jobs.sqlite")
    job_id = new_id()
    store.create(job_id, new_id())
    report = ProgressReporter(store, job_id, ("detect", "fit"))
    report("detect", 0.0)
    report("detect", 1.0)
    assert store.get(job_id).progress == pytest.approx(0.1)
    report("fit", 0.5)
    assert store.get(job_id).stage == "fit"
    assert store.get(job_id).progress == pytest.approx(0.3)
    report("fit", 0.51)  # within the throttle interval: not written
    assert store.get(job_id).progress == pytest.approx(0.3)
    report("detect", 0.0)  # going back a stage never lowers progress
    assert store.get(job_id).progress == pytest.approx(0.3)
    report("no-such-stage", 0.5)  # ignored
    store.delete(job_id)
    report("fit", 1.0)  # the job vanished: logged, not raised


# ------------------------------------------------------------ embedded recovery
def _queued_messages(settings: Settings) -> list[str]:
    folder = settings.queue_dir / "messages"
    return sorted(p.name.split(".", 1)[1] for p in folder.iterdir() if not p.name.startswith("."))


def test_recovery_resends_running_jobs_from_their_stage(tmp_path: Path, person_photo_png) -> None:
    import io
    import json
    import os
    import socket
    import time

    from workers.celery_app import create_celery_app, ensure_queue_folders
    from workers.heartbeat import heartbeat_dir
    from workers.recovery import recover_orphaned_jobs
    from workers.storage import AvatarStorage, NewPhoto

    settings = Settings(data_dir=tmp_path / "data")
    ensure_queue_folders(settings)
    storage = AvatarStorage(settings.avatars_dir)
    jobs = SQLiteJobStore(settings.jobs_db_path)
    celery = create_celery_app(settings)

    def job_in(state: JobState, stage: str | None) -> str:
        job_id = new_id()
        photo = NewPhoto(io.BytesIO(person_photo_png), "PNG", 8, 8, "p.png")
        avatar_id = storage.create([photo], job_id=job_id)["id"]
        jobs.create(job_id, avatar_id)
        jobs.update(job_id, state=state, stage=stage)
        return job_id

    in_fit = job_in(JobState.RUNNING, "fit")
    in_inpaint = job_in(JobState.RUNNING, "inpaint")
    job_in(JobState.QUEUED, None)  # its message is still queued: left alone
    job_in(JobState.SUCCEEDED, None)
    job_in(JobState.FAILED, "detect")

    # Another live embedded worker may be running those jobs: do nothing.
    other = heartbeat_dir(settings) / "other.json"
    other.parent.mkdir(parents=True)
    record = {"pid": os.getppid(), "hostname": socket.gethostname(), "queues": ["fit"]}
    other.write_text(json.dumps({**record, "updated_at": time.time()}))
    assert recover_orphaned_jobs(settings, storage, jobs, celery) == []
    assert _queued_messages(settings) == []

    other.unlink()
    assert sorted(recover_orphaned_jobs(settings, storage, jobs, celery)) == sorted(
        [in_fit, in_inpaint]
    )
    # the fit job gets the whole chain (its first message is fit); the other resumes
    assert _queued_messages(settings) == ["fit.msg", "inpaint.msg"]
    celery.close()


@pytest.fixture
def person_photo_png() -> bytes:
    """A tiny valid PNG (recovery never decodes it)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    return buf.getvalue()
