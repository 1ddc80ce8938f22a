"""API keys and tenants.

A key looks like ``avk_<id>_<secret>``: ``id`` (16 hex) names the key in listings and
in ``avatars keys revoke``; the whole key is shown once, when it is created, and only
its SHA-256 is stored. A presented key is looked up by its id and its digest compared
with ``hmac.compare_digest`` (constant time). Each key belongs to a tenant; every
avatar and job records the tenant that created it, and other tenants get 404.

Keys live where jobs live: Redis hashes ``avatars:apikey:{id}`` (plus the set
``avatars:apikeys``) in production, the ``api_keys`` table of ``data_dir/jobs.sqlite``
in the embedded mode. ``CachedKeys`` keeps looked-up keys in the gateway's memory for
``auth_cache_s`` seconds, so a status poll costs no store round trip; a revoked key
stops working within that time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from workers.jobs import ANONYMOUS_TENANT
from workers.sqlite_db import connect, open_tables
from workers.storage import utc_now

if TYPE_CHECKING:
    from workers.settings import Settings

KEY_PREFIX: Final = "avk_"
_KEY_RE = re.compile(r"\Aavk_([0-9a-f]{16})_([A-Za-z0-9_-]{20,100})\Z")
TENANT_RE: Final = re.compile(r"\A[a-z0-9][a-z0-9._-]{0,63}\Z")


class InvalidTenantError(ValueError):
    """A tenant name that is not ``[a-z0-9][a-z0-9._-]{0,63}`` (or is reserved)."""


@dataclass(frozen=True)
class ApiKey:
    """A stored key without its secret."""

    id: str
    tenant: str
    name: str
    created_at: str
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def digest(key: str) -> str:
    """SHA-256 hex digest of a whole key: the only form in which keys are stored."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_key_id(key: str) -> str | None:
    """The id part of a well-formed key, else None."""
    match = _KEY_RE.match(key)
    return match.group(1) if match else None


def check_tenant(tenant: str) -> str:
    if not TENANT_RE.match(tenant):
        raise InvalidTenantError(
            f"invalid tenant {tenant!r}: use 1-64 of a-z 0-9 . _ - (starting with a letter or digit)"
        )
    if tenant == ANONYMOUS_TENANT:
        raise InvalidTenantError(f"the tenant name {ANONYMOUS_TENANT!r} is reserved")
    return tenant


def new_key() -> tuple[str, str]:
    """A fresh (key id, whole key)."""
    key_id = secrets.token_hex(8)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


class KeyStore(ABC):
    """Where API keys live. All methods are safe from any thread or process."""

    def create(self, tenant: str, name: str = "") -> tuple[ApiKey, str]:
        """Create a key for ``tenant``; returns it and the whole key (shown once)."""
        check_tenant(tenant)
        key_id, key = new_key()
        record = ApiKey(id=key_id, tenant=tenant, name=name[:200], created_at=utc_now())
        self._insert(record, digest(key))
        return record, key

    def lookup(self, key: str) -> ApiKey | None:
        """The active key ``key`` is, or None (unknown, malformed, revoked)."""
        key_id = parse_key_id(key)
        if key_id is None:
            return None
        found = self._fetch(key_id)
        if found is None:
            return None
        record, stored_digest = found
        if not hmac.compare_digest(stored_digest, digest(key)):
            return None
        return record if record.active else None

    @abstractmethod
    def _insert(self, record: ApiKey, key_digest: str) -> None: ...

    @abstractmethod
    def _fetch(self, key_id: str) -> tuple[ApiKey, str] | None: ...

    @abstractmethod
    def list(self) -> list[ApiKey]:
        """All keys, oldest first (revoked ones too)."""

    @abstractmethod
    def revoke(self, key_id: str) -> bool:
        """Revoke a key; False if there is no such key (revoking twice is fine)."""

    def close(self) -> None:
        """Release connections."""


