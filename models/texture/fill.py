"""Classical fill of unseen texels: left/right mirror, nearest observed surface, pull-push.

This is the fallback when no diffusion model is configured and the baseline the
diffusion inpainting is measured against. It never copies the front onto the back: an
unseen texel takes its mirror twin (same height, other side of the body) when that was
seen, else the colours of the nearest observed surface points in 3D (the sides of the
torso for its back, the hair around the crown for the back of the head).
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy.spatial import cKDTree

NEIGHBOURS = 8


def mirror_fill(rgb: np.ndarray, weight: np.ndarray, texel_pos: np.ndarray,
                covered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Copy colours from the left/right mirror texel where that one was observed."""
    idx = np.flatnonzero(covered.reshape(-1))
    pos = texel_pos.reshape(-1, 3)[idx]
    w = weight.reshape(-1)[idx]
    seen = w > 0
    if not seen.any():
        return rgb, weight
    tree = cKDTree(pos[seen])
    need = ~seen
    mirrored = pos[need] * np.array([-1.0, 1.0, 1.0], np.float32)
    dist, j = tree.query(mirrored, k=1, workers=-1)
    ok = dist < 0.02  # within 2 cm of a seen texel's mirror point
    out_rgb = rgb.reshape(-1, 3).copy()
    out_w = weight.reshape(-1).copy()
    tgt = idx[need][ok]
    src = idx[seen][j[ok]]
    out_rgb[tgt] = out_rgb[src]
    out_w[tgt] = 0.5 * out_w[src]  # mirrored colour is less certain than observed
    return out_rgb.reshape(rgb.shape), out_w.reshape(weight.shape)


def nearest_surface_fill(rgb: np.ndarray, weight: np.ndarray, texel_pos: np.ndarray,
                         covered: np.ndarray) -> np.ndarray:
    """Fill every unfilled covered texel from its nearest filled texels on the 3D surface."""
    idx = np.flatnonzero(covered.reshape(-1))
    pos = texel_pos.reshape(-1, 3)[idx]
    w = weight.reshape(-1)[idx]
    have = w > 0
    out = rgb.reshape(-1, 3).copy()
    if not have.any():
        out[idx] = 0.5
        return out.reshape(rgb.shape)
    src_pos = pos[have]
    # Sub-sample the sources: neighbours at 1-2 cm spacing are enough and the query is faster.
    step = max(1, int(have.sum() // 200_000))
    tree = cKDTree(src_pos[::step])
    src_col = out[idx[have]][::step]
    k = min(NEIGHBOURS, len(src_pos[::step]))
    dist, j = tree.query(pos[~have], k=k, workers=-1)
    if k == 1:
        dist, j = dist[:, None], j[:, None]
    wts = 1.0 / (dist + 1e-3)
    col = (src_col[j] * wts[..., None]).sum(1) / wts.sum(1, keepdims=True)
    out[idx[~have]] = col
    return out.reshape(rgb.shape)


def pull_push(rgb: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Extend colours into invalid texels (the atlas gutters) so bilinear lookups and mip
    levels near chart borders never mix in black."""
    levels = []
    c = rgb * valid[..., None]
    w = valid.astype(np.float32)
    while min(w.shape) > 1:
        levels.append((c, w))
        H, W = w.shape
        H2, W2 = H // 2 * 2, W // 2 * 2
        c = c[:H2, :W2].reshape(H2 // 2, 2, W2 // 2, 2, 3).sum((1, 3))
        w = w[:H2, :W2].reshape(H2 // 2, 2, W2 // 2, 2).sum((1, 3))
    filled = c / np.maximum(w, 1e-8)[..., None]
    for c_l, w_l in reversed(levels):
        H, W = w_l.shape
        up = np.repeat(np.repeat(filled, 2, 0), 2, 1)
        up = np.pad(up, ((0, H - up.shape[0]), (0, W - up.shape[1]), (0, 0)), mode="edge")
        own = c_l / np.maximum(w_l, 1e-8)[..., None]
        a = np.clip(w_l, 0, 1)[..., None]
        filled = own * a + up * (1 - a)
    return filled.astype(np.float32)


def _block_mean(a: np.ndarray, w: np.ndarray, f: int) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean of a [T,T,C] over f x f blocks; returns (mean, summed weight)."""
    T = w.shape[0] // f * f
    a = a[:T, :T]
    w = w[:T, :T]
    ws = w.reshape(T // f, f, T // f, f).sum((1, 3))
    s = (a * w[..., None]).reshape(T // f, f, T // f, f, -1).sum((1, 3))
    return s / np.maximum(ws, 1e-8)[..., None], ws


def classical_fill(rgb: np.ndarray, weight: np.ndarray, texel_pos: np.ndarray,
                   covered: np.ndarray, work_size: int = 256) -> np.ndarray:
    """Mirror, then nearest observed surface, then pull-push into the gutters.

    The 3D searches run on a `work_size` atlas (the filled regions are smooth anyway, and a
    1024 atlas would take tens of seconds); observed texels keep their full resolution.
    """
    f = max(1, covered.shape[0] // work_size)
    seen = (weight > 0).astype(np.float32)
    low_rgb, low_seen = _block_mean(rgb, seen, f)
    low_w, _ = _block_mean(weight[..., None], seen, f)
    low_cov_w = covered.astype(np.float32)
    low_pos, low_cov = _block_mean(texel_pos, low_cov_w, f)
    low_covered = low_cov > 0
    low_weight = np.where(low_seen >= 0.5 * f * f, low_w[..., 0], 0.0).astype(np.float32)
    rgb2, w2 = mirror_fill(low_rgb.astype(np.float32), low_weight, low_pos.astype(np.float32), low_covered)
    low_full = nearest_surface_fill(rgb2, w2, low_pos.astype(np.float32), low_covered)
    low_full = pull_push(low_full, low_covered)
    up = cv2.resize(low_full, (covered.shape[1], covered.shape[0]), interpolation=cv2.INTER_LINEAR)
    full = np.where((weight > 0)[..., None], rgb, up)
    return pull_push(full.astype(np.float32), covered)
