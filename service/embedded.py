"""The embedded worker: a Celery worker child process of ``avatars serve``.

Without Redis, one command must serve the whole product, so ``avatars serve``
starts ``avatars worker`` (same task code, filesystem queue, SQLite job store) as a
child process, restarts it if it dies, and stops it (warm shutdown, then kill)
when the gateway exits. The child runs in its own session so that Ctrl-C in the
terminal reaches only the gateway, which then stops the child exactly once; and it
exits by itself if the gateway disappears without stopping it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

log = logging.getLogger(__name__)


class EmbeddedWorker:
    """Starts, watches and stops one ``avatars worker`` child process."""

    def __init__(
        self,
        env: dict[str, str],
        queues: str = "fit,inpaint",
        restart_delay_s: float = 2.0,
        stop_timeout_s: float = 30.0,
    ) -> None:
        self.env = env
        self.queues = queues
        self.restart_delay_s = restart_delay_s
        self.stop_timeout_s = stop_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "service.cli",
            "worker",
            "--queues",
            self.queues,
            "--pool",
            "solo",
            "--concurrency",
            "1",
            "--exit-with-parent",
        ]

    def _spawn(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(self.command, env=self.env, start_new_session=True)
        log.info("embedded worker started (pid %d)", proc.pid)
        return proc

    def start(self) -> None:
        self.process = self._spawn()
        self._watcher = threading.Thread(target=self._watch, name="embedded-worker", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while not self._stopping.is_set():
            proc = self.process
            if proc is None:
                return
            code = proc.poll()
            if code is None:
                self._stopping.wait(0.5)
                continue
            if self._stopping.is_set():
                return
            log.error("embedded worker exited with %s; restarting", code)
            if self._stopping.wait(self.restart_delay_s):
                return
            self.process = self._spawn()

    def stop(self) -> None:
        """Warm shutdown (SIGTERM: finish the running stage), then kill after a timeout."""
        self._stopping.set()
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("embedded worker did not stop in %.0f s; killing", self.stop_timeout_s)
            proc.kill()
            proc.wait(timeout=10)
        if self._watcher is not None:
            self._watcher.join(timeout=5)


def exit_with_parent(poll_s: float = 1.0) -> None:
    """Warm-shut this process down when its parent goes away (daemon thread)."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:
                log.warning("parent process %d is gone; shutting down", parent)
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
