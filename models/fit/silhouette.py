"""Silhouette targets from a person mask, and the differentiable terms the fit uses.

Two terms, both in units of the person's height in pixels:

- *outside*: each projected body vertex samples (``grid_sample``, bilinear) the distance
  transform of the background, i.e. how far it lies outside the mask (0 inside). Every
  surface point of the body projects inside its own silhouette, so every vertex should
  land inside the person mask.
- *fill*: samples along the mask's edge (outer outline and the holes between limbs and
  torso) are matched to their nearest projected vertex (a one-sided chamfer, measured
  along the edge's normal), so the body reaches the mask's edges instead of shrinking
  inside it.

Both go through a Geman-McClure kernel so that parts of the mask the body cannot explain
(loose clothes, hair, a bag, a wrong soft-mask blob) pull with bounded force. Soft masks
(MediaPipe's probabilities) and exact ones (synthetic, uploaded) are both thresholded at
0.5; contour points on the image border are dropped (a cut-off person has no edge there).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

MASK_THRESHOLD = 0.5
CONTOUR_SAMPLES = 480
EDGE_OFFSET_PX = 0.4  # mean distance from a boundary pixel's centre to the edge it samples
MIN_COMPONENT_FRACTION = 0.02  # mask blobs smaller than this share of the largest are noise


@dataclass
class SilhouetteTarget:
    """What the silhouette terms compare against, for one photo."""

    outside: torch.Tensor  # float32 [1, 1, H, W]: distance to the mask / person height, 0 inside
    contour: torch.Tensor  # float32 [M, 2]: pixel coordinates (x, y) of samples on the mask's edge
    normals: torch.Tensor  # float32 [M, 2]: their outward unit normals
    height_px: float
    width: int
    height: int


def clean_mask(mask: np.ndarray, threshold: float = MASK_THRESHOLD) -> np.ndarray:
    """Binary mask without specks: components smaller than a fraction of the largest go."""
    import cv2

    m = (np.asarray(mask, np.float32) > threshold).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    if n <= 2:
        return m.astype(bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(areas >= MIN_COMPONENT_FRACTION * areas.max()) + 1
    return np.isin(labels, keep)


def silhouette_target(mask: np.ndarray, height_px: float | None = None,
                      samples: int = CONTOUR_SAMPLES) -> SilhouetteTarget | None:
    """Distance field and contour samples of a person mask [H, W] (probabilities or bool)."""
    import cv2

    m = clean_mask(mask)
    if not m.any():
        return None
    H, W = m.shape
    if height_px is None:
        rows = np.flatnonzero(m.any(1))
        height_px = float(rows[-1] - rows[0] + 1)
    h = max(float(height_px), 1.0)
    m8 = m.astype(np.uint8)
    # Distance of every background pixel centre to the nearest person pixel centre; the
    # mask's edge lies half a pixel before that centre.
    dist = cv2.distanceTransform(1 - m8, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    dist = np.maximum(dist - 0.5, 0.0) / h
    contours, _ = cv2.findContours(m8, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    pts = np.concatenate([c.reshape(-1, 2) for c in contours], 0).astype(np.float32) if contours else \
        np.zeros((0, 2), np.float32)
    on_border = (pts[:, 0] <= 0) | (pts[:, 1] <= 0) | (pts[:, 0] >= W - 1) | (pts[:, 1] >= H - 1)
    pts = pts[~on_border]
    if len(pts) > samples:  # contour pixels are about evenly spaced: a regular subsample
        pts = pts[np.linspace(0, len(pts) - 1, samples).round().astype(np.int64)]
    # Outward normals from the smoothed mask's gradient; the edge lies about half a pixel
    # out from the boundary pixel's centre.
    sm = cv2.GaussianBlur(m.astype(np.float32), (0, 0), 1.5)
    xi, yi = pts[:, 0].astype(np.int64), pts[:, 1].astype(np.int64)
    gx = cv2.Sobel(sm, cv2.CV_32F, 1, 0, ksize=3)[yi, xi]
    gy = cv2.Sobel(sm, cv2.CV_32F, 0, 1, ksize=3)[yi, xi]
    n = -np.stack([gx, gy], 1)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-6)
    edge = pts + 0.5 + EDGE_OFFSET_PX * n
    return SilhouetteTarget(
        outside=torch.from_numpy(np.ascontiguousarray(dist, np.float32))[None, None],
        contour=torch.from_numpy(np.ascontiguousarray(edge, np.float32)),
        normals=torch.from_numpy(np.ascontiguousarray(n, np.float32)),
        height_px=h, width=W, height=H,
    )


def outside_distance(target: SilhouetteTarget, uv: torch.Tensor) -> torch.Tensor:
    """[N, 2] projected pixels -> [N] distance outside the mask (person heights), 0 inside.

    Points beyond the image take the border's value: a person cut off by the frame is not
    pulled back into it.
    """
    g = torch.stack([uv[:, 0] * (2.0 / target.width) - 1.0, uv[:, 1] * (2.0 / target.height) - 1.0], -1)
    out = F.grid_sample(target.outside, g[None, None], mode="bilinear", padding_mode="border",
                        align_corners=False)
    return out[0, 0, 0]


def edge_matches(target: SilhouetteTarget, uv: torch.Tensor, band_px: float) -> torch.Tensor:
    """[M] index of the projected vertex each edge sample is compared with (no gradient).

    Among the vertices within `band_px` of the sample's normal line (about one vertex
    spacing), the one nearest the edge along the normal: the body's own outline there.
    (The plain nearest vertex is often a front-facing one just inside the outline, which
    would keep pulling the body outwards even when it fits.)
    """
    with torch.no_grad():
        rel = uv[None] - target.contour[:, None]  # [M, N, 2]
        n = target.normals[:, None]
        along = (rel * n).sum(-1)
        across = (rel[..., 0] * n[..., 1] - rel[..., 1] * n[..., 0]).abs()
        score = along.abs() + 1e6 * (across > band_px)
        near = rel.square().sum(-1)  # fallback where no vertex is in the band
        none = (across > band_px).all(1)
        idx = score.argmin(1)
        if none.any():
            idx[none] = near[none].argmin(1)
    return idx


def fill_distance(target: SilhouetteTarget, uv: torch.Tensor, matches: torch.Tensor) -> torch.Tensor:
    """[N, 2] projected pixels -> [M] signed distance (person heights) of each edge
    sample's matched vertex along the edge's outward normal: negative when the body stops
    short of the edge, positive when it reaches beyond.

    Point-to-line, not point-to-point: vertices are a few pixels apart, so an edge sample
    between two of them would otherwise pull them outwards even when the body fits.
    """
    if target.contour.shape[0] == 0:
        return uv.new_zeros(0)
    return ((uv[matches] - target.contour) * target.normals).sum(-1) / target.height_px


def gmof(r2: torch.Tensor, sigma2: float) -> torch.Tensor:
    """Geman-McClure on squared residuals: quadratic near 0, bounded by 1."""
    return r2 / (r2 + sigma2)
