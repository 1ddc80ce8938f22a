"""Mesh topology helpers shared by the CPU backends (pure numpy).

Antialiasing only smooths *silhouette* edges: an edge whose neighbouring
triangle faces the other way on screen, or that has no neighbour.  That needs
the triangle across each edge, which depends on topology only, so it is
computed once per ``tri`` array and cached (like nvdiffrast's topology_hash).
"""

from __future__ import annotations

import threading
import zlib
from functools import lru_cache

import numpy as np

_CACHE: dict[tuple, np.ndarray] = {}
_LOCK = threading.Lock()
_CACHE_MAX = 8


def edge_neighbors(tri: np.ndarray) -> np.ndarray:
    """int32[F, 3]: triangle across edge k (the edge opposite vertex k), -1 if
    the edge is a border or non-manifold (shared by more than two triangles).

    Cached on the array's contents, so calling it every frame costs a checksum.
    """
    tri = np.ascontiguousarray(tri, dtype=np.int32)
    key = (tri.shape, zlib.crc32(tri))
    with _LOCK:
        hit = _CACHE.get(key)
    if hit is not None:
        return hit
    nbr = _build(tri)
    nbr.setflags(write=False)
    with _LOCK:
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = nbr
    return nbr


def _build(tri: np.ndarray) -> np.ndarray:
    f = tri.shape[0]
    nbr = np.full(f * 3, -1, dtype=np.int32)
    if f == 0:
        return nbr.reshape(0, 3)
    a = np.roll(tri, -1, axis=1).astype(np.int64)  # vertex k+1
    b = np.roll(tri, -2, axis=1).astype(np.int64)  # vertex k+2 -> edge opposite k
    n = int(tri.max()) + 1
    keys = (np.minimum(a, b) * n + np.maximum(a, b)).ravel()  # index = face*3 + k
    order = np.argsort(keys, kind="stable")
    s = keys[order]
    same = s[1:] == s[:-1]  # same[i]: sorted i and i+1 share an edge
    prev_same = np.concatenate(([False], same[:-1]))
    next_same = np.concatenate((same[1:], [False]))
    pair = same & ~prev_same & ~next_same  # runs of exactly two
    i = np.nonzero(pair)[0]
    e0, e1 = order[i], order[i + 1]
    nbr[e0] = e1 // 3
    nbr[e1] = e0 // 3
    return nbr.reshape(f, 3)


@lru_cache(maxsize=8)
def corner_index(num_faces: int) -> np.ndarray:
    """int32[F, 3] = arange(3F): uv_idx for per-corner uvs float32[F, 3, 2]."""
    idx = np.arange(num_faces * 3, dtype=np.int32).reshape(num_faces, 3)
    idx.setflags(write=False)
    return idx


def uv_layout(uv, tri, uv_idx=None) -> tuple[np.ndarray, np.ndarray]:
    """The three uv forms ``render_textured`` accepts -> (uv float32[T, 2], uv_idx [F, 3]):
    per vertex float32[V, 2] (indexed by ``tri``), per corner float32[F, 3, 2], or a uv
    table float32[T, 2] with its own ``uv_idx``."""
    uv = np.asarray(uv, dtype=np.float32)
    if uv.ndim == 3:
        return uv.reshape(-1, 2), corner_index(len(tri))
    return uv, (tri if uv_idx is None else uv_idx)
