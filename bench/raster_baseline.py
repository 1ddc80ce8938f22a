"""Rasterizer speed: numba CPU backend vs the plain numpy baseline.

A bumpy closed ellipsoid of ~27.4k triangles / ~13.9k vertices (the size of
our body mesh) fills about a third of a 512x512 frame, seen in perspective and
turning between frames.  Prints ms/frame per stage, single-threaded.

    python bench/raster_baseline.py [--frames 50] [--numpy-frames 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from models.raster import cpu, numpy_ref

H = W = 512


def body_mesh(nu: int = 137, nv: int = 100):
    """Bumpy ellipsoid grid: verts float32[V, 3], tri int32[F, 3], uv float32[V, 2].

    Wound counter-clockwise seen from outside (OpenGL front faces), so
    ``cull_backfaces=True`` draws the same picture, faster.
    """
    th = np.linspace(0, np.pi, nv + 1)[:, None]  # pole to pole
    ph = np.linspace(0, 2 * np.pi, nu + 1)[None, :]  # seam duplicated for uv
    r = 1 + 0.06 * np.sin(5 * th) * np.sin(3 * ph) + 0.03 * np.sin(17 * th + 2 * ph)
    x = 0.5 * r * np.sin(th) * np.cos(ph)
    y = 0.78 * r * np.cos(th) * np.ones_like(ph)
    z = 0.35 * r * np.sin(th) * np.sin(ph)
    verts = np.stack([x, y, z], -1).reshape(-1, 3).astype(np.float32)
    uv = np.stack(np.broadcast_arrays(ph / (2 * np.pi), th / np.pi), -1).reshape(-1, 2)
    i = np.arange(nv)[:, None] * (nu + 1) + np.arange(nu)[None, :]
    a, b, c, d = i, i + 1, i + nu + 1, i + nu + 2
    tri = np.concatenate([np.stack([a, b, c], -1), np.stack([b, d, c], -1)]).reshape(-1, 3)
    return verts, tri.astype(np.int32), uv.astype(np.float32)


def clip_space(verts: np.ndarray, angle: float, dist: float = 3.0, fov_deg: float = 36.0):
    """Rotate about y, put the camera at +z looking at the origin, OpenGL projection."""
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], np.float32)
    p = verts @ rot.T
    zc = p[:, 2] - dist  # camera space, looking down -z
    f = 1 / np.tan(np.radians(fov_deg) / 2)
    near, far = 0.1, 10.0
    out = np.empty((len(p), 4), np.float32)
    out[:, 0] = f * p[:, 0]
    out[:, 1] = f * p[:, 1]
    out[:, 2] = (far + near) / (near - far) * zc + 2 * far * near / (near - far)
    out[:, 3] = -zc
    return out


def timed(fn, frames: int) -> float:
    """Median ms per call (robust to other processes sharing the CPU)."""
    ts = []
    for k in range(frames):
        t = time.perf_counter()
        fn(k)
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--numpy-frames", type=int, default=2)
    args = ap.parse_args()

    verts, tri, uv = body_mesh()
    rng = np.random.default_rng(0)
    tex = rng.integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    poses = [clip_space(verts, 0.05 * k) for k in range(16)]
    pos = lambda k: poses[k % len(poses)]

    t0 = time.perf_counter()
    cpu.warmup()
    print(
        f"mesh: {len(verts)} verts, {len(tri)} tris, {H}x{W}; warmup {time.perf_counter() - t0:.2f}s"
    )
    cover = (cpu.rasterize(pos(0), tri, (H, W))[..., 3] > 0).mean()
    print(f"coverage: {cover:.1%} of the frame")

    buf = cpu.Buffers()

    def unfused(be, k, **kw):
        rast = be.rasterize(pos(k), tri, (H, W), **kw)
        uvi = be.interpolate(uv, rast, tri)
        return be.texture(tex, uvi, rast[..., 3] > 0)

    rows = [
        (
            "cpu rasterize",
            timed(lambda k: cpu.rasterize(pos(k), tri, (H, W), buffers=buf), args.frames),
        ),
        (
            "cpu rasterize+interpolate+texture",
            timed(lambda k: unfused(cpu, k, buffers=buf), args.frames),
        ),
        (
            "cpu render_textured (no AA)",
            timed(
                lambda k: cpu.render_textured(
                    pos(k), tri, uv, tex, (H, W), antialias=False, buffers=buf
                ),
                args.frames,
            ),
        ),
        (
            "cpu render_textured (AA, flip_y)",
            timed(
                lambda k: cpu.render_textured(
                    pos(k), tri, uv, tex, (H, W), flip_y=True, buffers=buf
                ),
                args.frames,
            ),
        ),
        (
            "cpu render_textured (AA, cull_backfaces)",
            timed(
                lambda k: cpu.render_textured(
                    pos(k), tri, uv, tex, (H, W), flip_y=True, cull_backfaces=True, buffers=buf
                ),
                args.frames,
            ),
        ),
    ]
    rast = cpu.rasterize(pos(0), tri, (H, W))
    col = cpu.texture(tex, cpu.interpolate(uv, rast, tri), rast[..., 3] > 0)
    rows.append(
        (
            "cpu antialias (unfused, float32)",
            timed(lambda k: cpu.antialias(col, rast, pos(0), tri), args.frames),
        )
    )
    nf = args.numpy_frames
    rows += [
        ("numpy rasterize", timed(lambda k: numpy_ref.rasterize(pos(k), tri, (H, W)), nf)),
        ("numpy rasterize+interpolate+texture", timed(lambda k: unfused(numpy_ref, k), nf)),
        (
            "numpy render_textured (AA)",
            timed(lambda k: numpy_ref.render_textured(pos(k), tri, uv, tex, (H, W)), nf),
        ),
    ]
    for name, ms in rows:
        print(f"{name:42s} {ms:9.2f} ms/frame")
    ms = dict(rows)
    ratio = ms["numpy rasterize+interpolate+texture"] / ms["cpu rasterize+interpolate+texture"]
    fused = ms["numpy render_textured (AA)"] / ms["cpu render_textured (AA, flip_y)"]
    print(f"speed-up cpu vs numpy: {ratio:.0f}x unfused, {fused:.0f}x render_textured")


if __name__ == "__main__":
    main()
