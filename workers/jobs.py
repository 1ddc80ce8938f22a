"""Job state store: one interface, two implementations.

Celery runs the work, but the state a client polls (state, stage, progress, per-stage
seconds, error) lives here, not in Celery's result backend, because it must be
readable from the gateway while a task is running and must survive worker restarts.

- ``RedisJobStore``: one hash per job (``avatars:job:{id}``); used whenever
  ``AVATARS_REDIS_URL`` is set, so gateways and workers on many machines share it.
- ``SQLiteJobStore``: ``data_dir/jobs.sqlite`` in WAL mode, for the embedded mode;
  a connection per operation and ``BEGIN IMMEDIATE`` for read-modify-write make it
  safe across threads and processes (gateway + worker child).

Every job belongs to a tenant (the API key's, or ``anonymous``). A cancelled job is
final: ``update`` refuses to touch it (``JobCancelledError``), which is how a worker
learns at its next progress write that it should stop. ``count_delivery`` counts how
often a stage of a job was handed to a worker, so that a photo that kills workers is
given up after a few deliveries instead of looping forever.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from workers.sqlite_db import connect, open_tables
from workers.storage import is_valid_id, utc_now

if TYPE_CHECKING:
    from workers.settings import Settings


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: States a job never leaves.
FINAL_STATES: Final = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})

#: Tenant of avatars and jobs created without an API key (when anonymous access is on).
ANONYMOUS_TENANT: Final = "anonymous"


#: Pipeline stages in order; the fit task runs the first two, inpaint the rest.
STAGES: Final = ("detect", "fit", "texture", "inpaint", "bake")

#: Share of overall progress per stage: fit stages cover 0..0.5, inpaint 0.5..1.
STAGE_SPANS: Final[Mapping[str, tuple[float, float]]] = {
    "detect": (0.0, 0.1),
    "fit": (0.1, 0.5),
    "texture": (0.5, 0.6),
    "inpaint": (0.6, 0.9),
    "bake": (0.9, 1.0),
}


def overall_progress(stage: str, fraction: float) -> float:
    """Map a stage's own progress (0..1) onto the job's overall progress (0..1)."""
    start, end = STAGE_SPANS[stage]
    fraction = min(1.0, max(0.0, float(fraction)))
    return round(start + (end - start) * fraction, 4)


@dataclass(frozen=True)
class JobError:
    code: str
    message: str


@dataclass(frozen=True)
class Job:
    id: str
    avatar_id: str
    state: JobState
    stage: str | None
    progress: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    error: JobError | None = None
    created_at: str = ""
    updated_at: str = ""
    tenant: str = ANONYMOUS_TENANT

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        return data

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES


class _Unset:
    """Marker for "leave this field alone" in ``JobStore.update`` (None is a value)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()


class JobNotFoundError(KeyError):
    """Raised by ``JobStore.update`` when the job does not exist."""


class JobCancelledError(Exception):
    """Raised by ``JobStore.update`` when the job was cancelled: the worker should stop."""


class JobStore(ABC):
    """Where job state lives. All methods are safe to call from any thread or process."""

    @abstractmethod
    def create(self, job_id: str, avatar_id: str, tenant: str = ANONYMOUS_TENANT) -> Job:
        """Create a queued job (error if the id exists)."""

    @abstractmethod
    def get(self, job_id: str) -> Job | None:
        """The job, or None when it does not exist (or the id is malformed)."""

    @abstractmethod
    def update(
        self,
        job_id: str,
        *,
        state: JobState | _Unset = UNSET,
        stage: str | None | _Unset = UNSET,
        progress: float | _Unset = UNSET,
        stage_seconds: Mapping[str, float] | None = None,
        error: JobError | None | _Unset = UNSET,
    ) -> Job:
        """Change the given fields; ``stage_seconds`` is merged into the stored one.

        Raises ``JobNotFoundError`` if the job does not exist: an update never
        creates a job. Raises ``JobCancelledError`` if the job was cancelled: a
        cancelled job never changes again.
        """

    @abstractmethod
    def cancel(self, job_id: str) -> Job:
        """Mark a queued or running job ``cancelled`` (atomically); a finished job is
        returned unchanged. Raises ``JobNotFoundError`` if there is no such job."""

    @abstractmethod
    def count_delivery(self, job_id: str, task: str) -> int:
        """Count one more delivery of ``task`` for the job; returns the new count.

        Raises ``JobNotFoundError`` if there is no such job.
        """

    @abstractmethod
    def delete(self, job_id: str) -> None:
        """Remove a job (no error if it does not exist)."""

    @abstractmethod
    def ping(self) -> None:
        """Raise if the store is unreachable."""

    @abstractmethod
    def list_unfinished(self) -> list[Job]:
        """Jobs still queued or running (for recovery after a crash)."""

    def close(self) -> None:
        """Release connections."""


