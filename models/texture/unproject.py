"""Sample a photo into the UV atlas through the fitted body (DINAR's RGB texture).

A texel is *sampled* when its surface point is visible from the photo's camera (depth
test against the rasterized body), lies inside the person mask, faces the camera, and
does not project onto a self-occlusion edge. Its weight is the frontality
cos(angle between normal and view direction)^k, which is also what merges several photos.

Self-occlusion (an arm in front of the torso): the body is rasterized from the camera as
a per-limb label map (torso+head, each arm, each leg), its edges are found with Canny,
the silhouette contour is removed, and the photo is not sampled along the remaining
edges: pixels there mix the two surfaces, and a slightly misplaced fitted arm would
paint the arm's colour onto the torso. The inpainting fills those texels.

Small holes left by the sampling (single texels that failed the depth test, the mask
or an edge band, surrounded by sampled ones) are *gap-filled* with the average of their
sampled neighbours. Three masks come out: sampled, gap-filled, unseen (= covered and
neither), as in DINAR's two binary texture masks.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from models.fit.camera import Camera, clip_from_camera
from models.raster import get_backend
from models.texture.atlas import TexelMap, texel_attribute, vertex_normals

FRONTALITY_POWER = 2.0
MIN_COS = 0.15  # grazing texels smear the photo; leave them to the fill
DEPTH_EPS = 0.02  # metres: a texel farther than the visible surface by more is occluded
EDGE_BAND = 0.004  # half-width of the no-sampling band along occlusion edges, x image size
DEPTH_JUMP = 0.04  # metres: limb edges with less depth change across them are seams, not occlusions
GAP_MIN_NEIGHBOURS = 5  # of 8: an unsampled texel with this many sampled neighbours is a gap
GAP_WEIGHT = 0.5  # a gap-filled texel's weight, relative to its neighbours' mean


@dataclass
class PartialTexture:
    rgb: np.ndarray  # float32 [T, T, 3] in 0..1, valid where weight > 0
    weight: np.ndarray  # float32 [T, T] frontality weight, 0 = not observed (sampled or gap-filled)
    sampled: np.ndarray | None = None  # bool [T, T] taken from the photo
    gap_filled: np.ndarray | None = None  # bool [T, T] filled from sampled neighbours

    @property
    def observed(self) -> np.ndarray:
        """Sampled or gap-filled texels (what the inpainting keeps)."""
        return self.weight > 0

    def unseen(self, covered: np.ndarray) -> np.ndarray:
        return covered & ~self.observed


def limb_parts(topology) -> np.ndarray:
    """Limb label per face [F] (0 torso and head, 1-2 arms, 3-4 legs) from the skeleton.

    A limb is the joint subtree that starts at the body's shoulder or hip landmark joint
    (the upper arm, the thigh), so this works for any body with those landmarks. A face
    takes the label of the dominant skinning joint of its first corner.
    """
    parents = np.asarray(topology.parents)
    J = len(parents)
    label = np.zeros(J, np.int32)
    for k, name in enumerate(("left_shoulder", "right_shoulder", "left_hip", "right_hip")):
        kind, idx = topology.landmarks.get(name, ("", -1))
        if kind != "joint":
            continue
        label[idx] = k + 1
    for j in range(J):  # parents come before children
        if label[j] == 0 and parents[j] >= 0:
            label[j] = label[parents[j]]
    sw = np.asarray(topology.skin_weights)
    dom = np.asarray(topology.skin_indices)[np.arange(len(sw)), np.argmax(sw, 1)]
    vpart = label[dom]
    return vpart[np.asarray(topology.source_vertex)[np.asarray(topology.faces)[:, 0]]].astype(np.int32)


def occlusion_edges(rast: np.ndarray, face_part: np.ndarray, band_px: int,
                    depth: np.ndarray | None = None) -> np.ndarray:
    """Pixels [H,W] bool near edges between different limbs, the silhouette excluded.

    rast: the body rasterized from the camera, image rows (triangle id + 1 in channel 3).
    depth: camera depth [H,W] (inf off the body); when given, an edge counts only where the
    depth jumps by DEPTH_JUMP across it (an arm in front of the torso), not where two limbs
    meet on a continuous surface (the shoulder, the hip).
    """
    tri = rast[..., 3].astype(np.int64)
    cov = tri > 0
    part = np.zeros(tri.shape, np.uint8)
    part[cov] = (face_part[tri[cov] - 1] + 1).astype(np.uint8) * 40  # 0 = background
    edges = cv2.Canny(part, 10, 30) > 0
    k3 = np.ones((3, 3), np.uint8)
    contour = cv2.morphologyEx(cov.astype(np.uint8), cv2.MORPH_GRADIENT, k3)
    contour = cv2.dilate(contour, k3, iterations=2) > 0
    edges &= ~contour
    if depth is not None and edges.any():
        d = np.where(cov, depth, np.nan).astype(np.float32)
        hi = cv2.dilate(np.nan_to_num(d, nan=-1e3), k3, iterations=2)
        lo = cv2.erode(np.nan_to_num(d, nan=1e3), k3, iterations=2)
        edges &= (hi - lo) > DEPTH_JUMP
    if band_px > 0 and edges.any():
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band_px + 1, 2 * band_px + 1))
        edges = cv2.dilate(edges.astype(np.uint8), k) > 0
    return edges


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
    face_part: np.ndarray | None = None,  # int [F] limb labels (limb_parts); None: no edge test
    fill_gaps: bool = True,
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
    if face_part is not None:
        band = max(1, round(EDGE_BAND * max(H, W)))
        visible &= ~occlusion_edges(rast, np.asarray(face_part), band, depth_img)[yi, xi]
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
    sampled = weight > 0
    gaps = np.zeros_like(sampled)
    if fill_gaps:
        rgb, weight, gaps = fill_sampling_gaps(rgb, weight, cov)
    return PartialTexture(rgb=rgb, weight=weight, sampled=sampled, gap_filled=gaps)


def fill_sampling_gaps(rgb: np.ndarray, weight: np.ndarray, covered: np.ndarray,
                       min_neighbours: int = GAP_MIN_NEIGHBOURS):
    """Fill covered, unsampled texels that have >= min_neighbours sampled neighbours (of 8)
    with the mean of those neighbours. -> (rgb, weight, gap mask)."""
    s = (weight > 0).astype(np.float32)
    k = np.ones((3, 3), np.float32)
    k[1, 1] = 0
    n = cv2.filter2D(s, -1, k, borderType=cv2.BORDER_CONSTANT)
    gaps = covered & (s == 0) & (n >= min_neighbours - 0.5)
    if not gaps.any():
        return rgb, weight, gaps
    csum = cv2.filter2D(rgb * s[..., None], -1, k, borderType=cv2.BORDER_CONSTANT)
    wsum = cv2.filter2D(weight, -1, k, borderType=cv2.BORDER_CONSTANT)
    rgb = rgb.copy()
    weight = weight.copy()
    nn = np.maximum(n[gaps], 1.0)
    rgb[gaps] = csum[gaps] / nn[:, None]
    weight[gaps] = GAP_WEIGHT * wsum[gaps] / nn
    return rgb, weight, gaps


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
    sampled = [p.sampled if p.sampled is not None else p.weight > 0 for p in partials]
    any_sampled = np.logical_or.reduce(sampled)
    observed = total > 0
    return PartialTexture(rgb=out.astype(np.float32), weight=np.minimum(total, 1.0).astype(np.float32),
                          sampled=any_sampled, gap_filled=observed & ~any_sampled)
