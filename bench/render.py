"""Render-path benchmark: frames per second, time to first frame, MP4, memory per avatar.

Builds one avatar with the real pipeline from a synthetic person
(``models.synth.quick.person_photo`` -> ``models.pipeline.create_avatar``) in a temporary
directory, or takes ``--bundle PATH`` (an avatar.glb or its directory), then measures on
this machine (CPU path unless a GPU backend is available; 512x512, JPEG quality 85):

* ``single_stream_fps``: one stream in-process, end to end (pose -> skin -> rasterize ->
  texture -> JPEG), a built-in motion; ``single_stream_fps_uncached_pose`` the same with
  retargeting and forward kinematics redone every frame (what the live WebSocket does);
* ``baseline_single_stream_fps``: the same single-stream pipeline with the plain numpy
  rasterizer (``models.raster.get_backend("numpy")``);
* ``ms_*``: where one frame's time goes (pose, skin + clip transform, rasterize + texture
  + antialias, JPEG);
* against a real ``uvicorn`` gateway on loopback (a child process serving the avatar):
  ``four_streams_total_fps`` (4 concurrent unpaced MJPEG streams, total frames/s),
  ``single_http_stream_fps``, ``first_frame_ms_cached`` (player in the gateway's cache:
  request -> first JPEG received, median), ``first_frame_ms_cold`` (the bundle is read
  from disk again: its mtime changes, so the cache misses), ``first_frame_ms_new_process``
  (the first request a fresh gateway serves, as soon as it answers; ``gateway_start_s``
  is how long it took to start, render kernels loaded), ``mp4_120_frames_seconds`` (GET render.mp4,
  120 frames, until the whole file is received), ``avatar_cache_mb`` (gateway RSS growth
  per avatar loaded into its cache, over several avatars);
* ``mp4_120_frames_seconds_inprocess``, ``avatar_arrays_mb`` (the arrays one player
  keeps, counted by ``AvatarPlayer.memory_bytes``).

    python bench/render.py [--bundle PATH] [--json OUT] [--quick]

``--quick`` measures fewer frames (for tests); the figures are then rougher.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SIZE = 512
QUALITY = 85
TARGETS = {
    "single_stream_fps": (">=", 60),
    "four_streams_total_fps": (">=", 100),
    "first_frame_ms_cached": ("<=", 150),
    "first_frame_ms_cold": ("<=", 400),
    "mp4_120_frames_seconds": ("<=", 4),
    "avatar_cache_mb": ("<=", 50),
}


# ----------------------------------------------------------------------------- setup
def build_avatar(work: Path, seed: int) -> Path:
    from models.pipeline import create_avatar
    from models.synth.quick import person_photo

    photo = work / "person.png"
    person_photo(seed=seed, size=512).save(photo)
    t0 = time.perf_counter()
    glb = create_avatar([photo], work / "avatar")
    print(f"built the avatar in {time.perf_counter() - t0:.1f} s: {glb}", flush=True)
    return glb


def resolve_bundle(path: Path) -> Path:
    glb = path / "avatar.glb" if path.is_dir() else path
    if not glb.is_file():
        raise SystemExit(f"no avatar.glb at {path}")
    return glb


def register_avatar(data_dir: Path, glb: Path) -> str:
    """Store an avatar whose build succeeded with ``glb`` as its bundle; returns its id."""
    from PIL import Image

    from workers.jobs import JobState, make_job_store
    from workers.settings import Settings
    from workers.storage import AvatarStorage, NewPhoto, new_id

    settings = Settings(data_dir=data_dir, redis_url=None)
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (128, 128, 128)).save(buf, format="PNG")
    avatar_id, job_id = new_id(), new_id()
    storage = AvatarStorage(settings.avatars_dir)
    storage.create([NewPhoto(buf, "PNG", 32, 32, "bench.png")], job_id=job_id, avatar_id=avatar_id)
    jobs = make_job_store(settings)
    try:
        jobs.create(job_id, avatar_id)
        tmp = storage.avatar_dir(avatar_id) / ".avatar.glb.tmp"
        shutil.copyfile(glb, tmp)
        os.replace(tmp, storage.glb_path(avatar_id))
        jobs.update(job_id, state=JobState.SUCCEEDED, stage=None, progress=1.0)
    finally:
        jobs.close()
    return avatar_id


def rss_mb(pid: int | None = None) -> float:
    status = Path(f"/proc/{pid or 'self'}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


# ------------------------------------------------------------------------ in-process
def _fps(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("nan")


def measure_inprocess(glb: Path, frames: int, baseline_frames: int) -> dict:
    import numpy as np

    from models.animation.motions import get_motion
    from models.render.player import AvatarPlayer, View, encode_jpeg, render_mp4

    out: dict = {}
    player = AvatarPlayer.from_glb(glb, backend="auto")
    out["backend"] = player.backend.name
    out["cull_backfaces"] = player.cull_backfaces
    out["vertices"] = int(player.n_vertices)
    out["triangles"] = int(len(player.faces))
    list(player.jpeg_frames("dance", SIZE, 30, 3, quality=QUALITY))  # warm-up (numba cache)

    # One stream of a built-in motion, end to end, on a fresh player (no cached poses).
    fresh = AvatarPlayer(player.mesh, backend="auto")
    t0 = time.perf_counter()
    n = sum(1 for _ in fresh.jpeg_frames("turntable", SIZE, 30, frames, quality=QUALITY))
    out["single_stream_fps"] = _fps(n, time.perf_counter() - t0)

    # The live path: retarget + FK every frame (poses not cached).
    turntable = get_motion("turntable")
    state = player.new_state()
    view = View()
    t0 = time.perf_counter()
    for i in range(frames):
        player.pose_jpeg(turntable.frame(i / 30), SIZE, view, state, QUALITY)
    out["single_stream_fps_uncached_pose"] = _fps(frames, time.perf_counter() - t0)

    # Where a frame's time goes.
    reps = max(10, frames // 4)
    frame = turntable.frame(1.3)

    def ms(fn) -> float:
        fn()
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t) / reps * 1000

    A = player.pose_matrices(frame)
    M = player.clip_matrix(SIZE, view)
    out["ms_pose_uncached"] = ms(lambda: player.pose_matrices(frame, out=state.A))
    out["ms_skin_clip"] = ms(lambda: player.skin.clip_into(A, M, state.clip))
    clip = player.skin.clip_into(A, M, state.clip).copy()
    out["ms_rasterize_texture_aa"] = ms(
        lambda: player._raster(clip, SIZE, view.background, True, state.buffers)
    )
    bgr = np.ascontiguousarray(player._raster(clip, SIZE, view.background, True, state.buffers)[0])
    out["ms_jpeg"] = ms(lambda: encode_jpeg(bgr, QUALITY))

    # Baseline: the same pipeline with the plain numpy rasterizer.
    base = AvatarPlayer(player.mesh, backend="numpy")
    list(base.jpeg_frames("turntable", SIZE, 30, 1, quality=QUALITY))
    t0 = time.perf_counter()
    n = sum(1 for _ in base.jpeg_frames("turntable", SIZE, 30, baseline_frames, quality=QUALITY))
    out["baseline_single_stream_fps"] = _fps(n, time.perf_counter() - t0)
    out["speedup_vs_baseline"] = out["single_stream_fps"] / out["baseline_single_stream_fps"]

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        render_mp4(glb, Path(tmp) / "x.mp4", motion="walk", size=SIZE, fps=30, frames=120,
                   player=player)
        out["mp4_120_frames_seconds_inprocess"] = time.perf_counter() - t0
    out["avatar_arrays_mb"] = player.memory_bytes() / 2**20
    return out


# ------------------------------------------------------------------------- gateway
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gateway:
    """``uvicorn service.app:create_app --factory`` on loopback, a child process."""

    def __init__(self, data_dir: Path, cache_size: int, log_path: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AVATARS_")}
        env.update(
            AVATARS_DATA_DIR=str(data_dir),
            AVATARS_PLAYER_CACHE_SIZE=str(cache_size),
            AVATARS_STREAM_JPEG_QUALITY=str(QUALITY),
            PYTHONUNBUFFERED="1",
        )
        self.log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory",
             "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        self.log_path = log_path
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"gateway exited:\n{log_path.read_text(errors='replace')}")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                    self.start_s = time.perf_counter() - t0
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("gateway did not start")
            time.sleep(0.2)

    def rss_mb(self) -> float:
        return rss_mb(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


def stream_url(base: str, avatar_id: str) -> str:
    return f"{base}/v1/avatars/{avatar_id}/stream"


def count_stream(client: httpx.Client, url: str, params: dict) -> int:
    """Read a whole MJPEG response; returns the number of JPEG frames in it."""
    n = 0
    tail = b""
    marker = b"\r\nContent-Type: image/jpeg\r\n"
    with client.stream("GET", url, params=params) as r:
        r.raise_for_status()
        for chunk in r.iter_raw(1 << 16):
            data = tail + chunk
            n += data.count(marker)
            tail = data[-(len(marker) - 1):]
    return n


def first_frame_ms(client: httpx.Client, url: str) -> float:
    """Request -> the first complete JPEG received (then the client hangs up)."""
    params = {"motion": "turntable", "size": SIZE, "frames": 1, "pace": "false"}
    t0 = time.perf_counter()
    buf = b""
    with client.stream("GET", url, params=params) as r:
        r.raise_for_status()
        for chunk in r.iter_raw(1 << 16):
            buf += chunk
            start = buf.find(b"\xff\xd8")
            if start >= 0 and buf.find(b"\xff\xd9", start) >= 0:
                break
    return (time.perf_counter() - t0) * 1000


def measure_gateway(glb: Path, work: Path, frames: int, memory_avatars: int, repeats: int) -> dict:
    out: dict = {}
    data_dir = work / "data"
    data_dir.mkdir()
    avatar_id = register_avatar(data_dir, glb)
    gateway = Gateway(data_dir, cache_size=memory_avatars + 2, log_path=work / "gateway.log")
    try:
        with httpx.Client(timeout=300) as client:
            url = stream_url(gateway.base, avatar_id)
            out["gateway_start_s"] = gateway.start_s
            out["first_frame_ms_new_process"] = first_frame_ms(client, url)

            # Memory first, before streams have grown the heap: gateway RSS growth while
            # more avatars are loaded into its cache (each by a one-frame request).
            ids = [register_avatar(data_dir, glb) for _ in range(memory_avatars)]
            small = {"motion": "turntable", "size": 64, "frames": 1, "pace": "false"}
            count_stream(client, url, small)
            time.sleep(0.3)
            before = gateway.rss_mb()
            for other in ids:
                count_stream(client, stream_url(gateway.base, other), small)
            time.sleep(0.3)
            out["avatar_cache_mb"] = (gateway.rss_mb() - before) / len(ids)
            out["avatar_cache_mb_avatars"] = len(ids)

            warm = {"motion": "turntable", "size": SIZE, "frames": 10, "pace": "false"}
            count_stream(client, url, warm)
            out["first_frame_ms_cached"] = statistics.median(
                first_frame_ms(client, url) for _ in range(repeats)
            )
            glb_path = data_dir / "avatars" / avatar_id / "avatar.glb"
            cold = []
            for _ in range(repeats):
                st = glb_path.stat()
                os.utime(glb_path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
                cold.append(first_frame_ms(client, url))  # the cache misses: read from disk
            out["first_frame_ms_cold"] = statistics.median(cold)

            params = {"motion": "turntable", "size": SIZE, "frames": frames, "pace": "false"}
            t0 = time.perf_counter()
            n = count_stream(client, url, params)
            out["single_http_stream_fps"] = _fps(n, time.perf_counter() - t0)

        counts = [0] * 4
        errors: list[BaseException] = []

        def one(i: int) -> None:
            try:
                with httpx.Client(timeout=300) as c:
                    counts[i] = count_stream(c, stream_url(gateway.base, avatar_id), params)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        if errors:
            raise errors[0]
        out["four_streams_total_fps"] = _fps(sum(counts), elapsed)
        out["four_streams_frames"] = sum(counts)

        with httpx.Client(timeout=300) as client:
            mp4 = f"{gateway.base}/v1/avatars/{avatar_id}/render.mp4"
            t0 = time.perf_counter()
            r = client.get(mp4, params={"motion": "walk", "size": SIZE, "fps": 30, "frames": 120})
            r.raise_for_status()
            out["mp4_120_frames_seconds"] = time.perf_counter() - t0
            out["mp4_bytes"] = len(r.content)
        out["gateway_rss_mb"] = gateway.rss_mb()

    finally:
        gateway.stop()
    return out


# ---------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--bundle", type=Path, help="avatar.glb (or its directory); default: build one")
    ap.add_argument("--json", type=Path, help="write the figures here (flat JSON)")
    ap.add_argument("--quick", action="store_true", help="few frames (smoke test)")
    ap.add_argument("--seed", type=int, default=0, help="synthetic person when building")
    args = ap.parse_args()

    frames = 24 if args.quick else 240
    baseline_frames = 2 if args.quick else 8
    memory_avatars = 2 if args.quick else 6
    repeats = 2 if args.quick else 7

    figures: dict = {"size": SIZE, "jpeg_quality": QUALITY, "cpu_count": os.cpu_count(),
                     "quick": bool(args.quick)}
    with tempfile.TemporaryDirectory(prefix="bench-render-") as tmp:
        work = Path(tmp)
        if args.bundle:
            glb = resolve_bundle(args.bundle)
        else:
            glb = build_avatar(work, args.seed)
        figures.update(measure_inprocess(glb, frames, baseline_frames))
        print(f"in-process: {figures['single_stream_fps']:.1f} fps", flush=True)
        figures.update(measure_gateway(glb, work, frames, memory_avatars, repeats))
        figures["frames_per_stream"] = frames

    width = max(len(k) for k in figures)
    for key, value in figures.items():
        text = f"{value:.2f}" if isinstance(value, float) else str(value)
        target = TARGETS.get(key)
        note = ""
        if target is not None and isinstance(value, float):
            op, limit = target
            ok = value >= limit if op == ">=" else value <= limit
            note = f"   (target {op} {limit}: {'ok' if ok else 'MISSED'})"
        print(f"{key:<{width}}  {text}{note}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
