"""MJPEG streaming of a posed avatar, and the cache of loaded avatars.

Rendering is blocking numpy work, so each frame is produced in a worker thread
(``anyio.to_thread``) and the event loop only awaits it, paces it and sends it.
When the client goes away Starlette cancels the response; the frame being rendered
is allowed to finish, then the frame generator is closed and no further frame is
made. Loading a ``.glb`` into an ``AvatarPlayer`` costs far more than a frame, so a
few players are kept in an LRU keyed by avatar id and the file's mtime (a rebuilt
avatar gets a new entry).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from workers.observability import STREAM_FRAMES, STREAMS_ACTIVE

log = logging.getLogger(__name__)

BOUNDARY = "frame"
MEDIA_TYPE = f"multipart/x-mixed-replace; boundary={BOUNDARY}"

_END = object()


class PlayerCache:
    """LRU of loaded ``AvatarPlayer`` objects keyed by (avatar id, glb mtime).

    Thread-safe: lookups hold a lock; loading happens outside it so a slow load of
    one avatar does not block streams of the others.
    """

    def __init__(self, capacity: int, loader: Callable[[Path], Any] | None = None) -> None:
        self.capacity = capacity
        self._loader = loader
        self._items: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, avatar_id: str, glb_path: Path) -> Any:
        """The player for this avatar's current glb, loading it on a miss (blocking)."""
        key = (avatar_id, glb_path.stat().st_mtime_ns)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        player = (self._loader or _load_player)(glb_path)
        with self._lock:
            for old in [k for k in self._items if k[0] == avatar_id and k != key]:
                del self._items[old]
            self._items[key] = player
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return player

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


_warm_lock = threading.Lock()
_warmed = False


def warm_render_path() -> None:
    """Import the render path and load its compiled kernels, once per process (blocking).

    Without it the first frame a fresh gateway renders also pays for importing numba and
    loading the kernels from numba's cache (about a second on 2 cores)."""
    global _warmed
    with _warm_lock:
        if _warmed:
            return
        t0 = time.perf_counter()
        from models.render.player import warmup

        warmup()
        _warmed = True
        log.info("render path ready in %.2f s", time.perf_counter() - t0)


def start_render_warm_up() -> threading.Thread:
    """``warm_render_path`` in a daemon thread: start-up is not delayed by it."""

    def run() -> None:
        try:
            warm_render_path()
        except Exception:  # never fatal: the first frame then warms up instead
            log.warning("warming up the render path failed", exc_info=True)

    thread = threading.Thread(target=run, name="render-warm-up", daemon=True)
    thread.start()
    return thread


def _load_player(glb_path: Path) -> Any:
    from models.render.player import AvatarPlayer  # the render path imports no torch

    return AvatarPlayer.from_glb(glb_path)


def mjpeg_part(jpeg: bytes) -> bytes:
    """One multipart part holding one JPEG frame."""
    header = (
        f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
    ).encode("ascii")
    return header + jpeg + b"\r\n"


def _next_or_end(frames: Iterator[bytes]) -> Any:
    return next(frames, _END)


async def mjpeg_stream(
    frames: Iterator[bytes], fps: int, pace: bool, label: str = "stream", kind: str = "mjpeg"
) -> AsyncIterator[bytes]:
    """Yield MJPEG parts from a blocking frame iterator, each frame made in a thread.

    With ``pace`` frames leave no faster than ``fps`` (a late frame is sent at once,
    and the schedule restarts from it rather than bursting to catch up).
    """
    interval = 1.0 / fps
    next_due = time.monotonic()
    sent = 0
    completed = False
    counter = STREAM_FRAMES.labels(kind)
    active = STREAMS_ACTIVE.labels(kind)
    active.inc()
    try:
        while True:
            frame = await anyio.to_thread.run_sync(_next_or_end, frames)
            if frame is _END:
                break
            if pace:
                delay = next_due - time.monotonic()
                if delay > 0:
                    await anyio.sleep(delay)
                next_due = max(next_due, time.monotonic() - interval) + interval
            yield mjpeg_part(frame)
            sent += 1
            counter.inc()
        yield f"--{BOUNDARY}--\r\n".encode("ascii")
        completed = True
    finally:
        # Runs on normal end and on cancellation (client gone): no thread is inside
        # the generator now, so closing it here stops rendering for good.
        active.dec()
        close = getattr(frames, "close", None)
        if close is not None:
            close()
        log.info(
            "%s ended after %d frames (%s)", label, sent, "complete" if completed else "client gone"
        )
