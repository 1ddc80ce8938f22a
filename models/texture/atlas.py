"""Per-texel geometry of the UV atlas: which triangle and which 3D point each texel is."""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from models.raster import get_backend


@dataclass
class TexelMap:
    """The atlas rasterized once per topology (cheap to keep; reused for every photo)."""

    rast: np.ndarray  # float32 [T, T, 4] nvdiffrast-style raster of the UV layout (row 0 = v 0)
    covered: np.ndarray  # bool [T, T] texels that belong to some triangle
    size: int


def uv_clip(uvs: np.ndarray) -> np.ndarray:
    """UVs -> clip positions so raster row r is texel row r (no flip needed)."""
    n = uvs.shape[0]
    out = np.empty((n, 4), np.float32)
    out[:, 0] = uvs[:, 0] * 2 - 1
    out[:, 1] = uvs[:, 1] * 2 - 1
    out[:, 2] = 0.0
    out[:, 3] = 1.0
    return out


_lock = threading.Lock()
_maps: OrderedDict[tuple[int, int, int], tuple[np.ndarray, np.ndarray, TexelMap]] = OrderedDict()
MAX_CACHED_MAPS = 8


def texel_map(uvs: np.ndarray, faces: np.ndarray, size: int) -> TexelMap:
    """The atlas of the layout (uvs, faces) rasterized at size x size. Cached per process for
    the same arrays (a body's topology): texture, inpainting and seam blending share one
    raster. Its arrays are read-only."""
    key = (id(uvs), id(faces), int(size))
    with _lock:
        hit = _maps.get(key)
        if hit is not None and hit[0] is uvs and hit[1] is faces:
            _maps.move_to_end(key)
            return hit[2]
    rast = get_backend("cpu").rasterize(uv_clip(uvs), faces, (size, size))
    covered = rast[..., 3] > 0
    rast.setflags(write=False)
    covered.setflags(write=False)
    tm = TexelMap(rast=rast, covered=covered, size=size)
    with _lock:
        _maps[key] = (uvs, faces, tm)  # the arrays are kept: their ids stay theirs
        while len(_maps) > MAX_CACHED_MAPS:
            _maps.popitem(last=False)
    return tm


def texel_attribute(tm: TexelMap, attr: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Interpolate a per-vertex attribute [Vs, C] at every texel -> [T, T, C]."""
    return get_backend("cpu").interpolate(attr.astype(np.float32), tm.rast, faces)


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals [V,3] for counter-clockwise faces."""
    tri = verts[faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n = np.zeros_like(verts)
    for k in range(3):
        np.add.at(n, faces[:, k], fn)
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
    return n.astype(np.float32)
