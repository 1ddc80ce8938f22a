"""Worker heartbeats, read by ``GET /readyz``.

Each worker (main process) refreshes a small record (pid, host, queues, time) every
``worker_heartbeat_s``:

- embedded mode: a JSON file under ``data_dir/queue/workers/``; a worker counts when
  its file is recent and, on the same host, its pid is alive;
- Redis: a member of the sorted set ``avatars:workers`` scored by the time of its
  last beat, with the record in the hash ``avatars:workers:info``; a worker counts
  when its score is recent. Workers on any machine show up, and a worker that lost
  Redis stops counting once its beats stop arriving.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from workers.settings import Settings
from workers.storage import atomic_write_bytes

log = logging.getLogger(__name__)


def heartbeat_dir(settings: Settings) -> Path:
    return settings.queue_dir / "workers"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


REDIS_WORKERS_KEY = "avatars:workers"
REDIS_WORKERS_INFO = "avatars:workers:info"


class HeartbeatWriter:
    """Refreshes this process's heartbeat from a daemon thread until stopped."""

    def __init__(self, settings: Settings, queues: list[str], redis_client: Any = None) -> None:
        self.settings = settings
        self.queues = queues
        self.name = f"{socket.gethostname()}-{os.getpid()}"
        self.path = heartbeat_dir(settings) / f"{self.name}.json"
        self.redis = redis_client
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def beat(self) -> None:
        record = {
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "queues": self.queues,
            "updated_at": time.time(),
        }
        if self.redis is not None:
            pipe = self.redis.pipeline(transaction=True)
            pipe.zadd(REDIS_WORKERS_KEY, {self.name: record["updated_at"]})
            pipe.hset(REDIS_WORKERS_INFO, self.name, json.dumps(record))
            pipe.execute()
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, json.dumps(record).encode())

    def _run(self) -> None:
        while not self._stop.wait(self.settings.worker_heartbeat_s):
            try:
                self.beat()
            except Exception:
                if not self._failing:
                    log.warning("could not write worker heartbeat %s", self.name, exc_info=True)
                self._failing = True
            else:
                if self._failing:
                    log.info("worker heartbeat %s written again", self.name)
                self._failing = False

    def prune_dead(self) -> None:
        """Remove files left on this host by worker processes that no longer exist."""
        if self.redis is not None:
            return  # stale Redis entries age out (see live_workers)
        host = socket.gethostname()
        for path in self.path.parent.glob(f"{host}-*.json"):
            try:
                record = json.loads(path.read_text())
                if record.get("hostname") == host and not _pid_alive(int(record["pid"])):
                    path.unlink()
            except (OSError, ValueError, KeyError, TypeError):
                continue

    def start(self) -> None:
        if self._thread is not None:
            return
        try:
            self.beat()
        except Exception:
            log.warning("could not write worker heartbeat %s", self.name, exc_info=True)
        self.prune_dead()
        self._thread = threading.Thread(target=self._run, name="avatars-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.redis is not None:
            try:
                pipe = self.redis.pipeline(transaction=True)
                pipe.zrem(REDIS_WORKERS_KEY, self.name)
                pipe.hdel(REDIS_WORKERS_INFO, self.name)
                pipe.execute()
            except Exception:  # noqa: BLE001 - the entry ages out
                log.warning("could not remove worker heartbeat %s", self.name)
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def _live_redis_workers(settings: Settings, client: Any) -> list[dict[str, Any]]:
    now = time.time()
    names = client.zrangebyscore(REDIS_WORKERS_KEY, now - settings.worker_stale_s, "+inf")
    # forget workers silent for long (a crashed worker never removes its entry)
    old = client.zrangebyscore(REDIS_WORKERS_KEY, "-inf", now - 100 * settings.worker_stale_s)
    if old:
        pipe = client.pipeline(transaction=True)
        pipe.zrem(REDIS_WORKERS_KEY, *old)
        pipe.hdel(REDIS_WORKERS_INFO, *old)
        pipe.execute()
    if not names:
        return []
    alive = []
    for raw in client.hmget(REDIS_WORKERS_INFO, names):
        if raw is None:
            continue
        try:
            record = json.loads(raw)
            age = now - float(record["updated_at"])
        except (ValueError, KeyError, TypeError):
            continue
        alive.append({**record, "age_s": round(age, 2)})
    return alive


def live_workers(settings: Settings, redis_client: Any = None) -> list[dict[str, Any]]:
    """Workers whose heartbeat is fresh (and, on this host, whose process exists).

    With Redis (``redis_client`` given) the records come from Redis; errors propagate.
    """
    if redis_client is not None:
        return _live_redis_workers(settings, redis_client)
    folder = heartbeat_dir(settings)
    if not folder.is_dir():
        return []
    now = time.time()
    host = socket.gethostname()
    alive = []
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text())
            age = now - float(record["updated_at"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if age > settings.worker_stale_s:
            continue
        if record.get("hostname") == host and not _pid_alive(int(record.get("pid", 0))):
            continue
        alive.append({**record, "age_s": round(age, 2)})
    return alive