def _check_id(job_id: str) -> None:
    if not is_valid_id(job_id):
        raise JobNotFoundError(job_id)


# --------------------------------------------------------------------------- SQLite
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    avatar_id TEXT NOT NULL,
    state TEXT NOT NULL,
    stage TEXT,
    progress REAL NOT NULL DEFAULT 0,
    stage_seconds TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    tenant TEXT NOT NULL DEFAULT 'anonymous',
    deliveries TEXT NOT NULL DEFAULT '{}'
)
"""

#: Columns added after the first release: added to an older database on open.
_ADDED_COLUMNS = {
    "tenant": "TEXT NOT NULL DEFAULT 'anonymous'",
    "deliveries": "TEXT NOT NULL DEFAULT '{}'",
}


class SQLiteJobStore(JobStore):
    """Jobs in one SQLite file (WAL), shared by the gateway and the embedded worker."""

    def __init__(self, path: Path, timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s
        with closing(open_tables(self.path, _SCHEMA, timeout_s)) as conn:
            present = {row["name"] for row in conn.execute("PRAGMA table_info(jobs)")}
            for name, decl in _ADDED_COLUMNS.items():
                if name not in present:
                    try:
                        conn.execute(f"ALTER TABLE jobs ADD COLUMN {name} {decl}")
                    except sqlite3.OperationalError:  # another process added it first
                        pass

    def _connect(self) -> sqlite3.Connection:
        # A fresh connection per write (see workers.sqlite_db.connect).
        conn = connect(self.path, self.timeout_s)
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _reader(self) -> sqlite3.Connection:
        """A read connection of this thread in this process (opening one per status poll
        costs more than the query). Autocommit: every SELECT sees the latest commit."""
        local = self.__dict__.setdefault("_local", threading.local())
        conn = getattr(local, "conn", None)
        if conn is None or getattr(local, "pid", None) != os.getpid():
            conn = self._connect()
            local.conn, local.pid = conn, os.getpid()
        return conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with closing(self._connect()) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @staticmethod
    def _row_to_job(row: sqlite3.Row) -> Job:
        error = json.loads(row["error"]) if row["error"] else None
        return Job(
            id=row["id"],
            avatar_id=row["avatar_id"],
            state=JobState(row["state"]),
            stage=row["stage"],
            progress=float(row["progress"]),
            stage_seconds=json.loads(row["stage_seconds"] or "{}"),
            error=JobError(**error) if error else None,
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            tenant=row["tenant"],
        )

    def create(self, job_id: str, avatar_id: str, tenant: str = ANONYMOUS_TENANT) -> Job:
        _check_id(job_id)
        now = utc_now()
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO jobs (id, avatar_id, state, stage, progress, stage_seconds,"
                " error, created_at, updated_at, tenant)"
                " VALUES (?, ?, ?, NULL, 0, '{}', NULL, ?, ?, ?)",
                (job_id, avatar_id, JobState.QUEUED.value, now, now, tenant),
            )
        return Job(job_id, avatar_id, JobState.QUEUED, None, 0.0, {}, None, now, now, tenant)

    def get(self, job_id: str) -> Job | None:
        if not is_valid_id(job_id):
            return None
        # fetchall: the statement is done and its read transaction ends at once (a
        # half-read cursor would keep a WAL snapshot open and stop checkpoints)
        rows = self._reader().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchall()
        return self._row_to_job(rows[0]) if rows else None

    def update(
        self,
        job_id: str,
        *,
        state: JobState | _Unset = UNSET,
        stage: str | None | _Unset = UNSET,
        progress: float | _Unset = UNSET,
        stage_seconds: Mapping[str, float] | None = None,
        error: JobError | None | _Unset = UNSET,
    ) -> Job:
        _check_id(job_id)
        with self._transaction() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFoundError(job_id)
            job = self._row_to_job(row)
            if job.state is JobState.CANCELLED:
                raise JobCancelledError(job_id)
            seconds = dict(job.stage_seconds)
            if stage_seconds:
                seconds.update({k: float(v) for k, v in stage_seconds.items()})
            new = Job(
                id=job.id,
                avatar_id=job.avatar_id,
                state=job.state if isinstance(state, _Unset) else JobState(state),
                stage=job.stage if isinstance(stage, _Unset) else stage,
                progress=job.progress if isinstance(progress, _Unset) else float(progress),
                stage_seconds=seconds,
                error=job.error if isinstance(error, _Unset) else error,
                created_at=job.created_at,
                updated_at=utc_now(),
                tenant=job.tenant,
            )
            conn.execute(
                "UPDATE jobs SET state = ?, stage = ?, progress = ?, stage_seconds = ?,"
                " error = ?, updated_at = ? WHERE id = ?",
                (
                    new.state.value,
                    new.stage,
                    new.progress,
                    json.dumps(new.stage_seconds),
                    json.dumps(asdict(new.error)) if new.error else None,
                    new.updated_at,
                    job_id,
                ),
            )
        return new

    def cancel(self, job_id: str) -> Job:
        _check_id(job_id)
        now = utc_now()
        with self._transaction() as conn:
            conn.execute(
                "UPDATE jobs SET state = ?, updated_at = ? WHERE id = ? AND state IN (?, ?)",
                (JobState.CANCELLED.value, now, job_id, JobState.QUEUED.value,
                 JobState.RUNNING.value),
            )
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFoundError(job_id)
        return self._row_to_job(row)

    def count_delivery(self, job_id: str, task: str) -> int:
        _check_id(job_id)
        with self._transaction() as conn:
            row = conn.execute("SELECT deliveries FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFoundError(job_id)
            counts = json.loads(row["deliveries"] or "{}")
            counts[task] = int(counts.get(task, 0)) + 1
            conn.execute(
                "UPDATE jobs SET deliveries = ? WHERE id = ?", (json.dumps(counts), job_id)
            )
        return counts[task]

    def delete(self, job_id: str) -> None:
        if not is_valid_id(job_id):
            return
        with self._transaction() as conn:
            conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def ping(self) -> None:
        with closing(self._connect()) as conn:
            conn.execute("SELECT 1 FROM jobs LIMIT 1").fetchall()

    def list_unfinished(self) -> list[Job]:
        with closing(self._connect()) as conn:
            rows = conn.execute(
                "SELECT * FROM jobs WHERE state IN (?, ?) ORDER BY created_at",
                (JobState.QUEUED.value, JobState.RUNNING.value),
            ).fetchall()
        return [self._row_to_job(row) for row in rows]


# ---------------------------------------------------------------------------- Redis
# Sets fields only if the job hash exists, in one atomic step: an update of a job
# that was never created (or was deleted) must not resurrect a partial hash.
# A cancelled job is final: the update is refused (-1) and the worker stops.
_UPDATE_IF_EXISTS = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 0 end
if state == 'cancelled' then return -1 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""

_CANCEL = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 0 end
if state == 'queued' or state == 'running' then
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'updated_at', ARGV[1])
end
return 1
"""

