"""``Idempotency-Key`` of ``POST /v1/avatars``: a retried upload gets the same avatar and job.

The first request with a key reserves it (atomically: ``SET NX`` in Redis, an
``INSERT`` in SQLite) together with the request's fingerprint (SHA-256 of its photos'
bytes, in order) and the avatar and job ids it is about to create. When it has
created them it marks the reservation done; if it fails, it removes it so the client
can retry. A later request with the same key and tenant then gets:

- same fingerprint, done: the same 202 answer (header ``Idempotent-Replayed: true``);
- same fingerprint, still pending: 409 ``idempotency_in_progress`` (retry shortly);
- another fingerprint: 422 ``idempotency_key_reused``.

Keys are scoped per tenant and remembered for ``idempotency_ttl_s``.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from abc import ABC, abstractmethod
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from workers.sqlite_db import connect, open_tables

if TYPE_CHECKING:
    from workers.settings import Settings

MAX_KEY_LENGTH: Final = 255

PENDING: Final = "pending"
DONE: Final = "done"


@dataclass(frozen=True)
class Reservation:
    fingerprint: str
    avatar_id: str
    job_id: str
    state: str = PENDING


def valid_key(key: str) -> bool:
    """1..255 visible ASCII characters."""
    return 0 < len(key) <= MAX_KEY_LENGTH and all(33 <= ord(ch) <= 126 for ch in key)


def scope(tenant: str, key: str) -> str:
    """Storage name of a (tenant, key) pair: fixed length whatever the key."""
    return hashlib.sha256(f"{tenant}\0{key}".encode()).hexdigest()


class IdempotencyStore(ABC):
    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s

    @abstractmethod
    def reserve(self, tenant: str, key: str, reservation: Reservation) -> Reservation | None:
        """Reserve the key for ``reservation``; None if it was free, else what holds it."""

    @abstractmethod
    def complete(self, tenant: str, key: str, reservation: Reservation) -> None:
        """Mark the reservation done (the avatar and job exist)."""

    @abstractmethod
    def release(self, tenant: str, key: str) -> None:
        """Forget the key (the request failed; a retry may use it again)."""

    def close(self) -> None:
        pass


_SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency (
    scope TEXT PRIMARY KEY,
    record TEXT NOT NULL,
    expires_at REAL NOT NULL
)
"""


class SQLiteIdempotencyStore(IdempotencyStore):
    def __init__(self, path: Path, ttl_s: float, timeout_s: float = 30.0) -> None:
        super().__init__(ttl_s)
        self.path = Path(path)
        self.timeout_s = timeout_s
        open_tables(self.path, _SCHEMA, timeout_s).close()

    def _connect(self) -> sqlite3.Connection:
        return connect(self.path, self.timeout_s)

    def reserve(self, tenant: str, key: str, reservation: Reservation) -> Reservation | None:
        name, now = scope(tenant, key), time.time()
        with closing(self._connect()) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM idempotency WHERE expires_at < ?", (now,))
                row = conn.execute(
                    "SELECT record FROM idempotency WHERE scope = ?", (name,)
                ).fetchone()
                if row is None:
                    conn.execute(
                        "INSERT INTO idempotency (scope, record, expires_at) VALUES (?, ?, ?)",
                        (name, json.dumps(asdict(reservation)), now + self.ttl_s),
                    )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        return Reservation(**json.loads(row[0])) if row else None

    def complete(self, tenant: str, key: str, reservation: Reservation) -> None:
        done = Reservation(reservation.fingerprint, reservation.avatar_id, reservation.job_id, DONE)
        with closing(self._connect()) as conn:
            conn.execute(
                "UPDATE idempotency SET record = ? WHERE scope = ?",
                (json.dumps(asdict(done)), scope(tenant, key)),
            )

    def release(self, tenant: str, key: str) -> None:
        with closing(self._connect()) as conn:
            conn.execute("DELETE FROM idempotency WHERE scope = ?", (scope(tenant, key),))


class RedisIdempotencyStore(IdempotencyStore):
    def __init__(self, url: str, ttl_s: float, prefix: str = "avatars:idem:") -> None:
        import redis

        super().__init__(ttl_s)
        self.prefix = prefix
        self.client = redis.Redis.from_url(
            url, decode_responses=True, socket_connect_timeout=5, socket_timeout=10
        )

    def reserve(self, tenant: str, key: str, reservation: Reservation) -> Reservation | None:
        name = self.prefix + scope(tenant, key)
        record = json.dumps(asdict(reservation))
        for _ in range(3):  # the holder may expire between SET NX and GET
            if self.client.set(name, record, nx=True, ex=int(self.ttl_s)):
                return None
            existing = self.client.get(name)
            if existing is not None:
                return Reservation(**json.loads(existing))
        raise RuntimeError("could not reserve the idempotency key")

    def complete(self, tenant: str, key: str, reservation: Reservation) -> None:
        done = Reservation(reservation.fingerprint, reservation.avatar_id, reservation.job_id, DONE)
        self.client.set(
            self.prefix + scope(tenant, key), json.dumps(asdict(done)), xx=True, keepttl=True
        )

    def release(self, tenant: str, key: str) -> None:
        self.client.delete(self.prefix + scope(tenant, key))

    def close(self) -> None:
        self.client.close()


def make_idempotency_store(settings: Settings) -> IdempotencyStore:
    if settings.redis_url:
        return RedisIdempotencyStore(settings.redis_url, settings.idempotency_ttl_s)
    return SQLiteIdempotencyStore(settings.jobs_db_path, settings.idempotency_ttl_s)