# --------------------------------------------------------------------------- SQLite
_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    digest TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
)
"""


class SQLiteKeyStore(KeyStore):
    """Keys in the embedded mode's ``jobs.sqlite`` (table ``api_keys``)."""

    def __init__(self, path: Path, timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s
        open_tables(self.path, _SCHEMA, timeout_s).close()

    def _connect(self) -> sqlite3.Connection:
        return connect(self.path, self.timeout_s)

    @staticmethod
    def _record(row: sqlite3.Row) -> ApiKey:
        return ApiKey(row["id"], row["tenant"], row["name"], row["created_at"], row["revoked_at"])

    def _insert(self, record: ApiKey, key_digest: str) -> None:
        with closing(self._connect()) as conn:
            conn.execute(
                "INSERT INTO api_keys (id, tenant, name, digest, created_at) VALUES (?, ?, ?, ?, ?)",
                (record.id, record.tenant, record.name, key_digest, record.created_at),
            )

    def _fetch(self, key_id: str) -> tuple[ApiKey, str] | None:
        with closing(self._connect()) as conn:
            row = conn.execute("SELECT * FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        return (self._record(row), row["digest"]) if row else None

    def list(self) -> list[ApiKey]:
        with closing(self._connect()) as conn:
            rows = conn.execute("SELECT * FROM api_keys ORDER BY created_at, id").fetchall()
        return [self._record(row) for row in rows]

    def revoke(self, key_id: str) -> bool:
        with closing(self._connect()) as conn:
            cursor = conn.execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?",
                (utc_now(), key_id),
            )
            return cursor.rowcount > 0


# ---------------------------------------------------------------------------- Redis
class RedisKeyStore(KeyStore):
    """Keys as Redis hashes ``{prefix}{id}``; ids in the set ``{prefix[:-1]}s``."""

    def __init__(self, url: str, prefix: str = "avatars:apikey:") -> None:
        import redis

        self.prefix = prefix
        self.index = prefix.rstrip(":") + "s"
        self.client = redis.Redis.from_url(
            url, decode_responses=True, socket_connect_timeout=5, socket_timeout=10
        )

    def _insert(self, record: ApiKey, key_digest: str) -> None:
        fields = {
            "id": record.id,
            "tenant": record.tenant,
            "name": record.name,
            "digest": key_digest,
            "created_at": record.created_at,
        }
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.prefix + record.id, mapping=fields)
        pipe.sadd(self.index, record.id)
        pipe.execute()

    def _fetch(self, key_id: str) -> tuple[ApiKey, str] | None:
        data = self.client.hgetall(self.prefix + key_id)
        if not data or "digest" not in data:
            return None
        record = ApiKey(
            data["id"], data["tenant"], data.get("name", ""), data.get("created_at", ""),
            data.get("revoked_at") or None,
        )
        return record, data["digest"]

    def list(self) -> list[ApiKey]:
        records = []
        for key_id in self.client.smembers(self.index):
            found = self._fetch(key_id)
            if found is not None:
                records.append(found[0])
        return sorted(records, key=lambda r: (r.created_at, r.id))

    def revoke(self, key_id: str) -> bool:
        key = self.prefix + key_id
        if not self.client.exists(key):
            return False
        self.client.hsetnx(key, "revoked_at", utc_now())
        return True

    def close(self) -> None:
        self.client.close()


def make_key_store(settings: Settings) -> KeyStore:
    """Keys where the jobs are: Redis when configured, else ``jobs.sqlite``."""
    if settings.redis_url:
        return RedisKeyStore(settings.redis_url)
    return SQLiteKeyStore(settings.jobs_db_path)


class CachedKeys:
    """A gateway's memory of recently looked-up keys (hits and misses), with a TTL.

    Entries are keyed by the key's digest, never the key. ``get`` answers from memory
    or says it does not know (``MISSING``); ``lookup`` asks the store (blocking).
    """

    MISSING: Final = object()

    def __init__(self, store: KeyStore, ttl_s: float, capacity: int = 10_000) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.capacity = capacity
        self._items: OrderedDict[str, tuple[float, ApiKey | None]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> ApiKey | None | object:
        if self.ttl_s <= 0:
            return self.MISSING
        entry_key = digest(key)
        with self._lock:
            entry = self._items.get(entry_key)
            if entry is None:
                return self.MISSING
            expires, record = entry
            if expires < time.monotonic():
                del self._items[entry_key]
                return self.MISSING
            return record

    def lookup(self, key: str) -> ApiKey | None:
        """Ask the store (blocking: call from a worker thread) and remember the answer."""
        record = self.store.lookup(key)
        if self.ttl_s > 0:
            with self._lock:
                self._items[digest(key)] = (time.monotonic() + self.ttl_s, record)
                while len(self._items) > self.capacity:
                    self._items.popitem(last=False)
        return record