_COUNT_DELIVERY = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
"""

_CREATE_IF_ABSENT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""


class RedisJobStore(JobStore):
    """Jobs as Redis hashes ``{prefix}{id}``; per-stage seconds as ``sec:{stage}`` fields."""

    def __init__(self, url: str, prefix: str = "avatars:job:") -> None:
        import redis  # imported here: the embedded mode never needs the client

        self.prefix = prefix
        self.client = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=5,
            socket_timeout=10,
            health_check_interval=30,
        )
        self._update_script = self.client.register_script(_UPDATE_IF_EXISTS)
        self._create_script = self.client.register_script(_CREATE_IF_ABSENT)
        self._cancel_script = self.client.register_script(_CANCEL)
        self._count_script = self.client.register_script(_COUNT_DELIVERY)

    def _key(self, job_id: str) -> str:
        return f"{self.prefix}{job_id}"

    def key(self, job_id: str) -> str:
        """The Redis key of a job (for readers with their own client, e.g. async ones)."""
        return self._key(job_id)

    @staticmethod
    def job_from_hash(data: Mapping[str, str]) -> Job | None:
        """The job a ``HGETALL`` of its key returned (None for an empty answer)."""
        if not data or "state" not in data:
            return None
        return RedisJobStore._hash_to_job(data)

    @staticmethod
    def _hash_to_job(data: Mapping[str, str]) -> Job:
        seconds = {
            key.removeprefix("sec:"): float(value)
            for key, value in data.items()
            if key.startswith("sec:")
        }
        error = json.loads(data["error"]) if data.get("error") else None
        return Job(
            id=data["id"],
            avatar_id=data["avatar_id"],
            state=JobState(data["state"]),
            stage=data.get("stage") or None,
            progress=float(data.get("progress", 0)),
            stage_seconds=seconds,
            error=JobError(**error) if error else None,
            created_at=data.get("created_at", ""),
            updated_at=data.get("updated_at", ""),
            tenant=data.get("tenant") or ANONYMOUS_TENANT,
        )

    def create(self, job_id: str, avatar_id: str, tenant: str = ANONYMOUS_TENANT) -> Job:
        _check_id(job_id)
        now = utc_now()
        fields = {
            "id": job_id,
            "avatar_id": avatar_id,
            "state": JobState.QUEUED.value,
            "stage": "",
            "progress": "0",
            "error": "",
            "created_at": now,
            "updated_at": now,
            "tenant": tenant,
        }
        argv = [item for pair in fields.items() for item in pair]
        if not self._create_script(keys=[self._key(job_id)], args=argv):
            raise ValueError(f"job {job_id} exists")
        return Job(job_id, avatar_id, JobState.QUEUED, None, 0.0, {}, None, now, now, tenant)

    def get(self, job_id: str) -> Job | None:
        if not is_valid_id(job_id):
            return None
        data = self.client.hgetall(self._key(job_id))
        if not data or "state" not in data:
            return None
        return self._hash_to_job(data)

    def update(
        self,
        job_id: str,
        *,
        state: JobState | _Unset = UNSET,
        stage: str | None | _Unset = UNSET,
        progress: float | _Unset = UNSET,
        stage_seconds: Mapping[str, float] | None = None,
        error: JobError | None | _Unset = UNSET,
    ) -> Job:
        _check_id(job_id)
        fields: dict[str, str] = {"updated_at": utc_now()}
        if not isinstance(state, _Unset):
            fields["state"] = JobState(state).value
        if not isinstance(stage, _Unset):
            fields["stage"] = stage or ""
        if not isinstance(progress, _Unset):
            fields["progress"] = repr(float(progress))
        for name, seconds in (stage_seconds or {}).items():
            fields[f"sec:{name}"] = repr(float(seconds))
        if not isinstance(error, _Unset):
            fields["error"] = json.dumps(asdict(error)) if error else ""
        argv = [item for pair in fields.items() for item in pair]
        result = self._update_script(keys=[self._key(job_id)], args=argv)
        if result == -1:
            raise JobCancelledError(job_id)
        if not result:
            raise JobNotFoundError(job_id)
        job = self.get(job_id)
        if job is None:  # deleted between the two calls
            raise JobNotFoundError(job_id)
        return job

    def cancel(self, job_id: str) -> Job:
        _check_id(job_id)
        if not self._cancel_script(keys=[self._key(job_id)], args=[utc_now()]):
            raise JobNotFoundError(job_id)
        job = self.get(job_id)
        if job is None:
            raise JobNotFoundError(job_id)
        return job

    def count_delivery(self, job_id: str, task: str) -> int:
        _check_id(job_id)
        count = int(self._count_script(keys=[self._key(job_id)], args=[f"n:{task}"]))
        if count == 0:
            raise JobNotFoundError(job_id)
        return count

    def delete(self, job_id: str) -> None:
        if is_valid_id(job_id):
            self.client.delete(self._key(job_id))

    def ping(self) -> None:
        self.client.ping()

    def list_unfinished(self) -> list[Job]:
        jobs = []
        for key in self.client.scan_iter(match=f"{self.prefix}*", count=500):
            job = self.get(key.removeprefix(self.prefix))
            if job is not None and not job.finished:
                jobs.append(job)
        return sorted(jobs, key=lambda job: job.created_at)

    def close(self) -> None:
        self.client.close()


def make_job_store(settings: Settings) -> JobStore:
    """The store matching the deployment: Redis when configured, else SQLite."""
    if settings.redis_url:
        return RedisJobStore(settings.redis_url)
    return SQLiteJobStore(settings.jobs_db_path)
