"""End-to-end benchmark: one photo through the real service, then its MJPEG stream.

Starts `avatars serve` (embedded default: gateway + embedded worker, no Redis) on a free
loopback port with a temporary data directory, uploads the photo, polls the job, reads
the seconds per stage the job recorded, then measures the stream's frames per second
(unpaced, 512x512, JPEG quality 85).

    python bench/e2e.py --photo PATH [--json OUT] [--frames 120]

Without --photo a synthetic person made by the project is used.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(base: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"service at {base} not ready after {timeout:.0f} s")


def count_mjpeg_frames(base: str, avatar_id: str, frames: int) -> tuple[int, float]:
    """Stream `frames` frames unpaced; returns (frames received, seconds)."""
    url = f"{base}/v1/avatars/{avatar_id}/stream"
    params = {"motion": "turntable", "size": 512, "fps": 30, "frames": frames, "pace": "false"}
    n = 0
    t0 = time.perf_counter()
    with httpx.stream("GET", url, params=params, timeout=120) as r:
        r.raise_for_status()
        buf = b""
        for chunk in r.iter_bytes():
            buf += chunk
            while True:
                start = buf.find(b"\xff\xd8")
                end = buf.find(b"\xff\xd9", start + 2) if start >= 0 else -1
                if start < 0 or end < 0:
                    break
                n += 1
                buf = buf[end + 2 :]
    return n, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--photo", type=Path, help="photo of a person (default: a synthetic one)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()

    if args.photo:
        photo_bytes, name = args.photo.read_bytes(), args.photo.name
    else:
        from models.synth.quick import person_photo

        buf = io.BytesIO()
        person_photo(seed=7).save(buf, format="PNG")
        photo_bytes, name = buf.getvalue(), "synthetic.png"

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="avatars-e2e-") as data_dir:
        env = dict(os.environ, AVATARS_DATA_DIR=data_dir)
        env.pop("AVATARS_REDIS_URL", None)
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "avatars"), "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_ready(base, 180)
            t0 = time.perf_counter()
            r = httpx.post(f"{base}/v1/avatars", files={"photos": (name, photo_bytes)}, timeout=60)
            r.raise_for_status()
            created = r.json()
            job_url = f"{base}/v1/jobs/{created['job_id']}"
            deadline = time.monotonic() + args.timeout
            while True:
                job = httpx.get(job_url, timeout=10).json()
                if job["state"] in ("succeeded", "failed"):
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"job not finished after {args.timeout:.0f} s: {job}")
                time.sleep(0.2)
            total = time.perf_counter() - t0
            if job["state"] != "succeeded":
                raise SystemExit(f"job failed: {job.get('error')}")
            n, secs = count_mjpeg_frames(base, created["avatar_id"], args.frames)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    st = job.get("stage_seconds") or {}
    figures = {
        "total_seconds": round(total, 3),
        **{
            f"{k}_seconds": round(float(st.get(k, 0.0)), 3)
            for k in ("detect", "fit", "texture", "inpaint", "bake")
        },
        "stream_frames": n,
        "stream_fps": round(n / secs, 2),
        "photo": name,
    }
    for k, v in figures.items():
        print(f"{k:>16}: {v}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
