"""The low-resolution atlas the diffusion model works on, and its fixed conditioning maps.

The model sees the texture at ``size`` x ``size`` (default 64): every low texel is the mean
of the f x f block of the full atlas (f = full / size) over its covered texels. A low
texel counts as observed when at least half of its covered texels were observed. Training
pairs and the pipeline go through the same functions, so the model sees at run time what
it saw in training.

Fixed maps (same for every person, from the body's template): which low texels are on
the body (``covered``), and the template 3D position of each (normalized to -1..1), which
tells the network which body part a texel belongs to wherever it sits in the atlas.
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass

import numpy as np

OBSERVED_FRACTION = 0.5


def block_mean(a: np.ndarray, w: np.ndarray, f: int) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean of a [T,T,C] over f x f blocks -> (mean [T/f,T/f,C], summed weight)."""
    T = w.shape[0] // f * f
    w = w[:T, :T].astype(np.float32)
    ws = w.reshape(T // f, f, T // f, f).sum((1, 3))
    s = (a[:T, :T] * w[..., None]).reshape(T // f, f, T // f, f, -1).sum((1, 3))
    return (s / np.maximum(ws, 1e-8)[..., None]).astype(np.float32), ws


def downsample_partial(rgb: np.ndarray, observed: np.ndarray, covered: np.ndarray,
                       size: int) -> tuple[np.ndarray, np.ndarray]:
    """Full-resolution partial texture -> (rgb [S,S,3] zero where unobserved, observed [S,S] bool)."""
    f = covered.shape[0] // size
    if f * size != covered.shape[0]:
        raise ValueError(f"atlas size {covered.shape[0]} is not a multiple of {size}")
    obs = observed & covered
    low, n_obs = block_mean(rgb, obs, f)
    _, n_cov = block_mean(rgb[..., :1], covered, f)
    low_obs = (n_cov > 0) & (n_obs >= OBSERVED_FRACTION * np.maximum(n_cov, 1e-8))
    return np.where(low_obs[..., None], low, 0.0).astype(np.float32), low_obs


def downsample_texture(tex: np.ndarray, covered: np.ndarray, size: int) -> np.ndarray:
    """A full texture (uint8 or float, [T,T,3]) -> float32 [S,S,3] in 0..1, mean over covered texels."""
    t = tex.astype(np.float32)
    if tex.dtype == np.uint8:
        t /= 255.0
    f = covered.shape[0] // size
    return block_mean(t, covered, f)[0]


@dataclass(frozen=True)
class AtlasMaps:
    size: int
    covered: np.ndarray  # bool [S,S]
    position: np.ndarray  # float32 [S,S,3] template position, -1..1 (0 off the body)
    fingerprint: str  # of the UV layout (uvs + faces): a model is tied to one layout


_lock = threading.Lock()
_cache: dict[tuple[int, int], AtlasMaps] = {}


def uv_fingerprint(topology) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(topology.uvs, np.float32).round(5).tobytes())
    h.update(np.ascontiguousarray(topology.faces, np.int32).tobytes())
    return h.hexdigest()[:16]


def atlas_maps(body, size: int, full: int = 1024) -> AtlasMaps:
    """The fixed conditioning maps of `body`'s UV layout at `size` (cached per body)."""
    key = (id(body), size)
    with _lock:
        hit = _cache.get(key)
    if hit is not None:
        return hit
    from models.texture.atlas import texel_attribute, texel_map

    top = body.topology
    tm = texel_map(top.uvs, top.faces, full)
    rest = np.asarray(body.template_vertices.numpy(), np.float32)[top.source_vertex]
    pos_full = texel_attribute(tm, rest, top.faces)
    f = full // size
    pos, n_cov = block_mean(pos_full, tm.covered, f)
    covered = n_cov > 0
    lo = rest.min(0)
    hi = rest.max(0)
    centre, half = (lo + hi) / 2, (hi - lo).max() / 2
    position = np.where(covered[..., None], (pos - centre) / half, 0.0).astype(np.float32)
    maps = AtlasMaps(size=size, covered=covered, position=position, fingerprint=uv_fingerprint(top))
    with _lock:
        _cache[key] = maps
    return maps
