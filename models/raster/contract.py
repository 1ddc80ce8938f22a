"""The rasterizer contract every backend (cpu, numpy, cuda) follows.

It is nvdiffrast's contract, so code written against one backend renders the
same picture on another.  Pure documentation plus a ``Protocol``; no imports
beyond numpy typing, so it is free to import anywhere.

Conventions (all backends):

* ``pos_clip`` float32[V, 4] is homogeneous clip space (x, y, z, w), OpenGL
  style: the visible volume is -w <= x, y, z <= w.
* ``tri`` int32[F, 3] indexes ``pos_clip``.
* Image rows go bottom-up: row 0 of every output is clip-space y = -1 (as in
  OpenGL and nvdiffrast).  Flip with ``img[::-1]`` (or ``flip_y=True`` in
  ``render_textured``) before writing a normal top-down image.
* Pixel (x, y) has its centre at NDC ((x + 0.5) / W * 2 - 1, (y + 0.5) / H * 2 - 1).
* ``rast`` float32[H, W, 4] holds (u, v, z/w, triangle_id + 1) per pixel and
  is 0 in all four channels where no triangle covers the pixel.
  (u, v) are perspective-correct barycentrics with the nvdiffrast weighting
  ``point = u * v0 + v * v1 + (1 - u - v) * v2`` where v0, v1, v2 are
  ``tri[id]``'s three vertices in order.  ``interpolate`` uses exactly this.
* Depth test: the smallest z/w wins (OpenGL: near plane z/w = -1, far +1);
  fragments with z/w outside [-1, 1] are discarded (what frustum clipping
  would do).  Ties keep the triangle drawn first (lower index) on the CPU
  backends.
* Triangles with a vertex at w <= 0 (behind the eye) are skipped whole, not
  clipped.  nvdiffrast clips them; for an avatar in front of the camera this
  never matters.
* No face culling by default (both windings are drawn); ``cull_backfaces``
  drops clockwise (in the bottom-up image) triangles, i.e. OpenGL's
  GL_CCW front face + GL_BACK culling.  The cuda backend emulates it by
  filtering triangles.
* A pixel centre exactly on a shared edge is covered by both triangles on the
  CPU backends (no top-left rule); the depth test then picks one.  Only
  ties on exact edges can differ from nvdiffrast.
* Texture coordinates follow nvdiffrast: uv (0, 0) is the outer corner of
  ``tex[0, 0]`` (the first texel in memory), u runs along the width (columns),
  v along the height (rows), texel centres sit at ((i + 0.5) / Wt, (j + 0.5) / Ht),
  bilinear filtering, clamp at the borders (boundary_mode='clamp').
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

Resolution = tuple[int, int]  # (H, W)


class RasterBackend(Protocol):
    """What ``models.raster.get_backend`` returns (a module satisfying this)."""

    name: str

    def rasterize(
        self,
        pos_clip: np.ndarray,  # float32[V, 4]
        tri: np.ndarray,  # int32[F, 3]
        resolution: Resolution,
        cull_backfaces: bool = False,
    ) -> np.ndarray:  # float32[H, W, 4]: (u, v, z/w, tri_id + 1), zeros if empty
        ...

    def interpolate(
        self,
        attr: np.ndarray,  # float32[V, C]
        rast: np.ndarray,  # float32[H, W, 4]
        tri: np.ndarray,  # int32[F, 3]
    ) -> np.ndarray:  # float32[H, W, C], zeros where rast is empty
        ...

    def texture(
        self,
        tex: np.ndarray,  # float32 or uint8 [Ht, Wt, C]
        uv: np.ndarray,  # float32[H, W, 2]
        mask: np.ndarray | None = None,  # bool[H, W]; None = sample everywhere
    ) -> np.ndarray:  # float32[H, W, C] in tex's units, zeros where ~mask
        ...

    def antialias(
        self,
        color: np.ndarray,  # float32 or uint8 [H, W, C]
        rast: np.ndarray,  # float32[H, W, 4]
        pos_clip: np.ndarray,  # float32[V, 4]
        tri: np.ndarray,  # int32[F, 3]
    ) -> np.ndarray:  # same dtype/shape as color; only silhouette pixels change
        ...

    def render_textured(
        self,
        pos_clip: np.ndarray,  # float32[V, 4]
        tri: np.ndarray,  # int32[F, 3]
        uv: np.ndarray,  # float32[V, 2] | float32[F, 3, 2] | float32[T, 2] with uv_idx
        tex: np.ndarray,  # uint8[Ht, Wt, 3]
        resolution: Resolution,
        background: Sequence[int] = (0, 0, 0),
        *,
        uv_idx: np.ndarray | None = None,  # int32[F, 3] into uv (nvdiffrast style)
        antialias: bool = True,
        flip_y: bool = False,
        cull_backfaces: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:  # rgb uint8[H, W, 3], alpha uint8[H, W]
        ...
