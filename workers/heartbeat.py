"""Worker liveness files for the embedded mode.

In the embedded mode there is no broker to ask whether a worker is consuming, so
each worker process keeps a small JSON file fresh under ``data_dir/queue/workers/``
(pid, host, queues, time). ``GET /readyz`` counts workers whose file is recent and,
on the same host, whose pid is alive. With Redis, readiness is a broker ping.
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


class HeartbeatWriter:
    """Refreshes this process's heartbeat file from a daemon thread until stopped."""

    def __init__(self, settings: Settings, queues: list[str]) -> None:
        self.settings = settings
        self.queues = queues
        self.path = heartbeat_dir(settings) / f"{socket.gethostname()}-{os.getpid()}.json"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        record = {
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "queues": self.queues,
            "updated_at": time.time(),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, json.dumps(record).encode())

    def _run(self) -> None:
        while not self._stop.wait(self.settings.worker_heartbeat_s):
            try:
                self.beat()
            except OSError:
                log.warning("could not write worker heartbeat %s", self.path, exc_info=True)

    def prune_dead(self) -> None:
        """Remove files left on this host by worker processes that no longer exist."""
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
        self.beat()
        self.prune_dead()
        self._thread = threading.Thread(target=self._run, name="avatars-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def live_workers(settings: Settings) -> list[dict[str, Any]]:
    """Workers whose heartbeat is fresh (and, on this host, whose process exists)."""
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
