"""Sample a photo into the UV atlas through the fitted body (DINAR's RGB texture).

A texel is observed when its surface point is visible from the photo's camera (depth
test against the rasterized body), lies inside the person mask, and faces the camera.
Its weight is the frontality cos(angle between normal and view direction)^k, which is
also what merges several photos.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.fit.camera import Camera, clip_from_camera
from models.raster import get_backend
from models.texture.atlas import TexelMap, texel_attribute, vertex_normals

FRONTALITY_POWER = 2.0
MIN_COS = 0.15  # grazing texels smear the photo; leave them to the fill
DEPTH_EPS = 0.02  # metres: a texel farther than the visible surface by more is occluded


@dataclass
class PartialTexture:
    rgb: np.ndarray  # float32 [T, T, 3] in 0..1, valid where weight > 0
    weight: np.ndarray  # float32 [T, T] frontality weight, 0 = not observed


def _bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sample img [H,W,C] at float pixel coordinates (pixel centres at integer + 0.5)."""
    H, W = img.shape[:2]
    x = np.clip(x - 0.5, 0, W - 1.001)
    y = np.clip(y - 0.5, 0, H - 1.001)
    x0 = x.astype(np.int32)
    y0 = y.astype(np.int32)
    fx = (x - x0)[:, None]
    fy = (y - y0)[:, None]
    im = img.reshape(H, W, -1)
    a = im[y0, x0] * (1 - fx) + im[y0, x0 + 1] * fx
    b = im[y0 + 1, x0] * (1 - fx) + im[y0 + 1, x0 + 1] * fx
    return a * (1 - fy) + b * fy


def unproject_photo(
    photo: np.ndarray,  # uint8 [H, W, 3]
    mask: np.ndarray,  # float32 [H, W] person probability
    verts: np.ndarray,  # float32 [Vs, 3] posed split vertices, world axes
    faces: np.ndarray,  # int32 [F, 3]
    cam: Camera,
    tm: TexelMap,
    power: float = FRONTALITY_POWER,
) -> PartialTexture:
    backend = get_backend("cpu")
    H, W = photo.shape[:2]
    clip = np.concatenate([verts, np.ones((len(verts), 1), np.float32)], 1) @ clip_from_camera(cam).T
    rast = backend.rasterize(clip.astype(np.float32), faces, (H, W))[::-1]  # image rows
    depth_img = np.where(rast[..., 3] > 0, _cam_depth(rast, verts, faces, cam, backend), np.inf)

    T = tm.size
    cov = tm.covered
    pos = texel_attribute(tm, verts, faces)[cov]  # [N,3]
    nrm = texel_attribute(tm, vertex_normals(verts, faces), faces)[cov]
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True) + 1e-12
    uv, z = cam.project(pos)
    cam_center = -cam.R.T @ cam.t
    view = cam_center[None] - pos
    view /= np.linalg.norm(view, axis=1, keepdims=True) + 1e-12
    cos = (nrm * view).sum(1)
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H) & (z > 0)
    xi = np.clip(uv[:, 0].astype(np.int32), 0, W - 1)
    yi = np.clip(uv[:, 1].astype(np.int32), 0, H - 1)
    visible = inside & (z <= depth_img[yi, xi] + DEPTH_EPS) & (cos > MIN_COS)
    m = _bilinear(mask[..., None].astype(np.float32), uv[:, 0], uv[:, 1])[:, 0]
    visible &= m > 0.5
    rgb = np.zeros((T, T, 3), np.float32)
    weight = np.zeros((T, T), np.float32)
    idx = np.flatnonzero(visible)
    cols = _bilinear(photo.astype(np.float32) / 255.0, uv[idx, 0], uv[idx, 1])
    flat_rgb = rgb.reshape(-1, 3)
    flat_w = weight.reshape(-1)
    texel_ids = np.flatnonzero(cov.reshape(-1))[idx]
    flat_rgb[texel_ids] = cols
    flat_w[texel_ids] = np.clip(cos[idx], 0, 1) ** power
    return PartialTexture(rgb=rgb, weight=weight)


def _cam_depth(rast, verts, faces, cam: Camera, backend) -> np.ndarray:
    """Camera-space depth (metres) of the visible surface at each pixel."""
    zc = (verts @ cam.R.T + cam.t)[:, 2:3].astype(np.float32)
    return backend.interpolate(zc, np.ascontiguousarray(rast), faces)[..., 0]


def merge(partials: list[PartialTexture]) -> PartialTexture:
    """Frontality-weighted average of several photos' textures (DINAR's multi-view merge)."""
    w = np.stack([p.weight for p in partials])  # [P,T,T]
    rgb = np.stack([p.rgb for p in partials])
    total = w.sum(0)
    out = (rgb * w[..., None]).sum(0) / np.maximum(total, 1e-8)[..., None]
    return PartialTexture(rgb=out.astype(np.float32), weight=np.minimum(total, 1.0).astype(np.float32))
