"""Fast CPU rasterizer (numba), nvdiffrast's contract (see ``contract.py``).

Why this shape: the player renders a ~27k-triangle body at 512x512 at 60+ fps
per stream on 2 cores, several streams in threads.  So every kernel is
single-threaded, releases the GIL, and the work is split into cheap passes:

1. ``setup``: per-vertex screen positions, per-triangle edge functions;
2. ``raster``: z-buffer pass writing only depth and triangle id per pixel
   (pixels that later get overdrawn are never shaded);
3. ``resolve`` (rasterize) or ``uv_planes`` + ``shade`` (render_textured):
   one pass over the final pixels; the fused path evaluates per-triangle
   planes of 1/w, u/w, v/w (perspective-correct uv with one division) and
   samples the texture bilinearly;
4. antialias: only pixel pairs at the outline or near the mesh rim are
   examined (see ``_kernels.aa_ops``).

Pass a ``Buffers`` per stream to reuse memory across frames.  Call
``warmup()`` at start-up: numba compiles on first use (seconds) and caches the
machine code in ``models/raster/__pycache__`` (or NUMBA_CACHE_DIR when that
is not writable), so later processes load it in well under a second.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from . import _kernels as K
from .topology import edge_neighbors, uv_layout

name = "cpu"


class Buffers:
    """Scratch and output arrays for one render stream, reused across frames.

    Not thread-safe: give each thread / stream its own.  Outputs returned by
    a call that was given ``buffers`` live in it and are overwritten by the
    next such call.  Without ``buffers`` a per-thread scratch is used for the
    internals and the outputs are fresh arrays.
    """

    def __init__(self) -> None:
        self._mesh: tuple[int, int] | None = None
        self._img: tuple[int, int] | None = None

    def mesh(self, nv: int, nf: int) -> Buffers:
        if self._mesh != (nv, nf):
            self.vs = np.empty((nv, 4), np.float64)  # sx, sy, z/w, 1/w
            self.coef = np.empty((nf, 9), np.float64)  # edge functions
            self.planes = np.empty((nf, 9), np.float64)  # 1/w, u/w, v/w planes
            self.bbox = np.empty((nf, 4), np.int32)
            self.facing = np.empty(nf, np.int8)
            self.rim = np.empty(nf + 1, np.uint8)  # by triangle id
            self.rim_tmp = np.empty(nf + 1, np.uint8)
            self._mesh = (nv, nf)
        return self

    def image(self, h: int, w: int) -> Buffers:
        if self._img != (h, w):
            self.zbuf = np.empty(h * w, np.float32)
            self.ids = np.empty(h * w, np.int32)
            self.rast = np.empty((h, w, 4), np.float32)
            self.rgb = np.empty((h, w, 3), np.uint8)
            self.alpha = np.empty((h, w), np.uint8)
            self.ops_dst = np.empty(2 * h * w, np.int32)  # pages touched lazily
            self.ops_src = np.empty(2 * h * w, np.int32)
            self.ops_wt = np.empty(2 * h * w, np.float32)
            self._img = (h, w)
        return self


_local = threading.local()


def _scratch(buffers: Buffers | None, nv: int, nf: int, h: int, w: int) -> Buffers:
    b = buffers
    if b is None:
        b = getattr(_local, "buffers", None)
        if b is None:
            b = _local.buffers = Buffers()
    return b.mesh(nv, nf).image(h, w)


def _index(idx, n: int, what: str) -> np.ndarray:
    """int32[F, 3] checked against n: the kernels do no bounds checks, and a
    bad index would crash the process instead of raising."""
    idx = np.ascontiguousarray(idx, dtype=np.int32)
    if idx.ndim != 2 or idx.shape[1] != 3:
        raise ValueError(f"{what} must be [F, 3], got {idx.shape}")
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"{what} indexes outside [0, {n})")
    return idx


def _rast(rast) -> np.ndarray:
    rast = np.ascontiguousarray(rast, dtype=np.float32)
    if rast.ndim != 3 or rast.shape[2] != 4:
        raise ValueError(f"rast must be [H, W, 4], got {rast.shape}")
    return rast


_WRONG_MESH = "rast holds triangle ids that are not in tri: wrong mesh?"


def _inputs(pos_clip, tri):
    pos = np.ascontiguousarray(pos_clip, dtype=np.float32)
    if pos.ndim != 2 or pos.shape[1] != 4:
        raise ValueError(f"pos_clip must be [V, 4], got {pos.shape}")
    return pos, _index(tri, len(pos), "tri")


def _zpass(pos, tri, h, w, cull, buffers) -> tuple[Buffers, tuple[int, int, int, int]]:
    """Setup + z-buffer pass; returns the buffers and the drawn region."""
    b = _scratch(buffers, len(pos), len(tri), h, w)
    K.setup(pos, tri, h, w, b.vs, b.coef, b.bbox, b.facing)
    box = K.raster(b.vs, tri, b.coef, b.bbox, b.facing, cull, w, b.zbuf, b.ids)
    return b, box


def rasterize(
    pos_clip, tri, resolution, cull_backfaces: bool = False, buffers: Buffers | None = None
) -> np.ndarray:
    """float32[H, W, 4] = (u, v, z/w, tri_id + 1); zeros where empty."""
    h, w = resolution
    pos, tri = _inputs(pos_clip, tri)
    b, _ = _zpass(pos, tri, h, w, bool(cull_backfaces), buffers)
    rast = b.rast if buffers is not None else np.empty((h, w, 4), np.float32)
    K.resolve(b.vs, tri, b.coef, b.zbuf, b.ids, w, rast)
    return rast


def interpolate(attr, rast, tri) -> np.ndarray:
    """float32[H, W, C]: attributes at each pixel (nvdiffrast weighting)."""
    attr = np.ascontiguousarray(attr, dtype=np.float32)
    rast = _rast(rast)
    tri = _index(tri, len(attr), "tri")
    out = np.empty(rast.shape[:2] + (attr.shape[1],), np.float32)
    if K.interpolate(attr, rast, tri, out):
        raise ValueError(_WRONG_MESH)
    return out


def texture(tex, uv, mask=None) -> np.ndarray:
    """float32[H, W, C]: bilinear, clamp-to-edge; 0 where mask is False."""
    tex = np.asarray(tex)
    if tex.dtype != np.uint8:
        tex = tex.astype(np.float32, copy=False)
    tex = np.ascontiguousarray(tex)
    if tex.ndim != 3:
        raise ValueError(f"tex must be [Ht, Wt, C], got {tex.shape}")
    uv = np.ascontiguousarray(uv, dtype=np.float32)
    use_mask = mask is not None
    m = np.ascontiguousarray(mask, dtype=np.bool_) if use_mask else np.ones((1, 1), np.bool_)
    out = np.empty(uv.shape[:2] + (tex.shape[2],), np.float32)
    K.texture(tex, uv, m, use_mask, out)
    return out


def _aa(ids, zbuf, h, w, box, b: Buffers, nbr, imgs, flip) -> None:
    """Run silhouette AA on each flattened (H*W, C) image in ``imgs`` in place;
    only pixel pairs within ``box`` (x0, x1, y0, y1) + 1 pixel are examined."""
    K.rim(nbr, b.facing, b.rim, b.rim_tmp)
    n = K.aa_ops(ids, zbuf, h, w, box, b.coef, b.facing, nbr, b.rim, b.ops_dst, b.ops_src, b.ops_wt)
    for img in imgs:
        fn = K.apply_ops_u8 if img.dtype == np.uint8 else K.apply_ops_f32
        fn(img, n, b.ops_dst, b.ops_src, b.ops_wt, h, w, flip)


def antialias(color, rast, pos_clip, tri) -> np.ndarray:
    """Silhouette antialiasing: returns a copy of color (uint8 or float32,
    other dtypes become float32) where pixels along silhouette edges are
    blended with their neighbour across the edge by estimated coverage."""
    color = np.asarray(color)
    dtype = np.uint8 if color.dtype == np.uint8 else np.float32
    h, w = color.shape[:2]
    rast = _rast(rast)
    if rast.shape[:2] != (h, w):
        raise ValueError(f"color {color.shape} and rast {rast.shape} differ in size")
    out = np.array(color, dtype=dtype, order="C", copy=True)
    pos, tri = _inputs(pos_clip, tri)
    b = _scratch(None, len(pos), len(tri), h, w)
    bad, box = K.split_rast(rast, len(tri), b.ids, b.zbuf)
    if bad:
        raise ValueError(_WRONG_MESH)
    K.setup(pos, tri, h, w, b.vs, b.coef, b.bbox, b.facing)
    _aa(b.ids, b.zbuf, h, w, box, b, edge_neighbors(tri), [out.reshape(h * w, -1)], False)
    return out


def render_textured(
    pos_clip,
    tri,
    uv,
    tex,
    resolution,
    background: Sequence[int] = (0, 0, 0),
    *,
    uv_idx=None,
    antialias: bool = True,
    flip_y: bool = False,
    cull_backfaces: bool = False,
    buffers: Buffers | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fused raster + uv interpolation + bilinear texture (+ silhouette AA).

    pos_clip float32[V, 4]; tri int32[F, 3]; uv float32[V, 2] (indexed by tri),
    float32[F, 3, 2] (per corner) or float32[T, 2] with uv_idx int32[F, 3];
    tex uint8[Ht, Wt, 3].  Returns rgb uint8[H, W, 3] (background where
    empty) and alpha uint8[H, W] (coverage, fractional on AA'd edges).
    Rows are bottom-up unless ``flip_y`` (then row 0 is the top: ready for
    JPEG / PIL; cv2 wants BGR).
    """
    h, w = resolution
    pos, tri = _inputs(pos_clip, tri)
    uv, uv_idx = uv_layout(uv, tri, uv_idx)
    uv = np.ascontiguousarray(uv)
    uv_idx = _index(uv_idx, len(uv), "uv_idx")
    if len(uv_idx) != len(tri):
        raise ValueError("uv_idx needs one row per triangle")
    tex = np.ascontiguousarray(tex, dtype=np.uint8)
    if tex.ndim != 3 or tex.shape[2] < 3:
        raise ValueError(f"tex must be uint8[Ht, Wt, 3], got {tex.shape}")
    bg = np.asarray(background, dtype=np.uint8).reshape(3)
    b, box = _zpass(pos, tri, h, w, bool(cull_backfaces), buffers)
    if buffers is not None:
        rgb, alpha = b.rgb, b.alpha
    else:
        rgb, alpha = np.empty((h, w, 3), np.uint8), np.empty((h, w), np.uint8)
    K.uv_planes(b.vs, tri, b.coef, b.facing, uv, uv_idx, b.planes)
    K.shade(b.planes, b.ids, w, tex, bg, bool(flip_y), rgb, alpha)
    if antialias:
        imgs = [rgb.reshape(h * w, 3), alpha.reshape(h * w, 1)]
        _aa(b.ids, b.zbuf, h, w, box, b, edge_neighbors(tri), imgs, bool(flip_y))
    return rgb, alpha


def warmup() -> None:
    """Compile (or load from numba's on-disk cache) every kernel signature the
    public functions use, on a two-triangle mesh.  Call at process start."""
    pos = np.array(
        [[-0.5, -0.5, 0, 1], [0.5, -0.5, 0, 1], [0, 0.5, 0, 1], [0.5, 0.5, 0.2, 1]], np.float32
    )
    tri = np.array([[0, 1, 2], [1, 3, 2]], np.int32)
    uv = pos[:, :2] * 0.5 + 0.5
    tex = np.zeros((4, 4, 3), np.uint8)
    rast = rasterize(pos, tri, (8, 8))
    uvi = interpolate(uv, rast, tri)
    texture(tex, uvi, rast[..., 3] > 0)
    col = texture(tex.astype(np.float32), uvi)
    antialias(col, rast, pos, tri)
    antialias(np.zeros((8, 8, 3), np.uint8), rast, pos, tri)
    for flip in (False, True):
        render_textured(pos, tri, uv, tex, (8, 8), flip_y=flip)
